"""Fake event sinks and contexts for unit tests of monitors and logic, and running a
monitor in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from kloros_stream.checkpoint import CheckpointStore
from kloros_stream.config import Config, parse_config
from kloros_stream.models import Signal
from kloros_stream.monitors.base import Monitor, MonitorContext

M = TypeVar("M", bound=Monitor)


class ListPublisher:
    """Collects published signals in order."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []

    def publish(self, item: Signal) -> None:
        self.signals.append(item)

    def gaps(self, gap_type: str | None = None) -> list[Signal]:
        return [s for s in self.signals if not s.resolved and (gap_type in (None, s.gap_type))]

    def resolutions(self, gap_type: str | None = None) -> list[Signal]:
        return [s for s in self.signals if s.resolved and (gap_type in (None, s.gap_type))]

    def open_gaps(self, gap_type: str) -> dict[str, Signal]:
        """Latest signal per gap name, keeping only those whose latest is a gap."""
        latest: dict[str, Signal] = {}
        for s in self.signals:
            if s.gap_type == gap_type:
                latest[s.gap_name] = s
        return {n: s for n, s in latest.items() if not s.resolved}

    async def wait_for(
        self, predicate: Callable[[list[Signal]], bool], timeout: float = 10.0
    ) -> list[Signal]:
        """Wait until ``predicate(signals)`` holds; fail the test after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.signals):
            if loop.time() > deadline:
                raise AssertionError(f"condition not met in {timeout}s; got {self.signals!r}")
            await asyncio.sleep(0.01)
        return self.signals


def make_config(tmp_path: Path, data: dict[str, Any] | None = None) -> Config:
    """A validated config whose relative paths resolve against ``tmp_path``."""
    return parse_config(data or {}, tmp_path)


def make_context(
    name: str,
    tmp_path: Path,
    data: dict[str, Any] | None = None,
    *,
    one_shot: bool = False,
    publisher: ListPublisher | None = None,
) -> tuple[MonitorContext, ListPublisher]:
    """A monitor context with a list publisher and checkpoints under ``tmp_path/state``."""
    config = make_config(tmp_path, data)
    pub = publisher or ListPublisher()
    store = CheckpointStore(config.service.state_dir).child(name)
    return MonitorContext(
        name=name, config=config, publisher=pub, checkpoints=store, one_shot=one_shot
    ), pub


def make_monitor(
    cls: type[M],
    tmp_path: Path,
    data: dict[str, Any] | None = None,
    *,
    one_shot: bool = False,
    publisher: ListPublisher | None = None,
    **kwargs: Any,
) -> tuple[M, ListPublisher]:
    """A ``cls`` monitor on :func:`make_context` (named ``cls.name``); ``kwargs`` go to it."""
    ctx, pub = make_context(cls.name, tmp_path, data, one_shot=one_shot, publisher=publisher)
    return cls(ctx, **kwargs), pub


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it; re-raise what it crashed with, if it did."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


@contextlib.asynccontextmanager
async def running(monitor: Monitor) -> AsyncIterator[asyncio.Task[None]]:
    """``monitor.run()`` as a task (yielded) for the ``async with`` block: on exit it is
    cancelled and awaited, and what it crashed with (if anything) is raised."""
    task = asyncio.create_task(monitor.run())
    try:
        yield task
    finally:
        await stop(task)


@contextlib.asynccontextmanager
async def running_monitor(
    cls: type[M],
    tmp_path: Path,
    data: dict[str, Any] | None = None,
    *,
    publisher: ListPublisher | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[M, ListPublisher]]:
    """:func:`make_monitor` then :func:`running`: yields the monitor and its publisher."""
    monitor, pub = make_monitor(cls, tmp_path, data, publisher=publisher, **kwargs)
    async with running(monitor):
        yield monitor, pub


class MonitorRun:
    """A monitor started as a task, with its publisher; :meth:`stop` it (or let a fixture)."""

    def __init__(self, monitor: Monitor, pub: ListPublisher) -> None:
        self.monitor = monitor
        self.pub = pub
        self.task: asyncio.Task[None] = asyncio.create_task(monitor.run())

    async def wait(self, predicate: Callable[[list[Signal]], bool]) -> list[Signal]:
        return await self.pub.wait_for(predicate, timeout=10)

    async def stop(self) -> None:
        await stop(self.task)
