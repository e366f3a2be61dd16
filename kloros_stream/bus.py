"""The in-process signal bus: bounded, drop-oldest, never blocks a publisher.

Publishers call :meth:`SignalBus.publish` (plain, synchronous, O(1)); the single consumer
awaits :meth:`SignalBus.take` for a batch. When the buffer is full the oldest signal is
dropped and counted against the monitor that published it (and a rate-limited warning is
logged). Publish only from the event loop's thread; a worker thread hands its signals
over with ``loop.call_soon_threadsafe``.

Counters are counted where they happen: ``published`` in :meth:`publish`, ``dropped`` when
a signal is pushed out, ``delivered`` per batch taken. So ``published == delivered +
dropped + depth`` is a check, not a definition.

Delivery acknowledgement: every published signal gets the next sequence number. The
consumer :meth:`commit` s a batch once it is applied and written to the feed; as the bus
is FIFO, everything up to that batch is then either written or dropped. A monitor awaits
:meth:`delivered` (its own signals so far are committed or dropped) before it saves a
checkpoint that claims them, and :meth:`room` (the bus is at most half full) before it
publishes a large burst: a file source then reads on when the consumer caught up, and the
data waits on disk instead of being dropped. Neither polls.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable
from operator import attrgetter
from typing import Generic, Protocol, TypeVar

import structlog

log = structlog.get_logger("kloros_stream.bus")

DROP_LOG_INTERVAL_S = 10.0
"""At most one ``bus_dropped`` warning per this many seconds (with the counts since)."""


class _HasMonitor(Protocol):
    monitor: str


T = TypeVar("T", bound=_HasMonitor)
_monitor_of = attrgetter("monitor")


class SignalBus(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._buffer: deque[T] = deque()
        self._ready = asyncio.Event()
        self.published: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._seq = 0
        """Sequence number of the last published signal."""
        self._last: dict[str, int] = {}
        """Per monitor, the sequence number of its last published signal."""
        self._committed = 0
        """Every signal up to this sequence number is written to the feed or was dropped."""
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tie = itertools.count()
        self.drop_listeners: list[Callable[[str], None]] = []
        """Called with the monitor's name whenever one of its signals is dropped."""
        self._drops_unlogged: Counter[str] = Counter()
        self._drop_logged_at = float("-inf")

    @property
    def depth(self) -> int:
        return len(self._buffer)

    @property
    def taken_through(self) -> int:
        """Sequence number of the last signal that left the buffer (taken or dropped)."""
        return self._seq - len(self._buffer)

    def publish(self, item: T) -> None:
        """Enqueue ``item``; if the bus is full, drop (and count) the oldest one."""
        buffer = self._buffer
        monitor = item.monitor
        if len(buffer) >= self.maxsize:
            self._drop(buffer.popleft().monitor)
        elif not buffer:
            self._ready.set()  # the consumer waits only on an empty buffer
        buffer.append(item)
        self._seq += 1
        self._last[monitor] = self._seq
        self.published[monitor] += 1

    def _drop(self, monitor: str) -> None:
        self.dropped[monitor] += 1
        self._drops_unlogged[monitor] += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_INTERVAL_S:
            self._drop_logged_at = now
            log.warning("bus_dropped", dropped=dict(self._drops_unlogged),
                        total_dropped=sum(self.dropped.values()), maxsize=self.maxsize)
            self._drops_unlogged.clear()
        for listener in self.drop_listeners:
            listener(monitor)

    def take_nowait(self, limit: int | None = None) -> list[T]:
        """Everything buffered (up to ``limit``), oldest first, without waiting."""
        buffer = self._buffer
        count = len(buffer) if limit is None else min(limit, len(buffer))
        batch = [buffer.popleft() for _ in range(count)]
        if not buffer:
            self._ready.clear()
        self.delivered.update(map(_monitor_of, batch))
        return batch

    async def take(self, limit: int | None = None) -> list[T]:
        """Wait until at least one signal is buffered, then return a batch of them."""
        while not self._buffer:
            self._ready.clear()
            await self._ready.wait()
        return self.take_nowait(limit)

    # -- delivery acknowledgement ---------------------------------------------------------
    def commit(self, through: int) -> None:
        """The consumer wrote (or deliberately skipped) everything up to ``through`` (a
        :attr:`taken_through` read after taking the batch): wake who waited for it."""
        if through <= self._committed:
            return
        self._committed = through
        waiters = self._waiters
        while waiters and waiters[0][0] <= through:
            fut = heapq.heappop(waiters)[2]
            if not fut.done():
                fut.set_result(None)

    async def _until(self, seq: int) -> None:
        if seq <= self._committed:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._tie), fut))
        await fut

    async def delivered_all(self, monitor: str) -> None:
        """Return once every signal ``monitor`` published so far is written to the feed or
        was dropped (see :attr:`dropped`)."""
        await self._until(self._last.get(monitor, 0))

    async def room(self) -> None:
        """Return once the bus is at most half full (at once if it is): a source with a
        burst to publish waits here, so its data waits on disk instead of being dropped."""
        while len(self._buffer) > self.maxsize // 2:
            await self._until(self._seq - self.maxsize // 2)

    @property
    def total_published(self) -> int:
        return sum(self.published.values())

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())
