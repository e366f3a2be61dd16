"""The spine: bus throughput and drop-oldest overflow, signal-to-feed-line latency at
1 k signals/s through a running Service, and an idle ``kloros-stream run`` subprocess's
RSS and CPU with every monitor enabled.

Targets (issue 2): bus >= 1 M signals/s; p99 signal-to-feed < 10 ms; idle CPU < 0.5 % of
a core; RSS < 60 MiB.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from kloros_stream.bus import SignalBus
from kloros_stream.config import MONITOR_NAMES, parse_config
from kloros_stream.models import Signal
from kloros_stream.monitors.base import Monitor
from kloros_stream.service import Service

from .common import Report, median, ms, percentile

BUS_SIGNALS = 2_000_000
BUS_CHUNK = 1000
LATENCY_RATE = 1000
LATENCY_SECONDS = 10
LATENCY_WARMUP = 500
IDLE_SECONDS = 60
CMD = "python -m benchmarks spine"


def _run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """On uvloop, as ``kloros-stream`` runs, when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def _signals(n: int) -> list[Signal]:
    return [Signal(ecosystem="bench", monitor=MONITOR_NAMES[i % len(MONITOR_NAMES)],
                   facts={"gap_type": "test_failure", "gap_name": f"t::{i}",
                          "gap_category": "quality", "gap_reason": "failed"})
            for i in range(n)]


# -- bus -----------------------------------------------------------------------------------
async def _bus_throughput(items: list[Signal], total: int) -> tuple[float, int]:
    """A producer publishes chunks and yields; the consumer awaits ``take``. Returns the
    seconds for ``total`` signals published and taken, and how many were dropped."""
    bus: SignalBus[Signal] = SignalBus(10_000)
    taken = 0

    async def consume() -> None:
        nonlocal taken
        while taken < total - bus.total_dropped:
            taken += len(await bus.take(4096))

    consumer = asyncio.create_task(consume())
    started = time.perf_counter()
    publish = bus.publish
    sent = 0
    while sent < total:
        for item in items:
            publish(item)
        sent += len(items)
        await asyncio.sleep(0)
    await consumer
    return time.perf_counter() - started, bus.total_dropped


async def _queue_throughput(items: list[Signal], total: int) -> float:
    """The same pattern on asyncio.Queue (put_nowait/get): the reference."""
    queue: asyncio.Queue[Signal] = asyncio.Queue(10_000)
    taken = 0

    async def consume() -> None:
        nonlocal taken
        get = queue.get
        while taken < total:
            await get()
            taken += 1
            while not queue.empty() and taken < total:
                queue.get_nowait()
                taken += 1

    consumer = asyncio.create_task(consume())
    started = time.perf_counter()
    put = queue.put_nowait
    sent = 0
    while sent < total:
        for item in items:
            put(item)
        sent += len(items)
        await asyncio.sleep(0)
    await consumer
    return time.perf_counter() - started


