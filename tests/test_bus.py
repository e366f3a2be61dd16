"""The signal bus: bounded, drop-oldest with exact per-monitor counters, a publisher that
never blocks or awaits, a consumer that waits and takes batches."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass

import pytest

from kloros_stream.bus import SignalBus
from kloros_stream.models import Signal


@dataclass(frozen=True)
class Item:
    monitor: str
    seq: int


def _signal(monitor: str, n: int) -> Signal:
    return Signal(ecosystem="testing", monitor=monitor,
                  facts={"gap_type": "t", "gap_name": f"g{n}", "gap_category": "c",
                         "gap_reason": "r"})


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SignalBus(0)


def test_overflow_drops_the_oldest_with_exact_counters() -> None:
    bus: SignalBus[Item] = SignalBus(3)
    sequence = [Item("a", 0), Item("b", 1), Item("a", 2), Item("b", 3), Item("a", 4),
                Item("c", 5)]
    for item in sequence:
        bus.publish(item)
    assert bus.depth == 3
    # Items 0 (a), 1 (b) and 2 (a) were pushed out, oldest first.
    assert bus.dropped == {"a": 2, "b": 1}
    assert bus.published == {"a": 3, "b": 2, "c": 1}
    assert bus.total_published == 6
    assert bus.total_dropped == 3
    assert bus.take_nowait() == sequence[3:]
    assert bus.delivered == {"b": 1, "a": 1, "c": 1}
    assert bus.depth == 0


def test_counters_balance_under_heavy_overflow() -> None:
    bus: SignalBus[Item] = SignalBus(100)
    delivered: list[Item] = []
    for i in range(10_000):
        bus.publish(Item("x" if i % 3 else "y", i))
        if i % 1000 == 999:
            delivered += bus.take_nowait(50)
    delivered += bus.take_nowait()
    for name in ("x", "y"):
        assert bus.published[name] == bus.delivered[name] + bus.dropped[name]
    assert sum(bus.delivered.values()) == len(delivered)
    seqs = [i.seq for i in delivered]
    assert seqs == sorted(seqs)  # order kept, only the oldest ever dropped
    assert seqs[-100:] == list(range(9900, 10_000))  # the newest always survive


def test_publish_is_synchronous_and_never_needs_a_loop() -> None:
    """No event loop runs here: publish cannot await anything, and a full bus with no
    consumer does not block it."""
    assert not inspect.iscoroutinefunction(SignalBus.publish)
    bus: SignalBus[Signal] = SignalBus(10)
    for n in range(50_000):
        assert bus.publish(_signal("m", n % 20)) is None
    assert bus.depth == 10
    assert bus.published["m"] == 50_000
    assert bus.dropped["m"] == 49_990


async def test_publish_does_not_yield_to_the_loop() -> None:
    """Other tasks do not run while a publisher publishes: it never gives up control."""
    bus: SignalBus[Item] = SignalBus(5)
    ran: list[int] = []

    async def other() -> None:
        ran.append(1)

    task = asyncio.create_task(other())
    for i in range(1000):
        bus.publish(Item("m", i))
    assert ran == []
    await task
    assert ran == [1]


async def test_take_waits_for_a_signal() -> None:
    bus: SignalBus[Item] = SignalBus(10)
    taker = asyncio.create_task(bus.take())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not taker.done()  # nothing buffered: still waiting
    bus.publish(Item("m", 1))
    assert await asyncio.wait_for(taker, 10) == [Item("m", 1)]
    assert bus.delivered["m"] == 1


async def test_take_returns_a_batch_and_respects_the_limit() -> None:
    bus: SignalBus[Item] = SignalBus(100)
    items = [Item("m", i) for i in range(10)]
    for item in items:
        bus.publish(item)
    assert await bus.take(4) == items[:4]
    assert bus.depth == 6
    assert await bus.take() == items[4:]
    assert bus.depth == 0
    assert bus.take_nowait() == []


async def test_take_after_draining_waits_again() -> None:
    bus: SignalBus[Item] = SignalBus(10)
    bus.publish(Item("m", 0))
    bus.take_nowait()
    taker = asyncio.create_task(bus.take())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not taker.done()
    bus.publish(Item("m", 1))
    bus.publish(Item("m", 2))
    assert await asyncio.wait_for(taker, 10) == [Item("m", 1), Item("m", 2)]


async def test_a_consumer_keeps_up_with_a_producer() -> None:
    bus: SignalBus[Item] = SignalBus(64)
    got: list[Item] = []

    async def consume() -> None:
        while len(got) + bus.total_dropped < 5000:
            got.extend(await bus.take(16))

    consumer = asyncio.create_task(consume())
    for i in range(5000):
        bus.publish(Item("m", i))
        if i % 32 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(consumer, 10)
    assert len(got) + bus.total_dropped == 5000
    assert bus.delivered["m"] == len(got)
    assert [i.seq for i in got] == sorted(i.seq for i in got)
