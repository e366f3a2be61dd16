"""One source index per set of roots: every Python file read, hashed and parsed once.

A :class:`SourceIndex` watches its roots (one :class:`~.watcher.RecursiveWatcher` per root,
so one inotify watch per directory whatever the number of monitors), keeps one
:class:`FileRecord` per module file and fans every file event out to its subscribers with
the record the event produced. A file is (re)loaded on CLOSED, MOVED, an EXISTING whose
``mtime``/size changed, or a CREATED with content once quiet for :data:`SETTLE_S`; a
MODIFIED alone waits. One file is loaded on :data:`PARSE_WORKER`, one thread for the
whole process (CPython 3.11 cannot run two ``ast.parse`` at once in one interpreter); a
large batch (the initial scan) or a very large file goes to parse processes
(:mod:`.parse_processes`), so the event loop never waits for a parse. A load skips the
parse when the content hash is unchanged. Only ``.py`` files are read; other module files
(``.so``, ``.pyi``, ...) are recorded by their stat alone. What a record holds and how one
file is loaded: :mod:`.records`.

Records are checkpointed incrementally (:mod:`.index_journal`): a warm start with nothing
changed stats every file and parses none. Subscribers (integration, module_discovery,
capability_discovery, knowledge_discovery) take the records from here and never parse a
file themselves. :class:`~.indexes.SourceIndexes` shares one index between the subscribers of the
same roots and settings, starts it with the first and stops it with the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ..progress import ScanProgress
from .files import root_of
from .index_journal import IndexJournal, Update
from .parse_processes import LARGE_FILE_BYTES, PROCESS_MIN_FILES, load_in_processes, load_large
from .records import (
    FileRecord,
    Job,
    Loaded,
    SourceSpec,
    file_size,
    is_module_file,
    load_batch,
    load_record,
    stat_unchanged,
    unchanged,
)
from .tree import SettleTimers, TreeEvents, scan_once, unique_events
from .watcher import FileEvent, FileEventKind

log = structlog.get_logger(__name__)

PARSE_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-parse")
"""The one thread that reads and parses source files, for every index of the process."""
BATCH_FILES = 256
"""Files loaded per worker job during an initial scan."""
Item = tuple[Path, FileEvent, "FileRecord | None"]


@dataclass(eq=False)
class Subscription:
    """One subscriber's view: :meth:`initial` (every current record, once the index has
    scanned), then :meth:`live` (every later event, in order, with its record)."""

    index: SourceIndex
    on_error: Callable[[str], None] | None = None
    queue: asyncio.Queue[Item | BaseException] = field(default_factory=asyncio.Queue)
    started: bool = False
    status: Any = None
    """The subscribing monitor's status: it shows the index's initial-scan progress."""

    async def initial(self) -> list[Item]:
        """EXISTING items for every current file (sorted by path), once scanned."""
        await self.index.ready.wait()
        if self.index.failure is not None:
            raise self.index.failure
        self.started = True
        items = self.index.snapshot()
        if all(sub.started for sub in self.index.subscribers):
            self.index.forget_snapshot()  # held by the subscribers folding it, no longer
        return items

    async def live(self) -> AsyncIterator[Item]:
        while True:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def inject(self, root: Path, event: FileEvent) -> None:
        """Queue a synthetic event for this subscriber only (its own settle timers)."""
        self.queue.put_nowait((root, event, self.index.records.get(str(event.path))))

    def record(self, path: Path | str) -> FileRecord | None:
        return self.index.records.get(str(path))

    async def load(self, path: Path) -> FileRecord | None:
        """The file's current record, loaded now by the index if it changed on disk."""
        return await self.index.load(path)


