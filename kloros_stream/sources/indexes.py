"""The source indexes of a process, shared by spec (:class:`SourceIndexes`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..checkpoint import CheckpointStore
from .index import SourceIndex, Subscription
from .index_journal import IndexJournal, drained
from .records import SourceSpec


class SourceIndexes:
    """The indexes of a process (or of one monitor in unit tests), shared by spec.

    ``one_shot`` (the ``scan`` command): each index scans once, watches and saves nothing,
    and is kept for the registry's life, so every subscriber of a spec shares one scan."""

    def __init__(self, store: CheckpointStore | None = None, *, one_shot: bool = False,
                 on_progress: Callable[[SourceIndex], None] | None = None) -> None:
        self.store = store
        self.one_shot = one_shot
        self.on_progress = on_progress
        """Given to every index this registry starts (``scan``'s progress bar)."""
        self.indexes: dict[SourceSpec, tuple[SourceIndex, asyncio.Task[None]]] = {}
        self.retired: dict[str, int] = {}
        """Counters of indexes already stopped, so totals in /metrics never go down."""

    def _journal(self, spec: SourceSpec) -> IndexJournal | None:
        if self.one_shot or self.store is None or not self.store.writable:
            return None
        return IndexJournal(self.store.directory / "sources", spec, self.store)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, spec: SourceSpec, on_error: Callable[[str], None] | None = None,
        status: Any = None,
    ) -> AsyncIterator[Subscription]:
        """Subscribe to the index of ``spec``, starting it if needed; the last subscriber
        to leave stops it."""
        entry = self.indexes.get(spec)
        if entry is None or (entry[1].done() and not self.one_shot):
            index = SourceIndex(spec, self._journal(spec))
            index.on_progress = self.on_progress
            work = index.scan_once() if self.one_shot else index.run()
            task = asyncio.create_task(work, name=f"source-index-{len(self.indexes)}")
            entry = self.indexes[spec] = (index, task)
        index, task = entry
        sub = index.subscribe(on_error, status)
        try:
            if self.one_shot:
                await task  # its failure is every subscriber's
            yield sub
        finally:
            index.unsubscribe(sub)
            if not index.subscribers and not self.one_shot and self.indexes.get(spec) is entry:
                del self.indexes[spec]
                task.cancel()
                # The index's end (cancelled, or the error it failed with) is not the
                # caller's: retrieved, never raised here. asyncio.wait instead of a
                # suppressed ``await task``: the caller cancelled while it waits stays
                # cancelled (its CancelledError propagates, the counters still retired).
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                try:
                    await asyncio.wait([task])
                    await drained()  # a clean stop leaves the journal complete
                finally:
                    for name, n in index.stats.items():
                        if name not in ("files", "watched_dirs"):
                            self.retired[name] = self.retired.get(name, 0) + n

    def totals(self) -> dict[str, int]:
        """Counters summed over every index, running or stopped."""
        out = dict(self.retired)
        for index, _task in self.indexes.values():
            for name, n in index.stats.items():
                out[name] = out.get(name, 0) + n
        return out
