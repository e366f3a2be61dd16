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


async def test_delivered_waits_until_the_consumer_commits_its_signals() -> None:
    """The acknowledgement: a monitor's wait ends once the consumer committed a batch
    holding its last signal, not when the bus is merely empty."""
    bus: SignalBus[Item] = SignalBus(10)
    bus.publish(Item("a", 0))
    bus.publish(Item("b", 1))
    wait_a = asyncio.create_task(bus.delivered_all("a"))
    wait_b = asyncio.create_task(bus.delivered_all("b"))
    batch = bus.take_nowait(1)
    through = bus.taken_through
    for _ in range(20):
        await asyncio.sleep(0)
    assert batch == [Item("a", 0)] and not wait_a.done()  # taken, not yet written
    bus.commit(through)
    await asyncio.wait_for(wait_a, 10)
    assert not wait_b.done()
    bus.take_nowait()
    bus.commit(bus.taken_through)
    await asyncio.wait_for(wait_b, 10)
    await asyncio.wait_for(bus.delivered_all("never-published"), 10)


async def test_a_dropped_signal_is_settled_by_a_later_commit() -> None:
    bus: SignalBus[Item] = SignalBus(2)
    bus.publish(Item("a", 0))
    waiter = asyncio.create_task(bus.delivered_all("a"))
    bus.publish(Item("b", 1))
    bus.publish(Item("b", 2))  # pushes a's signal out
    assert bus.dropped == {"a": 1}
    bus.take_nowait()
    bus.commit(bus.taken_through)
    await asyncio.wait_for(waiter, 10)


async def test_room_waits_until_the_bus_is_half_empty() -> None:
    bus: SignalBus[Item] = SignalBus(10)
    for i in range(8):
        bus.publish(Item("m", i))
    room = asyncio.create_task(bus.room())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not room.done()
    bus.take_nowait(3)
    bus.commit(bus.taken_through)
    await asyncio.wait_for(room, 10)
    assert bus.depth <= 5


def test_published_is_counted_where_it_happens_and_drops_notify() -> None:
    bus: SignalBus[Item] = SignalBus(2)
    seen: list[str] = []
    bus.drop_listeners.append(seen.append)
    for i in range(5):
        bus.publish(Item("x" if i % 2 else "y", i))
    assert bus.published == {"y": 3, "x": 2}
    assert seen == ["y", "x", "y"]
    assert bus.total_published == bus.total_dropped + bus.depth + sum(bus.delivered.values())
