"""integration monitor: orphaned queues and syntax errors in the source trees.

The files come from the :class:`~kloros_stream.sources.index.SourceIndex` of the
integration roots: it reads, hashes and parses each ``.py`` file once per change (a CLOSED,
a MOVED, a CREATED with content once quiet; never a MODIFIED alone) and hands over the
file's flows. This monitor keeps them in an incremental :class:`FlowIndex` and, after each
event, publishes only the orphan changes it caused. Code is never imported.

The checkpoint keeps the gaps already announced (the index checkpoints the files): a
restart re-parses only files changed while the service was down and announces only what
changed. Checkpoint writes are coalesced by :class:`~kloros_stream.monitors.ledger.Debouncer`.
A clean stop saves the flow index too (:class:`~kloros_stream.sources.folds.FoldCheckpoint`):
the next start takes it instead of folding every record when no file changed meanwhile.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..analysis.flow_evidence import evidence_line
from ..analysis.flow_index import Channel, ChannelKind, FlowIndex, ProducerSite
from ..analysis.flows import FileFlows
from ..analysis.source_facts import DamagedFacts
from ..config import IntegrationMonitorConfig
from ..sources.folds import FoldCheckpoint
from ..sources.index import FileRecord, Item, SourceSpec, Subscription
from ..sources.index_journal import spec_key
from ..sources.interpreter import SyntaxConfirmer
from ..sources.pacing import paced
from ..sources.watcher import FileEvent, FileEventKind
from .base import Monitor, MonitorContext
from .integration_state import CHECKPOINT, Evidence, announced_to_json, load_announced
from .ledger import Debouncer

RECONCILE_PART = 16
"""Channels evaluated or reconciled at once at the initial scan (:func:`paced` hands the
event loop back between parts)."""
SAVE_DELAY_S = 2.0
"""Checkpoint writes are coalesced over this window (and done on exit)."""
MAX_FACT_ITEMS = 10
MAX_CODE_LINES = 5
"""Producing statements quoted in an orphaned_queue question's facts."""
_STATS = {"parsed": "files_parsed", "reused": "files_reused", "too_large": "too_large",
          "unreadable": "unreadable", "analysis_failed": "analysis_failed",
          "errors": "syntax_errors"}