def _overflow(items: list[Signal], total: int) -> tuple[float, int, int]:
    """Publish ``total`` signals into a full bus (no consumer): every publish drops one."""
    bus: SignalBus[Signal] = SignalBus(10_000)
    publish = bus.publish
    for item in items * (10_000 // len(items)):
        publish(item)
    dropped_before = bus.total_dropped
    started = time.perf_counter()
    for _ in range(total // len(items)):
        for item in items:
            publish(item)
    elapsed = time.perf_counter() - started
    return elapsed, bus.total_dropped - dropped_before, bus.depth


def bench_bus(report: Report) -> None:
    items = _signals(BUS_CHUNK)
    rates = [BUS_SIGNALS / _run(lambda: _bus_throughput(items, BUS_SIGNALS))[0]
             for _ in range(3)]
    _, dropped = _run(lambda: _bus_throughput(items, BUS_SIGNALS))
    queue_rates = [BUS_SIGNALS / _run(lambda: _queue_throughput(items, BUS_SIGNALS))
                   for _ in range(3)]
    report.add("spine.bus", "publish -> take throughput (median of 3, 2 M signals, uvloop)",
               f"{median(rates) / 1e6:.2f} M signals/s (dropped {dropped})",
               f"asyncio.Queue same pattern: {median(queue_rates) / 1e6:.2f} M/s; "
               "target >= 1 M/s", CMD)
    elapsed, dropped, depth = _overflow(items, BUS_SIGNALS)
    report.add("spine.bus", "drop-oldest overflow (full bus, no consumer, 2 M publishes)",
               f"{BUS_SIGNALS / elapsed / 1e6:.2f} M signals/s, {dropped} dropped",
               f"depth stays {depth} = maxsize", CMD)


# -- latency through a running service ------------------------------------------------------
class _PacedMonitor(Monitor):
    """Publishes ``count`` distinct gaps at ``rate`` per second, then idles."""

    name = "paced"
    ecosystem = "bench"
    rate = LATENCY_RATE
    count = LATENCY_RATE * LATENCY_SECONDS
    done: asyncio.Event

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(self.count):
            delay = start + i / self.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.ctx.gap(gap_type="test_failure", gap_name=f"tests/test_x.py::test_{i}",
                         gap_category="quality", gap_reason="the test failed",
                         ecosystem=self.ecosystem, error=f"AssertionError: {i}")
        self.done.set()
        await asyncio.Event().wait()


class _Recorder:
    """Stands in for the service's latency histogram: keeps every value, forwards it."""

    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)
        self.histogram.observe(value)


async def _latency(directory: Path) -> tuple[list[float], float, dict[str, Any]]:
    config = parse_config({"http": {"port": 0}, "feed": {"path": "var/feed.jsonl"},
                           "service": {"state_dir": "var/state"}}, directory)
    done = asyncio.Event()
    _PacedMonitor.done = done
    svc = Service(config, factories={"test": _PacedMonitor})
    recorder = _Recorder(svc.latency)
    svc.latency = recorder  # type: ignore[assignment]
    task = asyncio.create_task(svc.run())
    started = time.perf_counter()
    await asyncio.wait_for(done.wait(), LATENCY_SECONDS * 5)
    elapsed = time.perf_counter() - started
    while svc.bus.depth or svc.core.handled < _PacedMonitor.count:
        await asyncio.sleep(0.01)
    svc.request_stop()
    await task
    lines = sum(1 for _ in config.feed.path.open("rb"))
    return recorder.values, _PacedMonitor.count / elapsed, {
        "lines": lines, "dropped": svc.bus.total_dropped}


def bench_latency(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-spine-") as tmp:
        values, rate, info = _run(lambda: _latency(Path(tmp)))
    steady = values[LATENCY_WARMUP:]
    report.add("spine.latency",
               f"signal -> feed line p50 / p99 / p99.9 / max ({len(steady)} signals "
               f"at {rate:.0f}/s, distinct gaps, uvloop)",
               f"{ms(percentile(steady, 50))} / {ms(percentile(steady, 99))} / "
               f"{ms(percentile(steady, 99.9))} / {ms(max(steady))}",
               f"target p99 < 10 ms; feed lines {info['lines']}, dropped {info['dropped']}",
               CMD)


# -- idle service --------------------------------------------------------------------------
def _idle_config(directory: Path, *, enabled: bool) -> Path:
    """Every monitor on its defaults, its paths in ``directory`` with a little content."""
    (directory / "src" / "pkg").mkdir(parents=True)
    for i in range(20):
        (directory / "src" / "pkg" / f"mod{i}.py").write_text(
            f'"""Module {i}."""\nimport os\n\n\nclass C{i}:\n    def run(self):\n'
            f"        return os.getcwd()\n")
    (directory / "docs").mkdir()
    (directory / "docs" / "guide.md").write_text("# Guide\n\nHow it works.\n")
    (directory / "var" / "test-results").mkdir(parents=True)
    (directory / "var" / "chaos_history.jsonl").write_text(
        json.dumps({"scenario": "disk_full", "healed": False}) + "\n")
    (directory / "var" / "curiosity_experiments.jsonl").write_text("")
    lines = ["[http]", "port = 0", ""]
    for name in MONITOR_NAMES:
        lines += [f"[monitors.{name}]", f"enabled = {'true' if enabled else 'false'}", ""]
    path = directory / "config.toml"
    path.write_text("\n".join(lines))
    return path


class _Service:
    """A ``kloros-stream run`` subprocess with its port read from the JSON log."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kloros_stream", "run", "--config", str(config)],
            cwd=config.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.port: int | None = None
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(60):
            raise RuntimeError("service did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("event") == "http_listening":
                self.port = int(entry["port"])
            elif entry.get("event") == "service_ready":
                self.ready.set()

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as err:
            return json.loads(err.read())

    def settle(self, timeout: float = 180.0) -> dict[str, str]:
        """Wait until no monitor is starting or restarting; returns the states."""
        deadline = time.monotonic() + timeout
        while True:
            states = {n: m["state"] for n, m in self.health()["monitors"].items()}
            if not {"starting", "restarting"} & set(states.values()):
                return states
            if time.monotonic() > deadline:
                return states
            time.sleep(1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def _tree_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (process and children) and RSS bytes (process and children)."""
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    cpu = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
    rss = sum(p.memory_info().rss for p in procs)
    return cpu, rss


def bench_idle(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-idle-off-") as tmp:
        svc = _Service(_idle_config(Path(tmp), enabled=False))
        time.sleep(5)
        _, rss_off = _tree_usage(svc.proc.pid)
        svc.stop()
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        svc = _Service(_idle_config(Path(tmp), enabled=True))
        try:
            states = svc.settle()
            time.sleep(5)
            cpu0, _ = _tree_usage(svc.proc.pid)
            t0 = time.monotonic()
            time.sleep(IDLE_SECONDS)
            cpu1, rss = _tree_usage(svc.proc.pid)
            wall = time.monotonic() - t0
            children = len(__import__("psutil").Process(svc.proc.pid).children(recursive=True))
        finally:
            code = svc.stop()
    summary = ", ".join(f"{n}={s}" for n, s in sorted(states.items()))
    report.add("spine.idle", "RSS of an idle `kloros-stream run`, all monitors enabled",
               f"{rss / 2**20:.1f} MiB (incl. {children} child processes)",
               f"same binary, all monitors disabled: {rss_off / 2**20:.1f} MiB; "
               f"target < 60 MiB; states: {summary}", CMD)
    cpu = cpu1 - cpu0
    report.add("spine.idle", f"CPU over {wall:.0f} s idle, all monitors enabled",
               f"{cpu:.3f} CPU-s = {cpu / wall * 100:.3f} % of a core",
               f"target < 0.5 % of a core; exit code on SIGTERM {code}", CMD)


def run(report: Report) -> None:
    print(f"  (python {sys.version.split()[0]}, pid {os.getpid()})", flush=True)
    bench_bus(report)
    bench_latency(report)
    bench_idle(report)
