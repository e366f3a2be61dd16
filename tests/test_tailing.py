"""Helpers of the tailing monitors: pending changes, and waiting for the bus to deliver."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from kloros_stream.bus import SignalBus
from kloros_stream.monitors.tailing import PendingChanges, wait_delivered
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


async def test_wait_delivered_waits_for_the_bus_and_passes_a_list_sink() -> None:
    bus: SignalBus[SimpleNamespace] = SignalBus(maxsize=10)
    bus.publish(SimpleNamespace(monitor="chaos"))

    async def consume() -> None:
        await asyncio.sleep(0.05)  # the consumer is busy for a moment
        bus.take_nowait()

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(wait_delivered(bus, timeout_s=10), 20)
    assert bus.depth == 0
    await consumer
    sink = ListPublisher()  # no ``depth``: nothing to wait for
    await asyncio.wait_for(wait_delivered(sink), 20)
