"""SourceIndexes: one index per spec, stopped by its last subscriber; the stop never
swallows the subscriber's own cancellation."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest

from kloros_stream.analysis.flows import FlowConfig
from kloros_stream.sources import indexes as indexes_module
from kloros_stream.sources.indexes import SourceIndexes
from kloros_stream.sources.records import SourceSpec
from tests.support.scripted import wait_until


class SlowStop:
    """An index whose stop takes until ``release`` is set (``fail``: then raises)."""

    def __init__(self, fail: bool) -> None:
        self.subscribers: list[object] = []
        self.stats = {"files_parsed": 3, "files": 7}
        self.on_progress: Any = None
        self.running = asyncio.Event()
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()
        self.stopped = False
        self.fail = fail

    def subscribe(self, on_error: Any = None, status: Any = None) -> object:
        sub = object()
        self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: object) -> None:
        self.subscribers.remove(sub)

    async def run(self) -> None:
        self.running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.stopping.set()
            await self.release.wait()
            self.stopped = True
            if self.fail:
                raise RuntimeError("the index failed stopping") from None
            raise


class Built:
    """Stands in for SourceIndex in the registry (the logic under test is the registry's)."""

    def __init__(self) -> None:
        self.made: list[SlowStop] = []
        self.fail = False

    def __call__(self, spec: SourceSpec, journal: Any) -> SlowStop:
        self.made.append(SlowStop(self.fail))
        return self.made[-1]


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Built:
    out = Built()
    monkeypatch.setattr(indexes_module, "SourceIndex", out)
    return out


def spec(root: Path) -> SourceSpec:
    return SourceSpec((root,), (), 2_000_000, FlowConfig())


async def test_a_subscriber_cancelled_while_the_index_stops_stays_cancelled(
    tmp_path: Path, built: Built
) -> None:
    registry = SourceIndexes()
    went_on: list[str] = []

    async def subscriber() -> None:
        async with registry.subscribe(spec(tmp_path)):
            await built.made[0].running.wait()
        # the last subscriber has left: the index was stopped
        went_on.append("after the subscription")

    task = asyncio.create_task(subscriber())
    made = built.made
    await wait_until(lambda: bool(made) and made[0].stopping.is_set(), 5.0, "index stopping")
    task.cancel()  # the subscriber's own cancellation, while it waits for the stop
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert went_on == []
    assert registry.indexes == {}
    assert registry.totals() == {"files_parsed": 3}  # counters retired all the same
    made[0].release.set()  # the index ends its stop on its own
    await wait_until(lambda: made[0].stopped, 5.0, "the index stopped")


async def test_the_last_subscriber_stops_the_index_and_keeps_its_counters(
    tmp_path: Path, built: Built
) -> None:
    registry, made = SourceIndexes(), built.made
    async with registry.subscribe(spec(tmp_path)):
        async with registry.subscribe(spec(tmp_path)):
            assert len(made) == 1  # one index per spec
            await made[0].running.wait()
        assert not made[0].stopping.is_set()
        made[0].release.set()
    assert made[0].stopped
    assert registry.indexes == {}
    assert registry.totals() == {"files_parsed": 3}


async def test_an_index_that_fails_stopping_is_not_the_subscribers_error(
    tmp_path: Path, built: Built
) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    built.fail = True
    registry = SourceIndexes()
    try:
        async with registry.subscribe(spec(tmp_path)):
            await built.made[0].running.wait()
            task = registry.indexes[spec(tmp_path)][1]
            built.made[0].release.set()
        assert task.done() and "RuntimeError" in repr(task)  # (not retrieved here)
        assert registry.indexes == {}
        assert registry.totals() == {"files_parsed": 3}
        del task
        gc.collect()
        assert unhandled == []  # its error was retrieved, not left to the loop's handler
    finally:
        loop.set_exception_handler(None)
