"""integration monitor: initial scan of a ~2,000-file tree, and change-to-signal latency.

Corpus: the first 2,000 ``.py`` files of the venv's site-packages (sorted by path), topped
up from the standard library when site-packages has fewer, copied to a temp tree.

- initial scan through the real watcher (hash + parse + flows + orphan index), in a child
  process so its RSS is its own; same-run reference: a plain ``ast.parse`` loop over the
  same files (the physical floor);
- warm restart on the checkpoint (nothing changed while down);
- one-file change -> orphan signal latency (real file writes, inotify, the monitor, the
  publish call), alternating gap/resolution, half by the producer's own file and half by
  a consumer in another file; same-run reference: the old design's full rescan per change
  (re-read, re-parse and re-analyse every file, rebuild the orphan set).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import Report, median, ms, percentile

CORPUS_FILES = 2000
CHANGES = 200
NAME = "integration"
REPO = Path(__file__).resolve().parent.parent


def corpus_sources() -> list[tuple[Path, Path]]:
    """(source file, relative destination) for the first CORPUS_FILES files."""
    site = Path(sysconfig.get_paths()["purelib"])
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    picked: list[tuple[Path, Path]] = []
    for label, base in (("site", site), ("stdlib", stdlib)):
        skip = {"site-packages", "__pycache__", "lib2to3"} if base == stdlib else {"__pycache__"}
        for path in sorted(base.rglob("*.py")):
            if skip.intersection(path.relative_to(base).parts) or not path.is_file():
                continue
            picked.append((path, Path(label) / path.relative_to(base)))
            if len(picked) >= CORPUS_FILES:
                return picked
    return picked


def build_corpus(root: Path) -> tuple[list[Path], int, int]:
    files: list[Path] = []
    total = 0
    from_site = 0
    for src, rel in corpus_sources():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        files.append(dest)
        total += dest.stat().st_size
        from_site += rel.parts[0] == "site"
    bench = root / "zz_bench"
    bench.mkdir()
    (bench / "producer.py").write_text("X = 0\n")
    (bench / "holder.py").write_text('def hold(bus):\n    bus.emit("BENCH_B")\n')
    (bench / "consumer.py").write_text('sub = ChemSub("BENCH_B", print)\n')
    return files, total, from_site


def plain_parse(files: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds of read + ast.parse over ``files``."""
    started, cpu = time.perf_counter(), time.process_time()
    for path in files:
        with contextlib.suppress(SyntaxError, ValueError):
            ast.parse(path.read_bytes(), filename=str(path))
    return time.perf_counter() - started, time.process_time() - cpu


def full_rescan(files: list[Path], root: Path) -> tuple[float, float, Any]:
    """The old design's cost for one change: everything again, then the orphan set."""
    from kloros_stream.analysis.flow_index import FlowIndex
    from kloros_stream.analysis.flows import FlowConfig
    from kloros_stream.sources.index import SourceSpec, load_record

    spec = SourceSpec((root,), (), 2_000_000, FlowConfig())
    started, cpu = time.perf_counter(), time.process_time()
    index = FlowIndex()
    for path in files:
        record, _parsed = load_record(path, root, None, spec, trust_stat=False)
        if record is not None and record.facts is not None:
            index.update(str(path), record.facts.flows)
    index.orphans()
    return time.perf_counter() - started, time.process_time() - cpu, index


def index_update_cost(index: Any) -> float:
    """Median cost of one FlowIndex.update on the full index (pure, no I/O)."""
    from kloros_stream.analysis.flows import analyze_source

    versions = [
        analyze_source(b'def f(bus):\n    bus.emit("BENCH_X")\n', "zz_bench.x"),
        analyze_source(b"X = 0\n", "zz_bench.x"),
    ]
    costs = []
    for i in range(400):
        started = time.perf_counter()
        index.update("/bench/x.py", versions[i % 2])
        costs.append(time.perf_counter() - started)
    return median(costs)


# -- child process: the monitor on the corpus ---------------------------------------------
class TimedPublisher:
    def __init__(self) -> None:
        self.signals: list[Any] = []
        self.arrived = asyncio.Event()

    def publish(self, item: Any) -> None:
        self.signals.append(item)
        self.arrived.set()


async def _start(
    root: Path, state: Path
) -> tuple[Any, TimedPublisher, asyncio.Task[None], float, float]:
    from kloros_stream.checkpoint import CheckpointStore
    from kloros_stream.config import parse_config
    from kloros_stream.monitors.base import MonitorContext
    from kloros_stream.monitors.integration import IntegrationMonitor

    config = parse_config({"monitors": {"integration": {"roots": [str(root)]}}}, root)
    pub = TimedPublisher()
    ctx = MonitorContext(
        name=NAME, config=config, publisher=pub, checkpoints=CheckpointStore(state).child(NAME)
    )
    monitor = IntegrationMonitor(ctx)
    started, cpu = time.perf_counter(), time.process_time()
    task = asyncio.create_task(monitor.run())
    while "files" not in ctx.status.details:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    return monitor, pub, task, time.perf_counter() - started, time.process_time() - cpu


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


