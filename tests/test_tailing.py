"""Helpers of the tailing monitors: pending changes, and publishing paced by the bus."""

from __future__ import annotations

import asyncio

from kloros_stream.bus import SignalBus
from kloros_stream.checkpoint import read_only_store
from kloros_stream.config import Config
from kloros_stream.models import Signal
from kloros_stream.monitors.base import MonitorContext
from kloros_stream.monitors.tailing import PendingChanges, publish_paced
from tests.support.fakes import ListPublisher


def test_pending_changes_collapse_to_at_most_two_per_name() -> None:
    pending = PendingChanges()
    for opened, name, at in [
        (True, "a", 1),
        (True, "b", 2),
        (False, "a", 3),
        (True, "a", 4),
        (True, "a", 5),
        (False, "c", 6),
        (True, "b", 7),
        (False, "b", 8),
    ]:
        pending.add(opened, name, at)
    assert pending.drain() == [(True, "a", 5), (True, "b", 7), (False, "b", 8), (False, "c", 6)]
    assert pending.drain() == [] and len(pending) == 0


async def test_publish_paced_waits_for_room_and_loses_nothing() -> None:
    """A burst four times the bus is published in parts as the consumer catches up: the
    bus never overflows, nothing is dropped."""
    bus: SignalBus[Signal] = SignalBus(maxsize=100)
    ctx = MonitorContext(name="chaos", config=Config(), publisher=bus,
                         checkpoints=read_only_store())
    got: list[Signal] = []

    async def consume() -> None:
        while len(got) < 400:
            got.extend(await bus.take(10))
            bus.commit(bus.taken_through)

    consumer = asyncio.create_task(consume())

    def one(n: int) -> None:
        assert bus.depth < bus.maxsize
        ctx.gap(gap_type="healing_failure", gap_name=f"s{n}", gap_category="c",
                gap_reason="r", ecosystem="e")

    await asyncio.wait_for(publish_paced(ctx, list(range(400)), one), 20)
    await asyncio.wait_for(consumer, 20)
    assert bus.total_dropped == 0
    assert [s.gap_name for s in got] == [f"s{n}" for n in range(400)]
    assert await asyncio.wait_for(ctx.delivered(), 20) is True


async def test_a_list_sink_needs_no_acknowledgement() -> None:
    ctx = MonitorContext(name="chaos", config=Config(), publisher=ListPublisher(),
                         checkpoints=read_only_store())
    assert await asyncio.wait_for(ctx.delivered(), 20) is True
    await asyncio.wait_for(ctx.room(), 20)