class SourceIndex:
    """The records of one set of roots, and the subscribers that follow them."""

    def __init__(self, spec: SourceSpec, journal: IndexJournal | None) -> None:
        self.spec = spec
        self.journal = journal
        self.records: dict[str, FileRecord] = {}
        self._roots = {str(root): root for root in spec.roots}
        """A record's root (a string) -> its Path."""
        self._items: list[Item] | None = None
        self.subscribers: list[Subscription] = []
        self.ready = asyncio.Event()
        self.counters: dict[str, int] = {
            "files_parsed": 0, "files_reused": 0, "too_large": 0, "unreadable": 0,
            "analysis_failed": 0, "syntax_errors": 0,
        }
        self.events: TreeEvents | None = None
        self.settle = SettleTimers(None)
        self.initial_scan_s: float | None = None
        """Walk, stat and load (not the journal's load)."""
        self.journal_load_s: float | None = None
        self.failure: BaseException | None = None
        self.progress: dict[str, Any] | None = None
        self.on_progress: Callable[[SourceIndex], None] | None = None
        """Called with the index whenever its initial-scan progress changes."""
        self._scan_progress = ScanProgress(self._publish_progress,
                                           log.bind(roots=[str(r) for r in spec.roots]))

    # -- subscribers ----------------------------------------------------------------------
    def subscribe(self, on_error: Callable[[str], None] | None = None,
                  status: Any = None) -> Subscription:
        """A new subscriber; ``status`` (its monitor's) gets the initial-scan progress."""
        sub = Subscription(self, on_error, status=status)
        if status is not None and self.progress is not None:
            status.progress = self.progress
        self.subscribers.append(sub)
        return sub

    def _publish_progress(self, progress: dict[str, Any]) -> None:
        self.progress = progress
        for sub in self.subscribers:
            if sub.status is not None:
                sub.status.progress = progress
        if self.on_progress is not None:
            self.on_progress(self)

    def unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self.subscribers.remove(sub)

    def snapshot(self) -> list[Item]:
        """EXISTING items of every record, sorted by path; built once per state of the
        index and shared by the subscribers that join in that state."""
        if self._items is None:
            now = time.time()
            self._items = [
                (self._roots[record.root], FileEvent(FileEventKind.EXISTING, Path(key), now),
                 record)
                for key, record in sorted(self.records.items())
            ]
        return self._items

    def forget_snapshot(self) -> None:
        """Drop the shared snapshot (every subscriber has taken it): 20 k events and
        paths are not kept for a subscriber that may never come."""
        self._items = None

    def _fan_out(self, item: Item | BaseException) -> None:
        for sub in self.subscribers:
            if sub.started or isinstance(item, BaseException):
                sub.queue.put_nowait(item)

    def _watch_error(self, message: str) -> None:
        log.error("source_watch_error", error=message)
        for sub in self.subscribers:
            if sub.on_error is not None:
                sub.on_error(message)

    @property
    def stats(self) -> dict[str, int]:
        """Counters, the watchers' own (inotify overflows, ...) included."""
        out = dict(self.counters)
        out["files"] = len(self.records)
        if self.events is not None:
            for watcher in self.events.watchers():
                for name, n in watcher.stats.items():
                    out[f"watcher_{name}"] = out.get(f"watcher_{name}", 0) + n
            out["watched_dirs"] = sum(len(w.watched_dirs) for w in self.events.watchers())
        return out

    # -- the index's task -----------------------------------------------------------------
    async def run(self) -> None:
        """Scan, then follow the roots until cancelled; an error reaches every subscriber."""
        try:
            loading = self._load_journal()
            async with TreeEvents(self.spec.roots, exclude=self.spec.exclude,
                                  include=is_module_file, on_error=self._watch_error) as events:
                self.events = events
                self.settle = SettleTimers(events)
                await self._initial(events, loading)
                async for root, event in events.live():
                    await self._handle(root, event)
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            self.failure = err
            self.ready.set()
            self._fan_out(err)
            raise
        finally:
            self.settle.cancel_all()

    async def scan_once(self) -> None:
        """The initial scan alone, no watching, nothing saved (one-shot ``scan``)."""
        paths = [(root, ev.path) async for root, ev in scan_once(
            self.spec.roots, self.spec.exclude, is_module_file)]
        await self._load_all(paths, gone=set())
        self.ready.set()

    def _load_journal(self) -> asyncio.Future[dict[str, FileRecord]] | None:
        """The saved records, loaded on the parse thread while the roots are walked."""
        journal = self.journal
        if journal is None:
            return None

        def load() -> dict[str, FileRecord]:
            started = time.monotonic()
            try:
                return journal.load()
            finally:
                self.journal_load_s = round(time.monotonic() - started, 3)

        return asyncio.get_running_loop().run_in_executor(PARSE_WORKER, load)

    async def _initial(
        self, events: TreeEvents, loading: asyncio.Future[dict[str, FileRecord]] | None
    ) -> None:
        started = time.monotonic()
        was_enabled = gc.isenabled()
        gc.disable()  # the walk and the journal make many long-lived objects, no cycles
        try:
            found: list[tuple[Path, FileEvent]] = []
            async for root, batch in events.initial_batches():
                found.extend([(root, event) for event in batch])
            if loading is not None:
                self.records = await loading
        finally:
            if was_enabled:
                gc.enable()
        found, keys = unique_events(found)
        gone = set(self.records).difference(keys)
        await self._load_all([(root, event.path) for root, event in found], gone, keys)
        self._items = self._scanned(found, keys)
        self.initial_scan_s = round(time.monotonic() - started, 3)
        log.info("source_index_scanned", roots=[str(r) for r in self.spec.roots],
                 seconds=self.initial_scan_s, journal_load_s=self.journal_load_s, **self.stats)
        self.ready.set()

    def _scanned(self, found: list[tuple[Path, FileEvent]], keys: list[str]) -> list[Item]:
        """The first :meth:`snapshot`, of the scan's own events (no path made again)."""
        records = self.records
        order = sorted(range(len(keys)), key=keys.__getitem__)
        return [(*found[i], records[keys[i]]) for i in order if keys[i] in records]

    async def _load_all(self, found: list[tuple[Path, Path]], gone: set[str],
                        keys: list[str] | None = None) -> None:
        """Load every file found (``keys``: their paths as strings) whose ``mtime``/size
        changed since its saved record: in parse processes for a large batch, on the
        parse thread otherwise. The cyclic GC is paused meanwhile (the scan allocates many
        long-lived objects and no cycles) and the survivors are frozen out of later
        collections."""
        updates: list[Update] = [(key, None) for key in gone]
        for key in gone:
            self._drop(key)
        loop = asyncio.get_running_loop()

        def take(chunk: list[Job], results: list[Loaded]) -> None:
            for _job, (path, record, parsed) in zip(chunk, results, strict=True):
                if self._store(path, record, parsed):
                    updates.append((str(path), record))
            self._scan_progress.advance(len(chunk))

        was_enabled = gc.isenabled()
        gc.disable()
        self._scan_progress.start(len(found))
        try:
            keys = [str(p) for _r, p in found] if keys is None else keys
            previous = [self.records.get(key) for key in keys]
            same = await loop.run_in_executor(PARSE_WORKER, unchanged, keys, previous)
            reused = same.count(True)  # their records stay as they are
            self.counters["files_reused"] += reused
            self._scan_progress.advance(reused)
            stale: list[Job] = [(p, r, prev) for (r, p), prev, s in zip(
                found, previous, same, strict=True) if not s]
            if len(stale) >= PROCESS_MIN_FILES:
                in_processes, on_thread = stale, []
            else:  # a few files: only the large ones are worth a process
                in_processes = [j for j in stale if self._is_large(j[0])]
                on_thread = [j for j in stale if j not in in_processes]
            if in_processes:
                await load_in_processes(in_processes, self.spec, PARSE_WORKER, take)
            for start in range(0, len(on_thread), BATCH_FILES):
                chunk = on_thread[start:start + BATCH_FILES]
                take(chunk, await loop.run_in_executor(
                    PARSE_WORKER, load_batch, chunk, self.spec))
            self._scan_progress.finish()
        finally:
            if was_enabled:
                gc.enable()
            gc.freeze()
        self._save(updates)

    def _drop(self, key: str) -> bool:
        if self.records.pop(key, None) is None:
            return False
        self._items = None
        return True

    def _store(self, path: Path, record: FileRecord | None, parsed: bool) -> bool:
        """Keep a load result; True if the record changed (to be saved)."""
        key = str(path) if record is None else record.path  # one string for both maps
        old = self.records.get(key)
        if record is None:
            return self._drop(key)
        if record is not old:
            self.records[key] = record
            self._items = None
        if parsed:
            self.counters["files_parsed"] += 1
            if record.error is not None:
                self.counters["syntax_errors"] += 1
        elif record is old:
            self.counters["files_reused"] += 1
        if record.skipped and record is not old:
            self.counters[record.skipped] += 1
            log.warning("source_file_skipped", path=key, reason=record.skipped,
                        detail=record.detail, max_file_bytes=self.spec.max_file_bytes)
        return record is not old

    def _save(self, updates: list[Update]) -> None:
        if self.journal is not None and updates:
            self.journal.append(updates)

    async def load(self, path: Path, *, trust_stat: bool = True) -> FileRecord | None:
        """Load one file (on the parse thread; a very large one in a parse process) and
        keep the result."""
        root = root_of(path, self.spec.roots)
        if root is None:
            return None
        previous = self.records.get(str(path))
        if self._is_large(path) and not (trust_stat and stat_unchanged(path, previous)):
            _path, record, parsed = await load_large(path, root, previous, self.spec, PARSE_WORKER)
        else:
            record, parsed = await asyncio.get_running_loop().run_in_executor(
                PARSE_WORKER, lambda: load_record(path, root, previous, self.spec,
                                                  trust_stat=trust_stat))
        if self._store(path, record, parsed):
            self._save([(str(path), record)])
        return record

    def _is_large(self, path: Path) -> bool:
        """A ``.py`` file big enough to parse in a process (and not too big to read)."""
        return path.name.endswith(".py") and (
            LARGE_FILE_BYTES <= file_size(path) <= self.spec.max_file_bytes)

    def _forget(self, path: Path) -> None:
        if self._drop(str(path)):
            self._save([(str(path), None)])

    async def _handle(self, root: Path, event: FileEvent) -> None:
        kind, path = event.kind, event.path
        record: FileRecord | None = None
        if kind is FileEventKind.CLOSED:
            self.settle.cancel(path)
            record = await self.load(path, trust_stat=False)
        elif kind is FileEventKind.EXISTING:
            record = await self.load(path)
        elif kind is FileEventKind.CREATED:
            if file_size(path) > 0:
                self.settle.start(root, path, event.observed_at)
            record = self.records.get(str(path))
        elif kind is FileEventKind.MOVED:
            if event.src is not None:
                self.settle.cancel(event.src)
                self._forget(event.src)
            record = await self.load(path, trust_stat=False)
        elif kind is FileEventKind.DELETED:
            self.settle.cancel(path)
            self._forget(path)
        else:  # MODIFIED: the writer is not done; wait for CLOSED (or the settle timer)
            self.settle.restart(path)
            record = self.records.get(str(path))
        self._fan_out((root, event, record))

