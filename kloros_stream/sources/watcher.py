"""Recursive directory watcher on plain ``asyncinotify.Inotify``, as an async event stream.

Guarantees and choices:

* A directory's watch is added *before* it is scanned, and a new or moved-in directory is
  watched and scanned before the next raw inotify event is handled, so files created before
  its watch existed are reported (as CREATED) and none is reported twice.
* ``IN_Q_OVERFLOW`` triggers a full rescan: EXISTING for every current file, DELETED for
  known files that vanished, stale watches dropped.
* A directory renamed *within* the tree is remapped: its watches are kept and every known
  file under it is reported as MOVED (``src`` = old path); it is then rescanned, so files
  the ``include`` predicate only accepts at the new location appear as CREATED.
* A missing root is not an error: the nearest existing ancestor is watched until the root
  appears, which is then scanned (EXISTING). A root deleted or moved away later produces
  DELETED for its files and the wait starts again.
* ``ENOSPC`` from ``inotify_add_watch`` (the ``fs.inotify.max_user_watches`` limit) is
  logged as ``inotify_watch_limit`` and passed to ``on_error``; that directory is skipped
  (neither scanned nor descended), the watches already held are kept.
* State is the set of known file paths only.
* Directories are scanned for :data:`SCAN_SLICE_S` at most between two turns of the event
  loop; :meth:`RecursiveWatcher.batches` hands the events over in lists (a scan's files a
  few thousand at a time), :meth:`RecursiveWatcher.events` one at a time.

This module is the asyncio face (the inotify fd read in the event loop); the state machine
is :class:`~.watch_tree.WatchTree`, its bookkeeping (known files, watch descriptors) is in
:mod:`.watch_state`, and the event model in :mod:`.file_events` (re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from asyncinotify import Event, Inotify

from .file_events import FileEvent, FileEventKind
from .watch_tree import WatchTree

__all__ = ["MOVE_PAIR_TIMEOUT_S", "FileEvent", "FileEventKind", "RecursiveWatcher"]

MOVE_PAIR_TIMEOUT_S = 0.05
"""How long an unpaired MOVED_FROM waits for its MOVED_TO before it counts as DELETED."""
_YIELD_EVERY = 64
SCAN_SLICE_S = 0.004
"""Directories are scanned for this long at most between two turns of the event loop."""
SCAN_BATCH_MAX = 4096
"""Events made by a scan at most before they are handed over."""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RecursiveWatcher:
    """Watch ``root`` (recursively unless ``recursive=False``) and stream :class:`FileEvent`.

    ``exclude``: fnmatch globs matched against each path component's name (excluded
    directories are never watched). ``include``: predicate on file paths; only files it
    accepts produce events. ``attrib=True`` also reports IN_ATTRIB (chmod, touch) as
    MODIFIED. ``on_error`` receives a message when the inotify watch limit is hit.
    Iterate once per watcher, inside ``async with``.
    """

    def __init__(
        self,
        root: Path,
        *,
        exclude: Sequence[str] = (),
        include: Callable[[Path], bool] | None = None,
        recursive: bool = True,
        on_error: Callable[[str], None] | None = None,
        attrib: bool = False,
    ) -> None:
        self._tree = WatchTree(
            root,
            exclude=exclude,
            include=include,
            recursive=recursive,
            on_error=on_error,
            attrib=attrib,
        )
        self.root = self._tree.root
        self.stats: dict[str, int] = self._tree.stats
        """``overflows``, ``watch_limit_hits``, ``skipped_dirs``."""
        self._inotify: Inotify | None = None

    async def __aenter__(self) -> RecursiveWatcher:
        self._inotify = Inotify(cache_size=16, sync_timeout=0)
        self._tree.open(self._inotify)
        return self

    async def __aexit__(self, *exc: object) -> None:
        inotify, self._inotify = self._inotify, None
        if inotify is not None:
            # Unregister before closing: a reader left on a recycled fd number would
            # steal another inotify instance's wake-ups.
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(inotify.fd)
            inotify.close()
        self._tree.close()

    def __aiter__(self) -> AsyncIterator[FileEvent]:
        """Initial EXISTING events first, then live events, forever."""
        return self.events()

    def events(self, *, follow: bool = True) -> AsyncIterator[FileEvent]:
        """Like ``__aiter__``; ``follow=False`` stops once the initial scan is delivered
        (for one-shot scans)."""
        if self._inotify is None:
            raise RuntimeError("iterate a RecursiveWatcher inside 'async with'")
        return self._iterate(follow)

    @property
    def idle(self) -> bool:
        """No scan pending and no event queued: the iterator is waiting for inotify."""
        return self._tree.idle

    @property
    def known_files(self) -> frozenset[Path]:
        return self._tree.known_files

    @property
    def watched_dirs(self) -> frozenset[Path]:
        return self._tree.watched_dirs

    @property
    def watch_limit_reached(self) -> bool:
        """``add_watch`` failed with ENOSPC at least once."""
        return self._tree.watch_limit_reached

    def handle_raw_event(self, event: Event, observed_at: float | None = None) -> None:
        """Apply one raw inotify event (public so tests can inject ``Q_OVERFLOW``)."""
        self._tree.handle_raw_event(event, observed_at)

    def batches(self, *, follow: bool = True) -> AsyncIterator[list[FileEvent]]:
        """The same events as :meth:`events`, as lists: everything made since the last
        list (an initial scan hands over a few thousand files at a time)."""
        if self._inotify is None:
            raise RuntimeError("iterate a RecursiveWatcher inside 'async with'")
        return self._batches(follow)

    async def _iterate(self, follow: bool) -> AsyncIterator[FileEvent]:
        since_await = 0
        async for batch in self._batches(follow):
            for event in batch:
                yield event
                since_await += 1
                if since_await >= _YIELD_EVERY:
                    since_await = 0
                    await asyncio.sleep(0)

    async def _batches(self, follow: bool) -> AsyncIterator[list[FileEvent]]:
        tree, out = self._tree, self._tree.out
        while True:
            if out:
                batch = list(out)
                out.clear()
                yield batch
            elif tree.scan_pending:
                # Directories are scanned for SCAN_SLICE_S at most before the loop is
                # handed back (and the files found so far handed over).
                deadline = time.monotonic() + SCAN_SLICE_S
                while tree.scan_pending and len(out) < SCAN_BATCH_MAX:
                    tree.scan_next()
                    if time.monotonic() >= deadline:
                        break
                await asyncio.sleep(0)
            elif tree.rescan_pending:
                tree.finish_rescan()
            elif not follow:
                return
            else:
                event = await self._next_raw()
                if event is None:
                    tree.flush_moves(time.time())
                else:
                    self.handle_raw_event(event, time.time())

    async def _next_raw(self) -> Event | None:
        """The next raw event, or None when a pending MOVED_FROM waited long enough."""
        while True:
            inotify = self._inotify
            if inotify is None:
                raise RuntimeError("RecursiveWatcher was closed")
            event = inotify.sync_get()  # non-blocking (sync_timeout=0)
            if event is not None:
                return event
            timeout = MOVE_PAIR_TIMEOUT_S if self._tree.moves_pending else None
            if not await self._wait_readable(timeout):
                return None

    async def _wait_readable(self, timeout: float | None) -> bool:
        """Wait until the inotify fd is readable; False on timeout."""
        inotify = self._inotify
        assert inotify is not None
        fd = inotify.fd
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        try:
            if timeout is None:
                await ready
                return True
            done, _ = await asyncio.wait({ready}, timeout=timeout)
            return bool(done)
        finally:
            if self._inotify is inotify:
                loop.remove_reader(fd)
