"""Environment monitors (capability_discovery, exploration, knowledge_discovery).

* Idle CPU of a real ``kloros-stream run`` with only these three monitors enabled, over
  60 s after their initial scans (psutil ``cpu_times`` of the process), against the same
  service with every monitor disabled (the spine's own idle cost), measured the same way.
* Detection latency, from the syscall that changes the environment to the signal on the
  bus (the monitor in-process, real inotify) and to the question's line in the feed of a
  real service (the feed file followed with inotify): a tool installed into / removed
  from a watched PATH directory (atomic rename / unlink), and a new document written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil
from asyncinotify import Inotify, Mask

from benchmarks.common import Report, median, ms, percentile
from kloros_stream.models import Signal
from kloros_stream.monitors.capability_discovery import CapabilityDiscoveryMonitor
from kloros_stream.monitors.knowledge_discovery import KnowledgeDiscoveryMonitor
from tests.support.fakes import make_context
from tests.support.service import ServiceProcess, write_config

NAME = "env_monitors"
IDLE_S = 60.0
IN_PROCESS_N = 200
E2E_N = 60
TOOL = "kloros-bench-tool"
REPO = Path(__file__).resolve().parents[1]


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _wait_scanned(svc: ServiceProcess, monitors: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        health = svc.health()["monitors"]
        if all("initial_scan_s" in health[m].get("details", {}) for m in monitors):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"initial scans not done: {health}")
        time.sleep(0.1)


def _env_config(directory: Path) -> tuple[Path, dict[str, str]]:
    bin_dir, docs = directory / "bin", directory / "docs"
    bin_dir.mkdir()
    docs.mkdir()
    # a private copy of this code base: the live repository is edited while we measure
    shutil.copytree(
        REPO / "kloros_stream",
        directory / "src" / "kloros_stream",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for i in range(50):
        (docs / f"doc{i}.md").write_text(f"# Doc {i}\nSee kloros_stream/config.py\n")
    cfg = write_config(
        directory,
        {
            "monitors": {
                "integration": {"enabled": False, "roots": ["src"]},
                "capability_discovery": {
                    "required_executables": [TOOL, "git"],
                    "required_modules": ["orjson"],
                },
                "exploration": {},
                "knowledge_discovery": {"docs_dirs": ["docs"]},
            }
        },
    )
    return cfg, {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _idle_cpu(cfg: Path, env: dict[str, str], monitors: list[str]) -> tuple[float, float]:
    """(CPU % of one core, voluntary context switches per s) over IDLE_S after start-up."""
    with ServiceProcess(cfg, env=env) as svc:
        if monitors:
            _wait_scanned(svc, monitors)
        time.sleep(2.0)  # let start-up work (feed flush, first checkpoint) settle
        assert svc.proc is not None
        proc = psutil.Process(svc.proc.pid)
        cpu0, ctx0 = _cpu_s(proc), proc.num_ctx_switches().voluntary
        time.sleep(IDLE_S)
        cpu1, ctx1 = _cpu_s(proc), proc.num_ctx_switches().voluntary
        return 100 * (cpu1 - cpu0) / IDLE_S, (ctx1 - ctx0) / IDLE_S


# -- in-process detection latency -------------------------------------------------------------
class _Timed:
    """A publisher that stamps each signal's arrival and wakes the waiter."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, Signal]] = []
        self.event = asyncio.Event()

    def publish(self, item: Signal) -> None:
        self.arrivals.append((time.time(), item))
        self.event.set()

    async def next(self, pred: Callable[[Signal], bool], timeout: float = 10) -> float:
        deadline = time.monotonic() + timeout
        while True:
            for at, sig in self.arrivals:
                if pred(sig):
                    self.arrivals.clear()
                    return at
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), max(0.01, deadline - time.monotonic()))


def _prepare_tool(bin_dir: Path) -> None:
    tmp = bin_dir / f".{TOOL}.tmp"
    tmp.write_text("#!/bin/sh\n")
    tmp.chmod(0o755)


async def _in_process(directory: Path) -> dict[str, list[float]]:
    bin_dir, docs = directory / "ibin", directory / "idocs"
    bin_dir.mkdir()
    docs.mkdir()
    out: dict[str, list[float]] = {"install": [], "remove": [], "doc": []}
    pub = _Timed()
    data = {
        "monitors": {
            "integration": {"roots": [str(directory / "nosrc")]},
            "capability_discovery": {"required_executables": [TOOL], "scan_imports": False},
            "knowledge_discovery": {
                "docs_dirs": [str(docs)],
                "index_file": str(directory / "i.json"),
            },
        }
    }
    ctx, _ = make_context("capability_discovery", directory / "c", data)
    kctx, _ = make_context("knowledge_discovery", directory / "k", data)
    ctx.publisher = kctx.publisher = pub
    tasks = [
        asyncio.create_task(CapabilityDiscoveryMonitor(ctx, path_value=str(bin_dir)).run()),
        asyncio.create_task(KnowledgeDiscoveryMonitor(kctx).run()),
    ]
    try:
        await pub.next(lambda s: s.gap_name == TOOL and not s.resolved)
        await asyncio.sleep(0.5)  # the watchers are up once the initial scans published
        for i in range(IN_PROCESS_N):
            _prepare_tool(bin_dir)
            t0 = time.time()
            (bin_dir / f".{TOOL}.tmp").rename(bin_dir / TOOL)
            out["install"].append(await pub.next(lambda s: s.gap_name == TOOL and s.resolved) - t0)
            t0 = time.time()
            (bin_dir / TOOL).unlink()
            out["remove"].append(
                await pub.next(lambda s: s.gap_name == TOOL and not s.resolved) - t0
            )
            name = f"new{i}.md"
            t0 = time.time()
            (docs / name).write_text("# a new document\n")
            out["doc"].append(await pub.next(lambda s, n=name: s.gap_name == n) - t0)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return out


