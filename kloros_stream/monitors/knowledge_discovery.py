"""knowledge_discovery: documents missing from the knowledge index, and stale documents.

Watches (inotify) the ``docs_dirs`` recursively for ``.md``, ``.rst`` and ``.txt`` files,
the ``index_file`` (format in the contract; written by any program, in place or by
rename) and, for the stale rule, the ``.py`` files of the integration roots, through their
:class:`~kloros_stream.sources.index.SourceIndex` (shared with the other source-tree
monitors: no watcher or walk of its own).

* ``unindexed_doc``: the document's relative path is not in the index, or its SHA-256
  differs from the recorded one. Writing an index that covers it resolves the gap at once.
  While the index file is present but invalid, the last valid index is kept (a missing
  index file is an empty index).
* ``stale_doc``: see :mod:`kloros_stream.analysis.knowledge` for the rule. A document
  crossing the age threshold needs no event: a timer wakes at the earliest such moment.

A path present in two docs dirs is one gap; the first docs dir in the config wins.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from pathlib import Path

from ..analysis.knowledge import (
    SECONDS_PER_DAY,
    CodeIndex,
    index_status,
    stale_code,
    stale_due,
)
from ..config import KnowledgeDiscoveryConfig
from ..core.identity import iso
from ..sources.files import file_signature, walk_files
from ..sources.index import FileRecord, SourceSpec, Subscription
from ..sources.pacing import paced
from ..sources.watcher import FileEvent, FileEventKind, RecursiveWatcher
from .base import Monitor, MonitorContext
from .knowledge_files import (
    Doc,
    IndexFileFollower,
    doc_tokens,
    is_code_path,
    is_doc_path,
    read_doc,
)
from .ledger import GapLedger

MAX_CHANGED_CODE_IN_FACTS = 20
MAX_TIMER_S = 3600.0
"""A pending stale timer re-checks the wall clock at least this often (suspend, clock
jumps); with nothing pending it sleeps until a document or code file changes."""


class KnowledgeDiscoveryMonitor(IndexFileFollower, Monitor[KnowledgeDiscoveryConfig]):
    """Unindexed and stale documents."""

    name = "knowledge_discovery"
    ecosystem = "knowledge"
    config_model = KnowledgeDiscoveryConfig
    reads = ("integration",)

    def __init__(self, ctx: MonitorContext) -> None:
        super().__init__(ctx)
        cfg = self.cfg
        self.docs_dirs = [Path(os.path.abspath(d)) for d in cfg.docs_dirs]
        self.index_file = Path(os.path.abspath(cfg.index_file))
        integration = ctx.config.monitors.integration
        self.exclude = list(integration.exclude)
        self.spec = SourceSpec.of(ctx.config, integration.roots, integration.exclude)
        self.stale_after_s = cfg.stale_after_days * SECONDS_PER_DAY
        self.docs: dict[str, dict[int, Doc]] = {}
        self.index: dict[str, str] = {}
        self.index_usable = True
        self.code = CodeIndex()
        self.by_token: dict[str, set[str]] = defaultdict(set)
        self.ledger = GapLedger(ctx, self.ecosystem)
        self.due: dict[str, float] = {}
        """Documents the stale rule will flag once they are old enough, and when."""
        self._timer_changed = asyncio.Event()
        self._index_seen_valid = False
        self._index_reload: asyncio.TimerHandle | None = None

    # -- run ------------------------------------------------------------------------------
    async def run(self) -> None:
        assert self.ctx.sources is not None
        async with self.ctx.sources.subscribe(
                self.spec, self.watch_error, status=self.ctx.status) as sub:
            await self._run(sub)

    async def _run(self, sub: Subscription) -> None:
        started = time.monotonic()
        self.load_index()
        docs = await asyncio.to_thread(self._initial_docs)
        for (idx, rel), doc in docs.items():
            self._put_doc(idx, rel, doc)
        async for root, event, record in paced(await sub.initial()):
            if is_code_path(event.path) and record is not None:
                rel = event.path.relative_to(root).as_posix()
                self.code.add_file(str(root), rel, record.mtime_ns / 1e9)
        for rel in sorted(self.docs):
            self.evaluate(rel)
        if not self.index_usable:  # cannot judge: keep what the last run had open
            self.ledger.keep("unindexed_doc")
        self.ledger.reconcile()
        self._update_details()
        self.ctx.status.details["initial_scan_s"] = round(time.monotonic() - started, 3)
        self.log.info(
            "knowledge_scan_done",
            docs=len(self.docs),
            indexed=len(self.index),
            code_files=len(self.code.files),
            open_gaps=len(self.ledger.open),
        )
        if self.ctx.one_shot:
            return
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._follow_index())
                tg.create_task(self._stale_timer())
                for idx, directory in enumerate(self.docs_dirs):
                    tg.create_task(self._follow_docs(idx, directory))
                tg.create_task(self._follow_code(sub))
        finally:
            self.ledger.flush()

    def _initial_docs(self) -> dict[tuple[int, str], Doc]:
        """Runs in a thread: hash every document."""
        docs: dict[tuple[int, str], Doc] = {}
        for idx, directory in enumerate(self.docs_dirs):
            for path in walk_files(directory, self.exclude, is_doc_path):
                if (doc := read_doc(path, directory)) is not None:
                    docs[(idx, path.relative_to(directory).as_posix())] = doc
        return docs

    def _update_details(self) -> None:
        self.ctx.status.details.update(
            {
                "docs": len(self.docs),
                "indexed": len(self.index),
                "index_file": str(self.index_file),
                "code_files": len(self.code.files),
            }
        )

    # -- documents ------------------------------------------------------------------------
    def _put_doc(self, idx: int, rel: str, doc: Doc) -> None:
        self.docs.setdefault(rel, {})[idx] = doc
        for token in doc_tokens(doc.mentions):
            self.by_token[token].add(rel)

    def _drop_doc(self, idx: int, rel: str) -> None:
        versions = self.docs.get(rel)
        if versions is None or versions.pop(idx, None) is None:
            return
        if not versions:
            del self.docs[rel]
        # by_token may keep stale entries: evaluate() of a rel without docs is harmless

    def _active(self, rel: str) -> Doc | None:
        versions = self.docs.get(rel)
        return versions[min(versions)] if versions else None

    def on_doc_event(self, idx: int, directory: Path, event: FileEvent) -> set[str]:
        """Apply one watcher event; returns the relative paths to re-evaluate."""
        if event.kind is FileEventKind.MODIFIED:
            return set()
        touched: set[str] = set()
        if event.kind is FileEventKind.MOVED and event.src is not None:
            src_rel = event.src.relative_to(directory).as_posix()
            self._drop_doc(idx, src_rel)
            touched.add(src_rel)
        rel = event.path.relative_to(directory).as_posix()
        touched.add(rel)
        if event.kind is FileEventKind.DELETED:
            self._drop_doc(idx, rel)
            return touched
        current = self.docs.get(rel, {}).get(idx)
        if (
            event.kind is FileEventKind.EXISTING
            and current is not None
            and current.signature == file_signature(event.path)
        ):
            return set()
        doc = read_doc(event.path, directory)
        if doc is None:
            self._drop_doc(idx, rel)
        else:
            self._put_doc(idx, rel, doc)
        return touched

    async def _follow_docs(self, idx: int, directory: Path) -> None:
        async with RecursiveWatcher(
            directory, exclude=self.exclude, include=is_doc_path, on_error=self.watch_error
        ) as watcher:
            async for event in watcher:
                touched = self.on_doc_event(idx, directory, event)
                if event.kind is not FileEventKind.EXISTING:
                    self.ctx.touch(event.observed_at)
                for rel in sorted(touched):
                    self.evaluate(rel, event.observed_at)
                if touched:
                    self._update_details()
                    self._timer_changed.set()

    # -- code -----------------------------------------------------------------------------
    def on_code_event(
        self, root: Path, event: FileEvent, record: FileRecord | None = None
    ) -> set[str]:
        """Apply one code file event; returns the docs that may name it."""
        if event.kind is FileEventKind.MODIFIED:
            return set()  # CLOSED follows when the writer is done
        names = set()
        if event.kind is FileEventKind.MOVED and event.src is not None:
            self.code.remove_file(str(root), event.src.relative_to(root).as_posix())
            names.add(event.src.name)
        rel = event.path.relative_to(root).as_posix()
        names.add(event.path.name)
        if event.kind is FileEventKind.DELETED:
            self.code.remove_file(str(root), rel)
        else:
            if record is not None and record.path == str(event.path):
                mtime: float | None = record.mtime_ns / 1e9
            else:
                try:
                    mtime = event.path.stat().st_mtime_ns / 1e9
                except OSError:
                    mtime = None
            if mtime is None:
                self.code.remove_file(str(root), rel)
            else:
                if self.code.files.get((str(root), rel)) == mtime:
                    return set()  # nothing new for this file
                self.code.add_file(str(root), rel, mtime)
        return set().union(*(self.by_token.get(n, set()) for n in names))

    async def _follow_code(self, sub: Subscription) -> None:
        async for root, event, record in sub.live():
            if not (is_code_path(event.path) or (event.src and is_code_path(event.src))):
                continue
            docs = self.on_code_event(root, event, record)
            for rel in sorted(docs):
                self.evaluate(rel, event.observed_at)
            if docs:
                self._timer_changed.set()


    # -- the rules ------------------------------------------------------------------------
    def _named_code(self, doc: Doc) -> dict[tuple[str, str], float]:
        return {key: self.code.files[key] for key in self.code.referenced(doc.mentions)}

    def evaluate(self, rel: str, observed_at: float | None = None) -> None:
        """Open or resolve both gaps of one document."""
        doc = self._active(rel)
        self.due.pop(rel, None)
        if doc is None:
            for gap_type in ("unindexed_doc", "stale_doc"):
                self.ledger.clear(
                    gap_type, rel, observed_at=observed_at, gap_reason=f"{rel} was removed"
                )
            self.ledger.save()
            return
        self._evaluate_index(rel, doc, observed_at)
        self._evaluate_stale(rel, doc, observed_at, time.time())
        self.ledger.save()

    def _evaluate_index(self, rel: str, doc: Doc, observed_at: float | None) -> None:
        if not self.index_usable:
            return
        status = index_status(rel, doc.sha256, self.index)
        if status is None:
            self.ledger.clear(
                "unindexed_doc",
                rel,
                observed_at=observed_at,
                gap_reason=f"{rel} is in the knowledge index",
            )
            return
        reason = (
            f"{rel} is not in the knowledge index {self.index_file}"
            if status == "new"
            else f"{rel} changed since it was indexed"
        )
        self.ledger.set(
            "unindexed_doc",
            rel,
            gap_category="knowledge",
            gap_reason=reason,
            observed_at=observed_at,
            path=str(doc.path),
            docs_dir=str(doc.docs_dir),
            status=status,
        )

    def _evaluate_stale(self, rel: str, doc: Doc, observed_at: float | None, now: float) -> None:
        named = self._named_code(doc) if doc.mentions else {}
        changed = stale_code(doc.mtime, named, now, self.stale_after_s)
        if (due := stale_due(doc.mtime, named, now, self.stale_after_s)) is not None:
            self.due[rel] = due
        if not changed:
            self.ledger.clear(
                "stale_doc",
                rel,
                observed_at=observed_at,
                gap_reason=f"{rel} is up to date with the code it names",
            )
            return
        days = self.cfg.stale_after_days
        self.ledger.set(
            "stale_doc",
            rel,
            gap_category="knowledge",
            observed_at=observed_at,
            gap_reason=(
                f"{rel} has not changed for over {days:g} days while "
                f"{len(changed)} code file(s) it names did"
            ),
            path=str(doc.path),
            doc_modified_at=iso(doc.mtime),
            changed_code=changed[:MAX_CHANGED_CODE_IN_FACTS],
            stale_after_days=days,
        )

    def next_stale_due(self) -> float | None:
        """The earliest moment a document becomes stale without any further event."""
        return min(self.due.values(), default=None)

    async def _stale_timer(self) -> None:
        """Sleep until the next document ages into staleness (or the docs change)."""
        while True:
            self._timer_changed.clear()
            now = time.time()
            due = self.next_stale_due()
            timeout = None if due is None else min(MAX_TIMER_S, max(0.0, due - now))
            try:
                await asyncio.wait_for(self._timer_changed.wait(), timeout)
                continue
            except TimeoutError:
                pass
            now = time.time()
            for rel in sorted(r for r, d in self.due.items() if d <= now):
                self.evaluate(rel)
