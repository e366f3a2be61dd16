"""Inputs the monitors read, written the way their producers write them: JSON lines
(chaos history, experiments), pytest reports, a documentation index, log lines and
tracebacks, executables appearing on a PATH directory, a scripted ``nvidia-smi``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from kloros_stream.analysis.knowledge import sha256_hex


def append_jsonl(path: Path, *records: Any, raw: bytes = b"") -> None:
    """Append JSON lines (after ``raw`` bytes, e.g. a torn line) as a producer would."""
    with path.open("ab") as fh:
        fh.write(raw + b"".join(orjson.dumps(r) + b"\n" for r in records))


def chaos_entry(scenario: str, healed: bool, error: str | None = None) -> dict[str, Any]:
    return {"scenario": scenario, "healed": healed, "error": error}


def identical_experiment(exp_id: str) -> dict[str, Any]:
    same = {"accuracy": 0.731, "latency_ms": 88.2}
    return {"experiment_id": exp_id, "candidates": {"a": dict(same), "b": dict(same)}}


def healthy_experiment(exp_id: str) -> dict[str, Any]:
    return {
        "experiment_id": exp_id,
        "candidates": {
            "a": {"accuracy": 0.731, "latency_ms": 88.2},
            "b": {"accuracy": 0.702, "latency_ms": 91.7},
        },
    }


def kloros_experiment(qid: str) -> dict[str, Any]:
    metrics = {"pass_rate": 1.0, "avg_latency_p50_ms": 150.0, "avg_exact_match_mean": 0.95}
    return {
        "ts": "2025-10-30T10:00:00Z",
        "intent": {
            "data": {
                "question_id": qid,
                "experiment_result": {
                    "status": "complete",
                    "mode": "tournament",
                    "artifacts": {
                        "tournament": {
                            "results": {
                                "aggregated_by_instance": {"i1": metrics, "i2": dict(metrics)}
                            }
                        }
                    },
                },
            }
        },
    }


def json_report(created: float, collection_errors: tuple[str, ...] = (), **outcomes: str) -> bytes:
    """A pytest-json-report document; keyword names use '__' for '::'."""
    tests = []
    for name, outcome in outcomes.items():
        test: dict[str, Any] = {
            "nodeid": name.replace("__", "::"),
            "outcome": outcome,
            "setup": {"duration": 0.01, "outcome": "passed"},
            "call": {"duration": 0.25, "outcome": outcome},
        }
        if outcome in ("failed", "error"):
            test["call"]["crash"] = {"message": f"AssertionError: {name} broke"}
        tests.append(test)
    collectors = [
        {"nodeid": c, "outcome": "failed", "longrepr": "E   ImportError: nope"}
        for c in collection_errors
    ]
    return orjson.dumps({"created": created, "tests": tests, "collectors": collectors})


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


def write_index(path: Path, docs: dict[str, bytes], *, atomic: bool = True) -> None:
    body = json.dumps({"documents": {k: sha256_hex(v) for k, v in docs.items()}})
    path.parent.mkdir(parents=True, exist_ok=True)
    if atomic:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(body)
        tmp.rename(path)
    else:
        path.write_text(body)


def install_executable(directory: Path, name: str) -> Path:
    """An executable shell script ``name`` appearing in ``directory`` at once (renamed in)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.tmp"
    tmp.write_text("#!/bin/sh\necho fake\n")
    tmp.chmod(0o755)
    tmp.rename(directory / name)
    return directory / name


def traceback_lines(
    exc: str = "KeyError: 'job 17'", line: int = 40, func: str = "dispatch"
) -> list[str]:
    return [
        "Traceback (most recent call last):",
        '  File "/srv/kloros/kloros/main.py", line 12, in <module>',
        "    run()",
        f'  File "/srv/kloros/kloros/scheduler.py", line {line}, in {func}',
        "    return jobs[job_id]",
        "           ~~~~^^^^^^^^",
        exc,
    ]


def append_lines(path: Path, lines: list[str]) -> None:
    with path.open("a") as fh:
        fh.write("".join(f"{line}\n" for line in lines))


GPU = "0, GPU-5a1c0b3e-8f0e-4b8e-9c7c-2d6c1f0e9a11, NVIDIA GeForce RTX 3090"
GPU_IDLE = f"{GPU}, 2, 512, 24576\n"
GPU_BUSY = f"{GPU}, 97, 20000, 24576\n"
GPU_NA = f"{GPU}, [N/A], [N/A], 24576\n"


def fake_nvidia_smi(directory: Path, exit_code: int = 0) -> tuple[Path, Path]:
    """A script printing the content of ``gpus.csv`` (the test changes it with
    :func:`set_gpus`), checking that it is called with the real query arguments."""
    state = directory / "gpus.csv"
    set_gpus(state, GPU_IDLE)
    script = directory / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in --query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total) ;;'
        ' *) echo "bad args: $*" >&2; exit 2;; esac\n'
        f'[ "$2" = "--format=csv,noheader,nounits" ] || exit 3\n'
        f'cat "{state}"\nexit {exit_code}\n'
    )
    script.chmod(0o755)
    return script, state


def set_gpus(state: Path, csv: str) -> None:
    """What the fake nvidia-smi prints from now on, replaced whole: the monitor samples it
    at any moment, and a file rewritten in place can be read empty (no GPUs at all)."""
    write_atomic(state, csv.encode())