# -- end-to-end detection latency: source change to feed line ---------------------------------
class _FeedFollower:
    """Follows the feed file with inotify; returns when a matching line is appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.buf = b""

    def _new_lines(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [orjson.loads(line) for line in lines if line]

    async def wait(
        self, inotify: Inotify, pred: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> float:
        deadline = time.monotonic() + timeout
        while True:
            for q in self._new_lines():
                if pred(q):
                    return time.time()
            await asyncio.wait_for(inotify.get(), max(0.01, deadline - time.monotonic()))


def _q(gap_name: str, resolved: bool) -> Callable[[dict[str, Any]], bool]:
    return lambda q: (
        q["metadata"]["gap_name"] == gap_name and (q["status"] == "resolved") is resolved
    )


async def _end_to_end(svc: ServiceProcess, directory: Path) -> dict[str, list[float]]:
    bin_dir, docs = directory / "bin", directory / "docs"
    out: dict[str, list[float]] = {"install": [], "remove": [], "doc": []}
    follower = _FeedFollower(svc.feed_path)
    with Inotify() as inotify:
        inotify.add_watch(svc.feed_path, Mask.MODIFY)
        for i in range(E2E_N):
            _prepare_tool(bin_dir)
            t0 = time.time()
            (bin_dir / f".{TOOL}.tmp").rename(bin_dir / TOOL)
            out["install"].append(await follower.wait(inotify, _q(TOOL, True)) - t0)
            t0 = time.time()
            (bin_dir / TOOL).unlink()
            out["remove"].append(await follower.wait(inotify, _q(TOOL, False)) - t0)
            name = f"e2e{i}.md"
            t0 = time.time()
            (docs / name).write_text("# a new document\n")
            out["doc"].append(await follower.wait(inotify, _q(name, False)) - t0)
    return out


def _latency_rows(report: Report, where: str, samples: dict[str, list[float]]) -> None:
    labels = {
        "install": "PATH install -> resolved",
        "remove": "PATH removal -> gap",
        "doc": "new doc -> unindexed_doc",
    }
    for key, label in labels.items():
        values = samples[key]
        report.add(
            NAME,
            f"{label}, {where} (n={len(values)})",
            f"p50 {ms(median(values))}, p99 {ms(percentile(values, 99))}",
            "target p99 < 50 ms",
            "python -m benchmarks env_monitors",
        )


def run(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="kloros-bench-env-") as tmp:
        base = Path(tmp)
        (base / "inproc").mkdir()
        _latency_rows(
            report,
            "monitor in-process (write -> bus signal)",
            asyncio.run(_in_process(base / "inproc")),
        )

        env_dir = base / "env"
        env_dir.mkdir()
        cfg, env = _env_config(env_dir)
        with ServiceProcess(cfg, env=env) as svc:
            _wait_scanned(svc, ["capability_discovery", "exploration", "knowledge_discovery"])
            details = svc.health()["monitors"]
            scan = {
                m: details[m]["details"]["initial_scan_s"]
                for m in ("capability_discovery", "exploration", "knowledge_discovery")
            }
            _latency_rows(
                report, "real service (write -> feed line)", asyncio.run(_end_to_end(svc, env_dir))
            )
        report.add(
            NAME,
            "initial scan (s): " + ", ".join(scan),
            ", ".join(f"{v:.3f}" for v in scan.values()),
            "imports of kloros_stream/, 50 docs",
            "python -m benchmarks env_monitors",
        )
        shutil.rmtree(env_dir / "var", ignore_errors=True)

        cpu, wakeups = _idle_cpu(
            cfg, env, ["capability_discovery", "exploration", "knowledge_discovery"]
        )
        spine_dir = base / "spine"
        spine_dir.mkdir()
        spine_cpu, spine_wakeups = _idle_cpu(write_config(spine_dir, {}), {}, [])
        report.add(
            NAME,
            f"idle CPU, 3 env monitors, {IDLE_S:.0f} s",
            f"{cpu:.3f}% of a core ({cpu * IDLE_S / 100:.2f} s CPU; psutil resolves 0.01 s),"
            f" {wakeups:.2f} voluntary ctx switches/s",
            f"spine alone: {spine_cpu:.3f}%, {spine_wakeups:.2f}/s",
            "python -m benchmarks env_monitors",
        )


if __name__ == "__main__":
    run(Report())
