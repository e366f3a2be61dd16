"""Scripted monitors and an in-process service for tests of the spine.

:class:`Script` drives a :class:`ScriptedMonitor`: gaps published at every start, a number
of crashes (or crashing forever), ``MonitorUnavailable`` while a reason is set, an inbox
the test pushes gaps and resolutions into, and an optional ticker that publishes on its
own. :func:`running_service` runs a real :class:`Service` (HTTP on a free port) in the
test's event loop. Run as ``python -m tests.support.scripted run --config PATH`` it is the
real ``kloros-stream`` command with every enabled monitor replaced by
:class:`ThreadStallMonitor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kloros_stream.config import Config, parse_config
from kloros_stream.monitors.base import Monitor, MonitorContext, MonitorUnavailable
from kloros_stream.service import Service

WAIT_S = 10.0
TINY_SUPERVISOR = {
    "backoff_initial_s": 0.01,
    "backoff_max_s": 0.05,
    "stable_after_s": 60.0,
    "breaker_restarts": 3,
    "breaker_window_s": 60.0,
    "unavailable_retry_s": 60.0,
}


def gap(gap_type: str, gap_name: str, **facts: Any) -> dict[str, Any]:
    """One scripted gap (facts as a monitor would give them to ``ctx.gap``)."""
    return {"gap_type": gap_type, "gap_name": gap_name, "gap_category": "testing",
            "gap_reason": f"{gap_type} {gap_name}", **facts}


def resolution(gap_type: str, gap_name: str, **facts: Any) -> dict[str, Any]:
    """A scripted CAPABILITY_GAP_RESOLVED for ``gap_type``/``gap_name``."""
    return {"gap_type": gap_type, "gap_name": gap_name, "resolve": True, **facts}


@dataclass
class Script:
    gaps: list[dict[str, Any]] = field(default_factory=list)
    """Published at the start of every run."""
    crash_times: int = 0
    """The first N runs raise RuntimeError (after publishing ``gaps``)."""
    crash_forever: bool = False
    crash_after_s: float = 0.0
    """How long a crashing run lasts before it raises."""
    unavailable: str | None = None
    """While set, ``run`` raises MonitorUnavailable with this reason."""
    tick_s: float | None = None
    """While running, publish a ticker gap every ``tick_s``."""
    tick_gap_type: str = "tick"
    tick_distinct: bool = False
    """Ticker gaps get distinct names (new questions) instead of one repeated gap."""
    stall_on_cancel_s: float = 0.0
    """On cancellation, keep running this long first (a monitor that ignores stop)."""
    runs: int = 0
    ticks: int = 0
    running: int = 0
    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    def push(self, item: dict[str, Any]) -> None:
        """Have the running monitor publish ``item`` (see :func:`gap`, :func:`resolution`)."""
        self.inbox.put_nowait(item)

    def factory(self) -> Callable[[MonitorContext], Monitor]:
        return lambda ctx: ScriptedMonitor(ctx, self)

    def next_tick(self) -> dict[str, Any]:
        self.ticks += 1
        name = f"tick-{self.ticks}" if self.tick_distinct else "tick"
        return gap(self.tick_gap_type, name)


class ScriptedMonitor(Monitor):
    name = "scripted"
    ecosystem = "testing"

    def __init__(self, ctx: MonitorContext, script: Script) -> None:
        super().__init__(ctx)
        self.script = script

    async def run(self) -> None:
        s = self.script
        s.runs += 1
        if s.unavailable is not None:
            raise MonitorUnavailable(s.unavailable)
        for item in s.gaps:
            self.emit(item)
        if s.crash_forever or s.runs <= s.crash_times:
            if s.crash_after_s:
                await asyncio.sleep(s.crash_after_s)
            raise RuntimeError(f"scripted crash #{s.runs}")
        if self.ctx.one_shot:
            return
        s.running += 1
        try:
            await self._follow()
        except asyncio.CancelledError:
            if s.stall_on_cancel_s:
                await asyncio.sleep(s.stall_on_cancel_s)
            raise
        finally:
            s.running -= 1

    async def _follow(self) -> None:
        s = self.script
        while True:
            if s.tick_s is None:
                item = await s.inbox.get()
            else:
                try:
                    item = await asyncio.wait_for(s.inbox.get(), s.tick_s)
                except TimeoutError:
                    item = s.next_tick()
            self.emit(item)

    def emit(self, item: dict[str, Any]) -> None:
        facts = dict(item)
        self.ctx.touch()
        if facts.pop("resolve", False):
            self.ctx.resolve(ecosystem=self.ecosystem, **facts)
        else:
            self.ctx.gap(ecosystem=self.ecosystem, **facts)


def service_config(tmp_path: Path, data: dict[str, Any] | None = None) -> Config:
    """A config for an in-process service: HTTP on a free port, tiny supervisor backoff,
    state and feed under ``tmp_path``; ``data`` sections are merged over that."""
    merged: dict[str, Any] = {
        "http": {"port": 0},
        "feed": {"path": "var/feed.jsonl"},
        "service": {"state_dir": "var/state"},
        "supervisor": dict(TINY_SUPERVISOR),
    }
    for section, values in (data or {}).items():
        merged[section] = {**merged.get(section, {}), **values}
    return parse_config(merged, tmp_path)


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S,
                     what: str = "condition", *, task: asyncio.Task[Any] | None = None,
                     state: Callable[[], object] | None = None) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds, or as
    soon as ``task`` (the thing under test) has ended. ``state`` goes into the message."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"stopped while waiting for {what}")
        if loop.time() > deadline:
            seen = f"; {state()!r}" if state is not None else ""
            raise AssertionError(f"{what} not met within {timeout}s{seen}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running_service(config: Config, scripts: dict[str, Script]
                          ) -> AsyncIterator[Service]:
    """A real Service in this event loop with scripted monitors under contract names."""
    svc = Service(config, factories={name: s.factory() for name, s in scripts.items()})
    task = asyncio.create_task(svc.run(), name="service-under-test")
    try:
        await wait_until(lambda: task.done() or (svc.port is not None and svc.consumer_running),
                         what="service start")
        if task.done():
            task.result()
        yield svc
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, WAIT_S)


class ThreadStallMonitor(Monitor):
    """Publishes one gap, then blocks a worker thread for ``stall_s`` (an uncancellable
    scan in ``asyncio.to_thread``), then idles."""

    name = "stall"
    ecosystem = "testing"
    stall_s = 8.0

    async def run(self) -> None:
        self.ctx.gap(gap_type="stall", gap_name=self.ctx.name, gap_category="testing",
                     gap_reason="a blocking scan in a worker thread", ecosystem=self.ecosystem)
        await asyncio.to_thread(time.sleep, self.stall_s)
        await asyncio.Event().wait()


def main_with_stalling_monitors(argv: list[str]) -> int:
    """``kloros-stream ARGV`` with :class:`ThreadStallMonitor` for every monitor."""
    import kloros_stream.service as service
    from kloros_stream.cli import main

    service.default_factory = lambda name: ThreadStallMonitor
    return main(argv)


if __name__ == "__main__":
    raise SystemExit(main_with_stalling_monitors(sys.argv[1:]))