async def _latencies(root: Path, pub: TimedPublisher, n: int) -> dict[str, list[float]]:
    bench = root / "zz_bench"
    steps = []
    for i in range(n // 2):  # producer's own file: gap, then resolution (producer gone)
        steps.append(
            (
                bench / "producer.py",
                'def go(bus):\n    bus.emit("BENCH_A")\n' if i % 2 == 0 else "X = 0\n",
            )
        )
    for i in range(n - n // 2):  # consumer in another file: removed (gap), back (resolved)
        steps.append(
            (
                bench / "consumer.py",
                "Y = 0\n" if i % 2 == 0 else 'sub = ChemSub("BENCH_B", print)\n',
            )
        )
    out: dict[str, list[float]] = {"write": [], "closed": [], "inotify": [], "monitor": []}
    for path, text in steps:
        await asyncio.sleep(0.01)
        pub.arrived.clear()
        seen = len(pub.signals)
        started = time.time()
        _write(path, text)
        closed = time.time()
        await asyncio.wait_for(pub.arrived.wait(), timeout=10)
        signal = pub.signals[seen]
        out["write"].append(signal.ts - started)
        out["closed"].append(signal.ts - closed)
        out["inotify"].append(signal.observed_at - closed)
        out["monitor"].append(signal.ts - signal.observed_at)
    return out


async def child(root: Path, state: Path, out: Path, n: int) -> None:
    import psutil

    import kloros_stream.monitors.integration  # noqa: F401 - imports before the baseline

    proc = psutil.Process()
    rss_before = proc.memory_info().rss
    monitor, pub, task, initial_s, initial_cpu = await _start(root, state)
    rss_after = proc.memory_info().rss
    details = dict(monitor.ctx.status.details)
    initial_signals = len(pub.signals)
    latency = await _latencies(root, pub, n)
    rss_changes = proc.memory_info().rss
    await _stop(task)
    monitor2, pub2, task2, restart_s, _cpu = await _start(root, state)
    restart = dict(monitor2.ctx.status.details)
    await _stop(task2)
    out.write_text(
        json.dumps(
            {
                "initial_s": initial_s,
                "initial_cpu": initial_cpu,
                "rss_before": rss_before,
                "rss_after": rss_after,
                "rss_changes": rss_changes,
                "details": details,
                "initial_signals": initial_signals,
                "latency": latency,
                "restart_s": restart_s,
                "restart": restart,
                "restart_signals": len(pub2.signals),
            }
        )
    )


def _run_child(root: Path, state: Path, n: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_integration",
                "child",
                str(root),
                str(state),
                str(out),
                str(n),
            ],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


# -- report -------------------------------------------------------------------------------
def run(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-integration-") as tmp:
        root = Path(tmp) / "tree"
        state = Path(tmp) / "state"
        files, total_bytes, from_site = build_corpus(root)
        n = len(files)
        corpus = (
            f"{n} files, {total_bytes / 2**20:.1f} MiB ({from_site} site-packages, "
            f"{n - from_site} stdlib)"
        )
        report.add(NAME, "corpus", corpus)

        floor_s, floor_cpu = plain_parse(files)
        result = _run_child(root, state, CHANGES)
        scanned = result["details"]["files"]
        report.add(
            NAME,
            "initial scan (watcher + hash + parse + flows + index), wall / CPU",
            f"{result['initial_s']:.2f} s ({scanned / result['initial_s']:.0f} files/s) / "
            f"{result['initial_cpu']:.2f} s CPU",
            f"plain read + ast.parse loop: {floor_s:.2f} s ({n / floor_s:.0f} files/s) / "
            f"{floor_cpu:.2f} s CPU",
        )
        report.add(
            NAME,
            "RSS after initial scan",
            f"{result['rss_after'] / 2**20:.0f} MiB "
            f"(+{(result['rss_after'] - result['rss_before']) / 2**20:.0f} MiB over imports); "
            f"{result['rss_changes'] / 2**20:.0f} MiB after the {CHANGES} changes below",
        )
        details = result["details"]
        report.add(
            NAME,
            "initial findings",
            f"{details['orphans']} orphans, {details['syntax_errors']} syntax errors, "
            f"{details['too_large']} too large; {result['initial_signals']} signals",
        )
        restart = result["restart"]
        report.add(
            NAME,
            "warm restart on the checkpoint (nothing changed)",
            f"{result['restart_s']:.2f} s, {restart['parsed']} parsed, "
            f"{restart['reused']} reused, {result['restart_signals']} signals",
        )
        lat = result["latency"]
        rescan_s, rescan_cpu, index = full_rescan(files, root)

        def p50_p99(values: list[float]) -> str:
            return f"{ms(median(values))} / {ms(percentile(values, 99))}"

        report.add(
            NAME,
            f"one-file change: close() -> signal published, p50 / p99 (n={len(lat['closed'])})",
            p50_p99(lat["closed"]),
            f"old design, full rescan per change: {rescan_s:.2f} s ({rescan_cpu:.2f} s CPU)",
        )
        report.add(
            NAME,
            "  same, from the start of the write (open+write+close included)",
            p50_p99(lat["write"]),
        )
        report.add(
            NAME, "  of which close() -> inotify event read by the watcher", p50_p99(lat["inotify"])
        )
        report.add(
            NAME, "  of which event read -> signal published (the monitor)", p50_p99(lat["monitor"])
        )
        report.add(
            NAME,
            "FlowIndex.update for one small file (pure, median)",
            f"{index_update_cost(index) * 1e6:.1f} us",
            f"on an index of {len(index)} files",
        )


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "child":
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run
        runner(child(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])))
    else:
        rep = Report()
        run(rep)