# -- the monitor ---------------------------------------------------------------------------
class IntegrationMonitor(Monitor[IntegrationMonitorConfig]):
    """Orphaned queues/topics (``orphaned_queue``) and unparseable files (``syntax_error``)."""

    name = "integration"
    ecosystem = "architecture"
    config_model = IntegrationMonitorConfig
    reads = ("capability_discovery.python",)

    def __init__(self, ctx: MonitorContext) -> None:
        super().__init__(ctx)
        cfg = self.cfg
        self.roots = [Path(os.path.abspath(r)) for r in cfg.roots]
        self._root_prefixes = sorted((os.path.join(r, "") for r in self.roots), key=len,
                                     reverse=True)
        self.spec = SourceSpec.of(ctx.config, cfg.roots, cfg.exclude)
        self.index = FlowIndex(prefix_match=cfg.prefix_match)
        self.files: dict[str, FileRecord] = {}
        """Absolute path -> the record last applied (its flows are in :attr:`index`)."""
        self.announced_orphans: set[Channel] = set()
        self.announced_errors: dict[str, str] = {}
        """Absolute path -> gap name of announced syntax errors."""
        self.evidence = Evidence()  # the producing statements announced per orphan
        self.confirmer = SyntaxConfirmer(ctx.config.monitors.capability_discovery.python)
        """Confirms a syntax error with the watched system's interpreter (H10b)."""
        self.saver = Debouncer(SAVE_DELAY_S, self._snapshot, self._write, self.log,
                               delivered=ctx.delivered)
        self.sub: Subscription | None = None
        self.folds = FoldCheckpoint(ctx.checkpoints, "flow_index",
                                    f"{spec_key(self.spec)}:{cfg.prefix_match}", code=(__name__,))
        self._folded = False  # the initial scan is done: the index is the files' fold
        self.fold_restored = False  # this start took the saved index instead of folding

    @property
    def stats(self) -> dict[str, int]:
        """The source index's counters, under this monitor's historical names."""
        counters = self.sub.index.counters if self.sub is not None else {}
        return {mine: counters.get(theirs, 0) for mine, theirs in _STATS.items()}

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        if not self.ctx.one_shot:
            self._load_checkpoint()
        assert self.ctx.sources is not None
        async with self.ctx.sources.subscribe(
                self.spec, self.watch_error, status=self.ctx.status) as sub:
            self.sub = sub
            try:
                await self._initial(sub)
                if self.ctx.one_shot:
                    return
                async for _root, event, record in sub.live():
                    self._folded = False  # an error inside leaves no state to save
                    self._handle(event, record)
                    self._folded = True
            finally:
                if not self.ctx.one_shot:
                    self.saver.flush()
                    if self._folded:
                        self.folds.save([self.index], self.files)
                    self.index, self.files = FlowIndex(), {}  # freed now, frozen or not

    async def _initial(self, sub: Subscription) -> None:
        started = time.monotonic()
        items = await sub.initial()
        if not await self._restore(items):
            await self._fold(items)
        self._folded = True
        await self._reconcile_all(time.time())
        self.ctx.status.details["initial_scan_s"] = round(time.monotonic() - started, 3)
        if self.ctx.one_shot:
            return
        # Saved once the bus acknowledges the gaps just published are in the feed: a
        # kill -9 before that repeats them (deduplicated) but loses none.
        self.saver.mark()
        self.ctx.level_ready()
        self.log.info(
            "integration_initial_scan",
            files=len(self.files),
            orphans=len(self.announced_orphans),
            syntax_errors=len(self.announced_errors),
            **self.stats,
        )

    async def _restore(self, items: list[Item]) -> bool:
        """Take the state saved at the last clean stop if these records are its fold."""
        if self.ctx.one_shot or self.files:
            return False
        records = {r.path: r for _root, _event, r in items if r is not None and r.is_python}
        index = (await self.folds.load(records) or [None])[0]
        if not isinstance(index, FlowIndex):
            return False
        self.index, self.files, self.fold_restored = index, records, True
        if items:
            self.ctx.touch(max(event.observed_at for _root, event, _record in items))
        self.log.info("integration_fold_restored", files=len(records))
        return True

    async def _fold(self, items: list[Item]) -> None:
        """Fold every record into the flow index (counted first, evaluated once)."""
        seen: set[str] = set()
        self.index.begin_bulk()  # every channel evaluated once, not after every file
        async for _root, event, record in paced(items):
            if record is not None and record.is_python:
                self.ctx.touch(event.observed_at)
                seen.add(record.path)
                self._apply(record)
        for path in [p for p in self.files if p not in seen]:
            self._forget(path)
        channels = self.index.end_bulk_channels()  # (a cancel above: an index thrown away)
        async for start in paced(range(0, len(channels), RECONCILE_PART)):
            self.index.reevaluate(channels[start:start + RECONCILE_PART])

    # -- records -------------------------------------------------------------------------
    def _apply(self, record: FileRecord) -> set[Channel]:
        """Take one record; the channels whose orphan state may have changed."""
        old = self.files.get(record.path)
        self.files[record.path] = record
        try:
            flows: FileFlows | None = record.facts.flows if record.facts is not None else None
        except DamagedFacts as err:
            self.log.error("source_facts_damaged", path=record.path, error=str(err))
            flows = None
        if flows is None or (old is not None and old.facts is record.facts):
            return set()  # nothing parsed yet, or the same flows (a syntax error keeps them)
        delta = self.index.update(record.path, flows, packed=record.facts)
        return {*delta.appeared, *delta.resolved}

    def _forget(self, path: str) -> set[Channel]:
        if self.files.pop(path, None) is None:
            return set()
        delta = self.index.remove(path)
        return {*delta.appeared, *delta.resolved}

    # -- events --------------------------------------------------------------------------
    def _handle(self, event: FileEvent, record: FileRecord | None) -> None:
        kind, path = event.kind, str(event.path)
        if not path.endswith(".py") and not (event.src and str(event.src).endswith(".py")):
            return
        self.ctx.touch(event.observed_at)
        changed: set[Channel] = set()
        paths = {path}
        if kind is FileEventKind.MOVED and event.src is not None:
            changed = self._forget(str(event.src))
            paths.add(str(event.src))
        if kind is FileEventKind.DELETED or (record is None and kind is FileEventKind.MOVED):
            changed |= self._forget(path)
        elif record is not None and record.path.endswith(".py") and kind in (
            FileEventKind.CLOSED, FileEventKind.EXISTING, FileEventKind.MOVED
        ):
            if record is self.files.get(path):
                return
            changed |= self._apply(record)
        else:  # CREATED / MODIFIED: the index loads the file once it is written
            return
        self._publish_orphans(changed, event.observed_at, edited=paths)
        self._refresh_evidence(paths, changed, event.observed_at)
        self._publish_errors(paths, event.observed_at)
        self.saver.mark()
        self._update_status()

    # -- publishing ----------------------------------------------------------------------
    async def _reconcile_all(self, observed_at: float) -> None:
        """Every orphan and syntax error against what was announced, a part at a time
        (each new orphan quotes its producers' code read from disk: hundreds of them in a
        large tree would hold the event loop)."""
        channels = sorted(set(self.index.orphans()) | self.announced_orphans)
        async for start in paced(range(0, len(channels), RECONCILE_PART)):
            self._publish_orphans(set(channels[start:start + RECONCILE_PART]), observed_at)
        self._publish_errors(
            set(self.announced_errors) | {p for p, r in self.files.items() if r.error},
            observed_at,
        )
        self._update_status()

    def _publish_orphans(
        self, channels: set[Channel], observed_at: float, edited: Iterable[str] = ()
    ) -> None:
        """Announce or resolve each of ``channels`` as it is now; a resolution quotes a
        consumer, searched first in the ``edited`` files."""
        for channel in sorted(channels):
            orphan = self.index.is_orphan(channel)
            if orphan and channel not in self.announced_orphans:
                self._gap_orphan(channel, observed_at)
                self.announced_orphans.add(channel)
            elif not orphan and channel in self.announced_orphans:
                gone = self.index.producer_count(channel) == 0
                self.ctx.resolve(
                    gap_type="orphaned_queue",
                    gap_name=channel.name,
                    ecosystem=self.ecosystem,
                    gap_category="integration",
                    gap_reason="its producer went away" if gone else "it has a consumer now",
                    observed_at=observed_at,
                    channel_kind=channel.kind.value,
                    **self._consumer_fact(channel, gone, edited),
                )
                self.announced_orphans.discard(channel)
                self.evidence.pop(channel)

    def _gap_orphan(self, channel: Channel, observed_at: float) -> None:
        sites = self.index.producers(channel, limit=MAX_FACT_ITEMS)
        files: list[str] = []
        for site in sites:
            rel = self._relative(site.path)
            if rel not in files:
                files.append(rel)
        lines = [self._code(s) for s in sites[:MAX_CODE_LINES]]
        self.evidence.set(channel, lines, (s.path for s in sites[:MAX_CODE_LINES]))
        if channel.kind is ChannelKind.TOPIC:
            reason = f"bus topic '{channel.name}' is emitted but nothing subscribes to it"
        else:
            reason = f"'{channel.name}' is populated but never consumed"
        self.ctx.gap(
            gap_type="orphaned_queue",
            gap_name=channel.name,
            gap_category="integration",
            gap_reason=reason,
            ecosystem=self.ecosystem,
            observed_at=observed_at,
            channel_kind=channel.kind.value,
            producers=list(dict.fromkeys(f"{s.module}:{s.function}" for s in sites)),
            sites=[f"{self._relative(s.path)}:{s.line}" for s in sites],
            files=files,
            producer_files=self.index.producer_count(channel),
            producer_lines=lines,
        )

    def _code(self, site: ProducerSite) -> str:
        """``path:line: statement`` read from the watched tree (never imported)."""
        try:
            with open(site.path, "rb") as fh:
                source = fh.read(self.cfg.max_file_bytes).decode("utf-8", "replace")
        except OSError:
            source = None
        return evidence_line(self._relative(site.path), site.line, source)

    def _consumer_fact(
        self, channel: Channel, gone: bool, edited: Iterable[str]
    ) -> dict[str, str]:
        site = None if gone else self.index.consumer(channel, first=edited)
        return {"consumer_line": self._code(site)} if site is not None else {}

    def _refresh_evidence(
        self, paths: set[str], changed: set[Channel], observed_at: float
    ) -> None:
        """An announced orphan whose producing code changed is announced again with the
        new code: the question's evidence follows the code. That is every orphan these
        files produce now, and every orphan whose evidence quotes one of them (an edit
        that removed one of several producers must not leave its line quoted)."""
        candidates = self.announced_orphans - changed
        quoted = self.evidence.quoting(paths) & candidates
        here = self.index.produced_by(paths)
        if here is not None:
            candidates &= here  # only what these files produce: its evidence may change
        else:  # they call a wrapper: test each orphan (set lookups)
            produced_here = self.index.producing_in(paths)
            candidates = {c for c in candidates if produced_here(c)}
        for channel in sorted(candidates | quoted):
            sites = self.index.producers(channel, MAX_FACT_ITEMS)
            if channel not in quoted and not any(site.path in paths for site in sites):
                continue
            lines = [self._code(s) for s in sites[:MAX_CODE_LINES]]
            if self.index.is_orphan(channel) and lines != self.evidence.get(channel):
                self._gap_orphan(channel, observed_at)

    def _publish_errors(self, paths: set[str], observed_at: float) -> None:
        for path in sorted(paths):
            meta = self.files.get(path)
            error = meta.error if meta is not None else None
            announced = self.announced_errors.get(path)
            if error is None:
                self.confirmer.forget(path)
            if error is not None and announced is None:
                if not self.confirmer.is_error(path):
                    continue  # valid for the watched interpreter: named in /health only
                name = self._relative(path)
                message, line = error
                self.ctx.gap(
                    gap_type="syntax_error",
                    gap_name=name,
                    gap_category="integration",
                    gap_reason=f"{name} does not parse: {message}",
                    ecosystem=self.ecosystem,
                    observed_at=observed_at,
                    path=path,
                    line=line,
                    message=message,
                )
                self.announced_errors[path] = name
            elif error is None and announced is not None:
                self.ctx.resolve(
                    gap_type="syntax_error",
                    gap_name=announced,
                    ecosystem=self.ecosystem,
                    gap_category="integration",
                    gap_reason="the file parses now" if meta else "the file is gone",
                    observed_at=observed_at,
                    path=path,
                )
                del self.announced_errors[path]

    def level(self) -> set[tuple[str, str]]:
        """Orphaned queues and syntax errors open now (announced and still seen)."""
        return {("orphaned_queue", c.name) for c in self.announced_orphans} | {
            ("syntax_error", name) for name in self.announced_errors.values()}

    def reannounce(self, keys: Iterable[tuple[str, str]]) -> int:
        wanted = set(keys)
        count = 0
        for channel in sorted(self.announced_orphans):
            if ("orphaned_queue", channel.name) in wanted:
                self._gap_orphan(channel, time.time())
                count += 1
        errors = [path for path, name in self.announced_errors.items()
                  if ("syntax_error", name) in wanted]
        for path in errors:
            del self.announced_errors[path]
            self._publish_errors({path}, time.time())
            count += 1
        return count

    def _relative(self, path: str) -> str:
        """``path`` relative to its deepest root (strings: one per quoted line)."""
        for prefix in self._root_prefixes:
            if path.startswith(prefix):
                return path[len(prefix):]
        return path

    def _update_status(self) -> None:
        self.ctx.status.details.update(
            files=len(self.files),
            orphans=len(self.announced_orphans),
            syntax_errors=len(self.announced_errors),
            **self.stats,
            **self.confirmer.details(self._relative),
        )


    # -- checkpoint ----------------------------------------------------------------------
    def _load_checkpoint(self) -> None:
        self.announced_orphans, self.announced_errors, self.evidence = load_announced(
            self.ctx.checkpoints, self.log)

    def _snapshot(self) -> dict[str, Any]:
        return announced_to_json(self.announced_orphans, self.announced_errors, self.evidence)

    def _write(self, data: dict[str, Any]) -> None:
        self.ctx.checkpoints.save(CHECKPOINT, data)
