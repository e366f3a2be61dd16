"""The ``questions`` and ``scan`` commands through real ``kloros-stream`` subprocesses on a
prepared feed and config."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from kloros_stream.config import ENV_VAR, load_config
from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.feed import QuestionFeed, read_feed
from kloros_stream.models import CAPABILITY_GAP_RESOLVED, CuriosityQuestion, Signal
from kloros_stream.service import scan
from kloros_stream.store import FeedStore
from tests.support.scripted import Script, gap, resolution
from tests.support.service import write_config

T0 = 1_700_000_000.0
GAPS = [  # (gap_type, gap_name): priorities 9.0, 3.33, 2.83, 2.5 (value / cost)
    ("syntax_error", "pkg/broken.py"),
    ("orphaned_queue", "voice.Pipeline.pending"),
    ("test_failure", "tests/test_voice.py::test_load"),
    ("new_module", "kloros.skills.weather"),
]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kloros_stream", *args], capture_output=True, text=True,
        timeout=120, cwd=cwd, env={**os.environ, **(env or {})},
    )


def _signal(gap_type: str, name: str, *, resolved: bool = False, at: float = T0,
            **facts: Any) -> Signal:
    return Signal(signal=CAPABILITY_GAP_RESOLVED if resolved else "CAPABILITY_GAP",
                  ecosystem="testing", monitor="test", observed_at=at,
                  facts={"gap_type": gap_type, "gap_name": name, "gap_category": "c",
                         "gap_reason": f"{name} needs attention", **facts})


@pytest.fixture
def prepared(tmp_path: Path) -> tuple[Path, list[CuriosityQuestion]]:
    """A config and a feed: four questions, one superseded line, one resolved, a torn tail.
    Returns the config path and the open questions, highest priority first."""
    cfg_path = write_config(tmp_path)
    cfg = load_config(cfg_path)
    core = CuriosityCore()
    feed = QuestionFeed(cfg.feed.path, compact_bytes=1 << 26)
    feed.open()
    for gap_type, name in GAPS:
        q = core.handle(_signal(gap_type, name), T0)
        assert q is not None
        feed.append(q)
    for s in (_signal("test_failure", GAPS[2][1], at=T0 + 1, error="new error"),
              _signal("new_module", GAPS[3][1], resolved=True, at=T0 + 2)):
        q = core.handle(s, s.observed_at)
        assert q is not None
        feed.append(q)
    feed.close()
    with cfg.feed.path.open("ab") as fh:
        fh.write(b'{"id": "torn')
    return cfg_path, core.open_questions()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_questions_table(prepared: tuple[Path, list[CuriosityQuestion]]) -> None:
    cfg, open_qs = prepared
    before = (cfg.parent / "var" / "feed.jsonl").read_bytes()
    proc = cli("questions", "--config", str(cfg), cwd=cfg.parent)
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["PRIORITY", "STATUS", "SEEN", "GAP", "TYPE", "QUESTION"]
    assert len(rows) == 3
    for row, q in zip(rows, open_qs, strict=True):
        assert f"{q.priority:.2f}" in row
        assert q.metadata["gap_type"] in row
        assert q.question[:40] in row
    assert "new_module" not in proc.stdout  # resolved
    assert (cfg.parent / "var" / "feed.jsonl").read_bytes() == before  # read-only


def test_questions_json_top_and_all(prepared: tuple[Path, list[CuriosityQuestion]]) -> None:
    cfg, open_qs = prepared
    proc = cli("questions", "--config", str(cfg), "--json", cwd=cfg.parent)
    assert proc.returncode == 0
    got = [CuriosityQuestion.model_validate(d) for d in json_lines(proc.stdout)]
    assert got == open_qs
    assert [q.metadata["gap_name"] for q in got] == [name for _, name in GAPS[:3]]
    assert any("new error" in e for e in got[2].evidence)  # the superseding line won

    top = json_lines(cli("questions", "--config", str(cfg), "--json", "--top", "2",
                         cwd=cfg.parent).stdout)
    assert [d["id"] for d in top] == [q.id for q in open_qs[:2]]

    everything = json_lines(cli("questions", "--config", str(cfg), "--json", "--all",
                                cwd=cfg.parent).stdout)
    assert len(everything) == 4
    assert [d["status"] for d in everything].count("resolved") == 1
    priorities = [d["priority"] for d in everything]
    assert priorities == sorted(priorities, reverse=True)

    table = cli("questions", "--config", str(cfg), "--all", "--top", "10", cwd=cfg.parent)
    assert "resolved" in table.stdout and len(table.stdout.splitlines()) == 5


def test_questions_uses_the_environment_config(
    prepared: tuple[Path, list[CuriosityQuestion]], tmp_path: Path
) -> None:
    cfg, open_qs = prepared
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = cli("questions", "--json", "--top", "1", cwd=elsewhere, env={ENV_VAR: str(cfg)})
    assert [d["id"] for d in json_lines(proc.stdout)] == [open_qs[0].id]


def test_questions_on_an_empty_feed(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    proc = cli("questions", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 0
    assert "no open questions" in proc.stdout
    assert cli("questions", "--config", str(cfg), "--json", cwd=tmp_path).stdout == ""


def test_questions_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[feed]\npath = 3\n")
    proc = cli("questions", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    assert "feed.path" in proc.stderr


def test_scan_json_prints_gaps_and_writes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("kloros_stream.monitors.chaos")
    history = tmp_path / "var" / "chaos_history.jsonl"
    history.parent.mkdir(parents=True)
    history.write_text(
        json.dumps({"scenario": "gpu_oom", "healed": False, "error": "OOM"}) + "\n"
        + json.dumps({"scenario": "gpu_oom", "healed": False, "error": "OOM"}) + "\n"
        + json.dumps({"scenario": "disk_full", "healed": False}) + "\n"
        + json.dumps({"scenario": "fine", "healed": True}) + "\n"
        + "not json\n"
    )
    cfg = write_config(tmp_path, {"monitors": {"chaos": {
        "history_file": "var/chaos_history.jsonl"}}})
    proc = cli("scan", "--config", str(cfg), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    gaps = json_lines(proc.stdout)
    assert sorted(g["facts"]["gap_name"] for g in gaps) == ["disk_full", "gpu_oom"]
    for g in gaps:
        assert g["signal"] == "CAPABILITY_GAP"
        assert g["facts"]["gap_type"] == "healing_failure"
        for key in ("signal", "ecosystem", "intensity", "facts", "incident_id", "trace",
                    "ts", "schema_version", "channel"):
            assert key in g, key
    assert not (tmp_path / "var" / "feed.jsonl").exists()
    assert not (tmp_path / "var" / "state").exists()

    table = cli("scan", "--config", str(cfg), cwd=tmp_path)
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["MONITOR", "GAP", "TYPE", "GAP", "NAME", "REASON"]
    assert len(rows) == 2
    assert "gpu_oom" in table.stdout and "healing_failure" in table.stdout


def test_scan_with_nothing_enabled(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    proc = cli("scan", "--config", str(cfg), "--json", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == ""
    assert cli("scan", "--config", str(cfg), cwd=tmp_path).stdout.strip() == "no gaps found"


async def test_scan_runs_each_initial_scan_once(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, {"monitors": {"test": {}, "chaos": {},
                                                            "exploration": {}}}))
    scripts = {
        "test": Script(gaps=[gap("test_failure", "t::a"), resolution("test_failure", "t::b")]),
        "chaos": Script(crash_forever=True),
        "exploration": Script(unavailable="nvidia-smi not found"),
        "integration": Script(gaps=[gap("syntax_error", "disabled.py")]),
    }
    signals, problems = await scan(cfg, {n: s.factory() for n, s in scripts.items()})
    assert [(s.gap_name, s.resolved) for s in signals] == [("t::a", False), ("t::b", True)]
    assert problems["exploration"] == "unavailable: nvidia-smi not found"
    assert problems["chaos"].startswith("failed: RuntimeError")
    assert scripts["test"].runs == 1 and scripts["chaos"].runs == 1  # no restarts
    assert scripts["integration"].runs == 0  # disabled
    assert not cfg.feed.path.exists()


@pytest.mark.parametrize("top", ["0", "-1", "two"])
def test_questions_rejects_a_top_that_is_not_positive(
    prepared: tuple[Path, list[CuriosityQuestion]], top: str
) -> None:
    cfg, _ = prepared
    proc = cli("questions", "--config", str(cfg), "--top", top, cwd=cfg.parent)
    assert proc.returncode == 2
    assert "--top" in proc.stderr and proc.stdout == ""


def test_questions_json_array_is_one_json_document(
    prepared: tuple[Path, list[CuriosityQuestion]]
) -> None:
    cfg, open_qs = prepared
    proc = cli("questions", "--config", str(cfg), "--json-array", cwd=cfg.parent)
    assert proc.returncode == 0
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=proc.stdout,
                          capture_output=True, text=True, timeout=30)
    assert tool.returncode == 0, tool.stderr
    assert [d["id"] for d in json.loads(proc.stdout)] == [q.id for q in open_qs]


def test_piped_questions_are_never_cut(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path)
    cfg = load_config(cfg_path)
    long_name = "pkg/" + "very_long_directory_name/" * 12 + "broken.py"
    feed = QuestionFeed(cfg.feed.path, compact_bytes=1 << 26)
    feed.open()
    q = CuriosityCore().handle(_signal("syntax_error", long_name), T0)
    assert q is not None and len(q.question) > 200
    feed.append(q)
    feed.close()
    proc = cli("questions", "--config", str(cfg_path), cwd=tmp_path)
    assert q.question in proc.stdout
    assert "…" not in proc.stdout


def test_questions_explain_tells_the_whole_story(
    prepared: tuple[Path, list[CuriosityQuestion]]
) -> None:
    cfg, open_qs = prepared
    test_q = next(q for q in open_qs if q.metadata["gap_type"] == "test_failure")
    proc = cli("questions", "--config", str(cfg), "--explain", test_q.id, cwd=cfg.parent)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert test_q.id in out and test_q.question in out
    for line in test_q.evidence:
        assert line in out
    assert "history (2 feed lines)" in out
    assert "opened" in out and "evidence changed" in out
    assert "resolves when: the test" in out

    resolved = cli("questions", "--config", str(cfg), "--all", "--json", cwd=cfg.parent)
    module_q = next(d for d in json_lines(resolved.stdout) if d["status"] == "resolved")
    story = cli("questions", "--config", str(cfg), "--explain", module_q["id"],
                cwd=cfg.parent).stdout
    assert "status ready -> resolved" in story

    missing = cli("questions", "--config", str(cfg), "--explain", "nope-1", cwd=cfg.parent)
    assert missing.returncode == 1 and "no question 'nope-1'" in missing.stderr


def test_questions_read_the_index_and_the_lines_after_it(
        prepared: tuple[Path, list[CuriosityQuestion]]) -> None:
    """With the service's index beside the feed (and a line it has not indexed yet), the
    command answers from the index, the same as a scan of the whole feed would."""
    cfg_path, _ = prepared
    feed_path = load_config(cfg_path).feed.path
    store = FeedStore(QuestionFeed(feed_path, compact_bytes=1 << 26))
    assert store.open(T0).rebuilt  # built from the prepared feed
    store.close()
    late = CuriosityCore().handle(_signal("missing_tool", "ffmpeg"), T0 + 3)
    assert late is not None
    with feed_path.open("ab") as fh:
        fh.write(orjson.dumps(late.model_dump(mode="json")) + b"\n")
    expected = CuriosityCore()
    expected.load(read_feed(feed_path).questions.values(), T0)
    files = {p.name: p.read_bytes() for p in feed_path.parent.iterdir() if p.is_file()}

    for args, status in ((["--all"], "all"), ([], "open"), (["--top", "2"], "open")):
        got = json_lines(cli("questions", "--config", str(cfg_path), "--json", *args,
                             cwd=cfg_path.parent).stdout)
        want = expected.ranked(include_resolved=status == "all")
        want = want[:2] if "--top" in args else want
        assert [d["id"] for d in got] == [q.id for q in want]
        assert [CuriosityQuestion.model_validate(d) for d in got] == want
    assert late.id in {d["id"] for d in json_lines(cli(
        "questions", "--config", str(cfg_path), "--json", cwd=cfg_path.parent).stdout)}
    after = {p.name: p.read_bytes() for p in feed_path.parent.iterdir() if p.is_file()
             if p.name in files}
    assert after == files  # read-only: neither the feed nor the index changed


def _source_tree(root: Path) -> Path:
    """A small tree every source monitor has something to say about."""
    pkg = root / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for i in range(30):
        (pkg / f"mod{i}.py").write_text(
            f'"""Module {i}."""\nimport os\nimport missing_dep_{i % 4}\n\n'
            f"class Worker{i}:\n    def feed(self, x):\n        self.pending_{i}.append(x)\n"
            f'\ndef go():\n    emit("TOPIC_{i}")\n'
        )
    (pkg / "bad.py").write_text("def oops(:\n")
    docs = root / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text("# Guide\nSee `pkg.mod1.Worker1` and `pkg.gone.Thing`.\n")
    return write_config(root, {"monitors": {
        "integration": {"roots": ["src"]},
        "module_discovery": {"roots": ["src"]},
        "capability_discovery": {"scan_imports": True},
        "knowledge_discovery": {"docs_dirs": ["docs"]},
    }})


def _stable(stdout: str) -> list[dict[str, Any]]:
    """The JSON lines without their clock fields (``ts``, ``observed_at``)."""
    rows = json_lines(stdout)
    for row in rows:
        row.pop("ts"), row.pop("observed_at")
    return rows


def test_scan_output_is_identical_over_repeated_runs(tmp_path: Path) -> None:
    cfg = _source_tree(tmp_path)
    first = cli("scan", "--config", str(cfg), "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    rows = _stable(first.stdout)
    assert {r["monitor"] for r in rows} >= {"integration", "capability_discovery"}
    table = cli("scan", "--config", str(cfg), cwd=tmp_path).stdout
    for _ in range(3):
        again = cli("scan", "--config", str(cfg), "--json", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert _stable(again.stdout) == rows
        assert cli("scan", "--config", str(cfg), cwd=tmp_path).stdout == table


def test_scan_json_stdout_holds_only_json_lines_and_logs_go_to_stderr(tmp_path: Path) -> None:
    _source_tree(tmp_path)
    (tmp_path / "var" / "history_is_a_dir").mkdir(parents=True)  # logged as an error
    cfg = write_config(tmp_path, {"monitors": {
        "integration": {"roots": ["src"]},
        "chaos": {"history_file": "var/history_is_a_dir"},
    }})
    proc = cli("scan", "--config", str(cfg), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)  # every stdout line parses as JSON
    assert "tail_unreadable" in proc.stderr and "tail_unreadable" not in proc.stdout


def test_scan_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    cfg = _source_tree(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kloros_stream", "scan", "--config", str(cfg), "--json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head` that has read enough
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def _scan_with_stderr_on_a_terminal(cfg: Path, cwd: Path) -> tuple[str, str]:
    """``scan`` with its stderr on a pseudo-terminal (stdout piped): (stdout, stderr)."""
    import pty
    import threading

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "kloros_stream", "scan", "--config",
                             str(cfg)], stdout=subprocess.PIPE, stderr=slave, cwd=cwd,
                            text=True)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:  # while the child runs: a closed pty drops what was not read
        with contextlib.suppress(OSError):  # EIO once the child closed its end
            while chunk := os.read(master, 65536):
                chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    out, _ = proc.communicate(timeout=120)
    reader.join(10)
    os.close(master)
    assert proc.returncode == 0
    return out, b"".join(chunks).decode(errors="replace")


def test_scan_shows_a_progress_bar_on_a_terminal_and_nothing_when_piped(
    tmp_path: Path
) -> None:
    src = tmp_path / "src"
    for i in range(40):
        (src / f"pkg{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"pkg{i % 4}" / f"m{i}.py").write_text(f"X{i} = {i}\n")
    (src / "pkg0" / "broken.py").write_text("def broken(:\n")
    cfg = write_config(tmp_path, {"monitors": {"integration": {"roots": ["src"]}}})
    out, err = _scan_with_stderr_on_a_terminal(cfg, tmp_path)
    assert "scanning" in err and "41/41" in err  # tqdm's bar, drawn on the terminal
    assert "syntax_error" in out and "scanning" not in out
    piped = cli("scan", "--config", str(cfg), cwd=tmp_path)
    assert piped.returncode == 0 and piped.stderr == ""
