"""The process heap once a monitor has built its level (an initial scan, a warm start).

Two things are done then. What was built lives long, so it is frozen out of the cyclic
collector's passes (:func:`gc.freeze`): a full pass over a 20 k-file tree's state would
hold the event loop for hundreds of milliseconds, again and again. And what the build
freed (parse results, a journal's frames, an unpickled fold's buffers) is handed back to
the operating system with glibc's ``malloc_trim``: without it the freed pages stay in
the process (at a 10 k-file warm start, ~9 MiB of its RSS). The trim runs once the
levels have stopped arriving for :data:`TRIM_DELAY_S`, on a thread: it holds malloc's
arena locks while it walks the free chunks, so the event loop waits only where it calls
``malloc`` meanwhile (a 110 MB fragmented heap: 40-60 ms at worst, once per settle). A
level built while a trim runs is trimmed again after it. Where the C library has no
``malloc_trim`` (musl, macOS), nothing is trimmed.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
from collections.abc import Callable

import structlog

log = structlog.get_logger("kloros_stream.heap")

TRIM_DELAY_S = 1.0
"""Quiet time after the last level was built before the heap is trimmed."""


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


def rss_bytes() -> int | None:
    """This process's resident set size (Linux), or None."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class HeapSettler:
    """Called each time a monitor's level is built: freezes the heap's objects at once,
    and trims the heap once no level has arrived for :attr:`delay_s`. One task does the
    waiting and the trimming; :meth:`close` (at shutdown) ends it and any later call only
    freezes."""

    def __init__(self, delay_s: float = TRIM_DELAY_S) -> None:
        self.delay_s = delay_s
        self.trim = _malloc_trim()
        self.trims = 0
        self.released_bytes = 0
        self.closed = False
        self._due = 0.0
        self._task: asyncio.Task[None] | None = None

    def level_built(self) -> None:
        gc.freeze()
        if self.trim is None or self.closed:
            return
        loop = asyncio.get_running_loop()
        self._due = loop.time() + self.delay_s
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._settle(), name="heap-trim")

    async def _settle(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if (wait := self._due - loop.time()) > 0:
                await asyncio.sleep(wait)  # the due time may have moved meanwhile
                continue
            started = loop.time()
            await self.trim_now()
            if self._due <= started:
                return  # no level arrived during the trim

    async def wait_idle(self) -> None:
        """Until no trim is pending or running (for tests)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def trim_now(self) -> int:
        """Trim the heap (on a thread); returns the RSS it released, in bytes."""
        if self.trim is None:
            return 0
        before = rss_bytes()
        await asyncio.to_thread(self.trim, 0)
        after = rss_bytes()
        released = max(0, before - after) if before is not None and after is not None else 0
        self.trims += 1
        self.released_bytes += released
        log.info("heap_trimmed", released_mib=round(released / 2**20, 1),
                 rss_mib=None if after is None else round(after / 2**20, 1))
        return released

    def close(self) -> None:
        """No trim from now on (the one pending or running is cancelled)."""
        self.closed = True
        if self._task is not None:
            self._task.cancel()
