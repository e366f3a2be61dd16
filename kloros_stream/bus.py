"""The in-process signal bus: bounded, drop-oldest, never blocks a publisher.

Publishers call :meth:`SignalBus.publish` (plain, synchronous, O(1)); the single consumer
awaits :meth:`SignalBus.take` for a batch. When the buffer is full the oldest signal is
dropped and counted against the monitor that published it. Publish only from the event
loop's thread; a worker thread hands its signals over with ``loop.call_soon_threadsafe``.

The hot path counts only drops; ``delivered`` is counted per batch (in C, by
``Counter.update``) and ``published`` is derived: delivered + dropped + still buffered.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from operator import attrgetter
from typing import Generic, Protocol, TypeVar


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
        self.delivered: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()

    @property
    def depth(self) -> int:
        return len(self._buffer)

    def publish(self, item: T) -> None:
        """Enqueue ``item``; if the bus is full, drop (and count) the oldest one."""
        buffer = self._buffer
        if len(buffer) >= self.maxsize:
            self.dropped[buffer.popleft().monitor] += 1
        elif not buffer:
            self._ready.set()  # the consumer waits only on an empty buffer
        buffer.append(item)

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

    @property
    def published(self) -> Counter[str]:
        """Signals published per monitor: delivered + dropped + still buffered."""
        out = self.delivered + self.dropped
        out.update(map(_monitor_of, self._buffer))
        return out

    @property
    def total_published(self) -> int:
        return sum(self.delivered.values()) + self.total_dropped + len(self._buffer)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())
