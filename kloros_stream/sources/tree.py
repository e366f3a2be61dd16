"""Several watched source trees as one event stream, with settle timers.

:class:`TreeEvents` merges the :class:`~.watcher.RecursiveWatcher` events of several roots
and tells the initial scans apart from live changes; :func:`scan_once` is the initial scan
alone (one-shot scans); :class:`SettleTimers` turns a file created with content into a
synthetic CLOSED once it has been quiet for a moment (a writer that never closes it).
Used by the integration and module_discovery monitors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol

from .watcher import FileEvent, FileEventKind, RecursiveWatcher

SETTLE_S = 0.25
"""Default quiet time after which a file CREATED with content counts as written (a
synthetic CLOSED), unless its own CLOSED comes first."""


class TreeEvents:
    """File events of several roots (one :class:`RecursiveWatcher` each), merged.

    :meth:`initial` yields the EXISTING events of the initial scans and returns once every
    root's scan has been delivered (its watcher is ``idle`` and everything it produced was
    taken; :meth:`initial_batches`: the same in lists, a root and a few thousand of its
    files at a time); :meth:`live` then yields everything else, in order. :meth:`inject`
    queues a synthetic event (settle timers).
    """

    def __init__(
        self,
        roots: Sequence[Path],
        *,
        exclude: Sequence[str],
        include: Callable[[Path, Path], bool],
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.roots = list(roots)
        self._exclude = list(exclude)
        self._include = include
        self._on_error = on_error
        self._queue: asyncio.Queue[tuple[Path, list[FileEvent] | BaseException]] = (
            asyncio.Queue())
        self._held: deque[tuple[Path, list[FileEvent]]] = deque()
        self._watchers: dict[Path, RecursiveWatcher] = {}
        self._waiting: dict[Path, bool] = {}
        self._settled: set[Path] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()

    def watchers(self) -> list[RecursiveWatcher]:
        """The running watchers, one per root."""
        return list(self._watchers.values())

    def watcher(self, root: Path) -> RecursiveWatcher:
        return RecursiveWatcher(
            root,
            exclude=self._exclude,
            include=lambda p: self._include(root, p),
            on_error=self._on_error,
        )

    async def __aenter__(self) -> TreeEvents:
        await self._stack.__aenter__()
        try:
            for root in self.roots:
                watcher = await self._stack.enter_async_context(self.watcher(root))
                self._watchers[root] = watcher
                self._waiting[root] = False
                self._tasks.append(asyncio.create_task(self._pump(root, watcher)))
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self._stack.aclose()

    async def _pump(self, root: Path, watcher: RecursiveWatcher) -> None:
        iterator = watcher.batches()
        try:
            while True:
                self._waiting[root] = True
                batch = await anext(iterator)
                self._waiting[root] = False
                self._queue.put_nowait((root, batch))
        except Exception as err:  # surfaces in the consumer: the monitor crashes
            self._queue.put_nowait((root, err))

    def inject(self, root: Path, event: FileEvent) -> None:
        self._queue.put_nowait((root, [event]))

    def _take(self) -> tuple[Path, list[FileEvent]] | None:
        if self._queue.empty():
            return None
        root, item = self._queue.get_nowait()
        if isinstance(item, BaseException):
            raise item
        return root, item

    async def initial(self) -> AsyncIterator[tuple[Path, FileEvent]]:
        async for root, batch in self.initial_batches():
            for event in batch:
                yield root, event

    async def initial_batches(self) -> AsyncIterator[tuple[Path, list[FileEvent]]]:
        while len(self._settled) < len(self.roots):
            item = self._take()
            if item is None:
                for root, watcher in self._watchers.items():
                    if self._waiting[root] and watcher.idle:
                        self._settled.add(root)
                if len(self._settled) < len(self.roots):
                    await asyncio.sleep(0)  # a pump is between chunks of its scan
                continue
            root, batch = item
            if root in self._settled:
                self._held.append(item)
                continue
            scanned = 0  # the EXISTING events that lead the list belong to the scan
            while scanned < len(batch) and batch[scanned].kind is FileEventKind.EXISTING:
                scanned += 1
            if scanned:
                yield root, batch[:scanned] if scanned < len(batch) else batch
            if scanned < len(batch):
                self._settled.add(root)
                self._held.append((root, batch[scanned:]))

    async def live(self) -> AsyncIterator[tuple[Path, FileEvent]]:
        while self._held:
            root, batch = self._held.popleft()
            for event in batch:
                yield root, event
        while True:
            root, item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            for event in item:
                yield root, event


async def scan_once(
    roots: Sequence[Path], exclude: Sequence[str], include: Callable[[Path, Path], bool]
) -> AsyncIterator[tuple[Path, FileEvent]]:
    """The initial scan of every root, once, without following (one-shot scans)."""
    events = TreeEvents(roots, exclude=exclude, include=include)
    for root in roots:
        async with events.watcher(root) as watcher:
            async for event in watcher.events(follow=False):
                yield root, event


class Injector(Protocol):
    """Where a settle timer's synthetic CLOSED goes (:class:`TreeEvents`, a subscription)."""

    def inject(self, root: Path, event: FileEvent) -> None: ...


class SettleTimers:
    """Per-path timers that turn a CREATED-with-content into a synthetic CLOSED once the
    file has been quiet for ``delay`` (a MODIFIED restarts the wait)."""

    def __init__(self, events: Injector | None) -> None:
        self.events = events
        self._timers: dict[Path, tuple[asyncio.TimerHandle, Path, float]] = {}

    def start(self, root: Path, path: Path, observed_at: float, delay: float = SETTLE_S) -> None:
        self.cancel(path)
        handle = asyncio.get_running_loop().call_later(delay, self._fire, path)
        self._timers[path] = (handle, root, observed_at)

    def pending(self, path: Path) -> bool:
        return path in self._timers

    def restart(self, path: Path, delay: float = SETTLE_S) -> None:
        """Still being written: wait ``delay`` again, if a timer is pending for ``path``."""
        entry = self._timers.get(path)
        if entry is not None:
            self.start(entry[1], path, entry[2], delay)

    def cancel(self, path: Path) -> None:
        entry = self._timers.pop(path, None)
        if entry is not None:
            entry[0].cancel()

    def cancel_all(self) -> None:
        for handle, _root, _at in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _fire(self, path: Path) -> None:
        _handle, root, observed_at = self._timers.pop(path)
        if self.events is not None:
            self.events.inject(root, FileEvent(FileEventKind.CLOSED, path, observed_at))


def unique_events(
    found: list[tuple[Path, FileEvent]],
) -> tuple[list[tuple[Path, FileEvent]], list[str]]:
    """A scan's (root, event) pairs, the last one per path (a rescan after an overflow
    may report a file twice), and their paths as strings."""
    last = {str(event.path): i for i, (_root, event) in enumerate(found)}
    if len(last) == len(found):
        return found, list(last)
    return [found[i] for i in last.values()], list(last)
