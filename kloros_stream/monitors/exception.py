"""Exception monitor: real exceptions in journald and log files, one question per bug.

What counts (nothing else does; no keyword matching):

- a Python traceback, reassembled per stream (journal: unit, PID, identifier, stream id;
  priority; file: the file) by :class:`~kloros_stream.analysis.tracebacks.TracebackAssembler`,
  including chains and exception groups, or whole inside one multi-line MESSAGE;
- a JSON log line (structlog and the like) with an ``exception`` field (a traceback text or
  structlog's dict tracebacks);
- a journal entry with ``PRIORITY <= 3`` that is none of the above.

Each occurrence is published as a CAPABILITY_GAP (gap_type ``exception``, gap_name
``"<Type>: <first line of message>"``) whose facts carry the Sentry-like ``fingerprint``
(:mod:`~kloros_stream.analysis.fingerprint`) from which the core derives the question id:
one question per bug, ``occurrences`` counting up. One published alone and then held as a
cause or context by a later chain of its process is withdrawn (:mod:`.exception_absorb`).

Sources: journalctl through :class:`~kloros_stream.sources.journal.JournalFollower`
(entries to occurrences: :mod:`.exception_journal`) and ``log_files`` through the
checkpointing :class:`~kloros_stream.sources.tailer.FileTailer` (:mod:`.exception_files`).
If the journal is unavailable the log files are still followed (the reason is in
``/health`` details); with no source left the monitor is ``unavailable``.

State (``state.json``, :mod:`.exception_state`; saved at most once a second while something
changed, and on stop): the journal ``cursor`` just before the first entry of the oldest
traceback still being assembled (a restart resumes there: nothing lost, nothing skipped),
the occurrence keys ``published`` after it and per log file (a replay publishes nothing
twice), and the LRU of ``fingerprints`` (``dedup_size``) behind ``occurrences``,
``first_seen``, ``last_seen`` (a fingerprint's first sighting is logged at warning level,
repeats at debug), and the ``lone`` occurrences a later chain may still absorb.

One-shot (``scan``): ``journalctl --lines=10000`` without ``--follow`` (the scan's
read-only checkpoint store has no cursor) and each log file from its start, then every
record still being assembled is finished and the monitor returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from ..analysis.occurrences import (
    MAX_NAME_CHARS,
    Occurrence,
    file_key,
    gap_facts,
    gap_reason,
    json_occurrence,
    traceback_occurrence,
)
from ..analysis.source_context import frame_context, read_source_lines
from ..analysis.tracebacks import Assembled, TracebackAssembler
from ..config import ExceptionMonitorConfig
from ..core.identity import iso
from ..sources.journal import (
    JournalBatch,
    JournalFollower,
    JournalUnavailable,
    entry_field,
    entry_filter,
    entry_key,
    entry_text,
)
from ..sources.tailer import TailBatch
from .base import Monitor, MonitorContext, MonitorUnavailable
from .exception_absorb import LoneRecords, Sighting, absorb, resolution, stream_of
from .exception_files import FileMeta, batch_lines, follow_log_file
from .exception_journal import (
    DeliveryLag,
    JournalMeta,
    add_journal_facts,
    journal_sighting,
    line_occurrence,
    safe_cursor,
    stream_key,
    sync_follower_status,
    whole_message_occurrences,
)
from .exception_state import FingerprintMemory, ReplayState

__all__ = ["ExceptionMonitor", "FingerprintMemory"]

CHECKPOINT = "state"
CHECKPOINT_INTERVAL_S = 1.0
CHAIN_GRACE_S = 0.02
"""Quiet after an exception line before the traceback counts as complete (a chained part
comes in the same write burst); longer for a stream whose lines arrive with jitter
(:data:`~kloros_stream.analysis.tracebacks.JITTER_FACTOR`) and while entries reach us late
(:class:`.exception_journal.DeliveryLag`: a loaded machine)."""
GAP_CATEGORY = "error_handling"


class ExceptionMonitor(Monitor[ExceptionMonitorConfig]):
    name: ClassVar[str] = "exception"
    ecosystem: ClassVar[str] = "diagnostics"
    config_model = ExceptionMonitorConfig
    def __init__(self, ctx: MonitorContext) -> None:
        super().__init__(ctx)
        cfg = self.cfg
        self.max_line_bytes = ctx.config.service.max_line_bytes
        grace = min(CHAIN_GRACE_S, cfg.flush_after_s)
        self.assembler = TracebackAssembler(flush_after_s=cfg.flush_after_s, chain_grace_s=grace)
        self.lag = DeliveryLag(grace, cfg.flush_after_s)
        self.memory = FingerprintMemory(cfg.dedup_size)
        self.lone = LoneRecords()
        self.follower: JournalFollower | None = None
        self._accept = entry_filter(cfg.units, cfg.identifiers)
        self.replay = ReplayState()
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0  # when it is due (uvloop's handle of a due time has no when())
        self._judging: asyncio.Handle | None = None
        self._stalled = False
        self._waiting = 0.0  # since when a judgement waits for lines already received
        self._dirty, self._last_save = False, float("-inf")
        self._maybe_read: float | None = None  # a killed run may have read entries before
        self._synced: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._load()
        sources: dict[str, Callable[[], Awaitable[None]]] = {}
        if self.cfg.journal:
            sources["journal"] = self._follow_journal
        for path in self.cfg.log_files:
            sources[str(path)] = functools.partial(
                follow_log_file, Path(path), self.ctx, self._on_file_batch,
                max_line_bytes=self.max_line_bytes,
            )
        if not sources:
            raise MonitorUnavailable("nothing to watch: journal = false and no log_files")
        unavailable: dict[str, str] = {}
        try:
            async with asyncio.TaskGroup() as group:
                for name, source in sources.items():
                    group.create_task(self._guard(name, source, unavailable))
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None  # the supervisor reports the real crash
        finally:
            self._stop()
        if len(unavailable) == len(sources):
            raise MonitorUnavailable("; ".join(unavailable.values()))

    async def _guard(
        self, name: str, source: Callable[[], Awaitable[None]], unavailable: dict[str, str]
    ) -> None:
        try:
            await source()
        except JournalUnavailable as err:
            unavailable[name] = f"journal: {err}"
            self.ctx.status.details["journal"] = f"unavailable: {err}"
            self.log.warning("journal_unavailable", reason=str(err))

    def _stop(self) -> None:
        """Finish what is pending (all of it in one-shot; else the files', whose tailers
        have saved their offsets past it) and save the state."""
        for handle in (self._timer, self._judging):
            if handle is not None:
                handle.cancel()
        self._timer = self._judging = None
        if self.ctx.one_shot:
            self.assembler.flush(0.0, force=True)
        else:
            files = [k for k, _ in self.assembler.pending_first_metas() if k[0] == "f"]
            self.assembler.flush(0.0, keys=files)
        self._drain()
        self._save(final=True)

    # -- journal ---------------------------------------------------------------------------
    async def _follow_journal(self) -> None:
        cfg = self.cfg
        follower = self.follower = JournalFollower(
            journalctl=cfg.journalctl, namespace=cfg.namespace, after_cursor=self.replay.cursor,
            initial_lines=cfg.initial_lines, max_line_bytes=self.max_line_bytes,
        )
        await follower.probe()
        self.ctx.status.details["journal"] = "following" if not self.ctx.one_shot else "scan"
        async with contextlib.aclosing(follower.batches(follow=not self.ctx.one_shot)) as it:
            async for batch in it:
                self._on_journal_batch(batch)
        self._sync_follower()

    def _on_journal_batch(self, batch: JournalBatch) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.assembler.chain_grace_s = self.lag.grace(batch, now)
        accept, prev = self._accept, self.replay.cursor
        for entry in batch.entries:
            self._seq += 1
            unit = accept(entry)
            if unit is not None:
                try:
                    self._on_entry(entry, unit, prev, now, batch.observed_at)
                except Exception:  # one odd entry never stops the stream
                    self.log.exception("journal_entry_failed", cursor=entry.get("__CURSOR"))
            cursor = entry.get("__CURSOR")
            if isinstance(cursor, str):
                prev = cursor
        self.replay.cursor = prev
        self._dirty = True
        self.ctx.status.count("journal_entries", len(batch.entries))
        self.ctx.touch(batch.observed_at)
        self._drain()
        self._sync_follower()
        self._schedule()

    def _on_entry(
        self, entry: dict[str, Any], unit: str, prev: str | None, now: float, wall: float
    ) -> None:
        message = entry.get("MESSAGE")
        if type(message) is not str:
            message = entry_text(entry, "MESSAGE")
        if "\n" in message:  # native protocol, syslog, JournalHandler: parsed whole
            for occ in whole_message_occurrences(entry, unit, message, wall):
                self._publish_journal(occ, entry, unit, entry, wall)
            return
        priority = entry_field(entry, "PRIORITY")
        asm = self.assembler
        if asm.may_take(message):
            meta = JournalMeta(entry, prev, self._seq, wall)
            if asm.feed(stream_key(entry, unit, priority), message, now, meta):
                return
        occ = line_occurrence(entry, unit, message, priority, wall)
        if occ is not None:
            self._publish_journal(occ, entry, unit, entry, wall)

    def _publish_journal(self, occ: Occurrence, first: dict[str, Any], unit: str,
                         last: dict[str, Any], wall: float, item: Assembled | None = None) -> None:
        if not self.replay.journal_first(occ.key):
            self.ctx.status.count("replays_suppressed")
            return
        add_journal_facts(occ, first, unit, last, wall)
        seen = journal_sighting(first, unit, last, self._maybe_read, item)
        self._publish(occ, seen, where=unit or occ.facts["identifier"] or "journal")

    # -- log files -------------------------------------------------------------------------
    def _on_file_batch(self, batch: TailBatch) -> None:
        assert self._loop is not None
        now = self._loop.time()
        path = str(batch.path)
        key = ("f", path)
        for line, end in batch_lines(batch):
            if self.assembler.feed(key, line, now, FileMeta(path, end, batch.observed_at)):
                continue
            if line.startswith("{") and '"exception"' in line:
                occ = json_occurrence(line, file_key(end, line), batch.observed_at)
                if occ is not None:
                    self._publish_file(occ, path, end, batch.observed_at)
        self.ctx.touch(batch.observed_at)
        self._drain()
        self._schedule()

    def _publish_file(self, occ: Occurrence, path: str, offset: int, first_at: float,
                      item: Assembled | None = None) -> None:
        if not self.replay.file_first(path, occ.key):
            self.ctx.status.count("replays_suppressed")
            return
        self._dirty = True
        occ.facts.update(source="file", path=path, offset=offset, unit="")
        seen = Sighting.of(stream_of("f", path), first_at, occ.observed_at, item,
                           lambda meta: meta.wall)
        self._publish(occ, seen, where=Path(path).name)

    # -- assembled tracebacks --------------------------------------------------------------
    def _drain(self) -> None:
        done = self.assembler.completed
        if not done:
            return
        self.assembler.completed = []
        for item in done:
            try:
                self._on_assembled(item)
            except Exception:
                self.log.exception("traceback_publish_failed", key=str(item.key))

    def _on_assembled(self, item: Assembled) -> None:
        first, last = item.first_meta, item.last_meta
        if isinstance(first, JournalMeta) and isinstance(last, JournalMeta):
            occ = traceback_occurrence(item.traceback, entry_key(first.entry), last.wall)
            unit = item.key[1] if isinstance(item.key, tuple) else ""
            self._publish_journal(occ, first.entry, str(unit), last.entry, last.wall, item)
        elif isinstance(first, FileMeta) and isinstance(last, FileMeta):
            key = file_key(last.offset, item.traceback.text)
            occ = traceback_occurrence(item.traceback, key, last.wall)
            self._publish_file(occ, last.path, last.offset, first.wall, item)

    # -- publishing ------------------------------------------------------------------------
    def _publish(self, occ: Occurrence, seen: Sighting, *, where: str) -> None:
        count, first_seen, new = self.memory.record(occ.fingerprint, occ.observed_at)
        self._dirty = True
        # the question's evidence is its first sighting's: read the code once
        context = frame_context(occ.records, read_source_lines) if new else None
        self.ctx.status.count(f"{occ.kind}_occurrences")
        (self.log.warning if new else self.log.debug)(
            "exception_seen", kind=occ.kind, name=occ.title, fingerprint=occ.fingerprint,
            where=where, occurrences=count,
        )
        self.ctx.gap(
            gap_type="exception", gap_name=occ.title[:MAX_NAME_CHARS], gap_category=GAP_CATEGORY,
            gap_reason=gap_reason(occ, where), ecosystem=self.ecosystem,
            observed_at=occ.observed_at,
            **gap_facts(occ, occurrences=count, first_seen=iso(first_seen),
                        last_seen=iso(occ.observed_at), source_context=context),
        )
        for w in absorb(self.lone, self.memory, occ, seen):
            self.ctx.status.count("absorbed_late")
            self.log.info("exception_absorbed", where=where, **w.log_fields())
            if w.left == 0:  # sighted nowhere else: its question is resolved
                self.ctx.resolve(ecosystem=self.ecosystem, observed_at=occ.observed_at,
                                 **resolution(w, where, GAP_CATEGORY))

    # -- timers and state ------------------------------------------------------------------
    def _schedule(self) -> None:
        """One timer: the next traceback deadline or the next due checkpoint."""
        loop = self._loop
        if loop is None:
            return
        deadline = self.assembler.next_deadline()
        if self._dirty and not self.ctx.one_shot:
            save_at = self._last_save + CHECKPOINT_INTERVAL_S
            deadline = save_at if deadline is None else min(deadline, save_at)
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._arm(max(deadline, loop.time()))

    def _arm(self, at: float) -> None:
        assert self._loop is not None
        self._timer_at, self._timer = at, self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        """Quiet counts only while the loop runs: a deadline passed in a stall is judged one
        grace later (journalctl was likely starved too), and after the lines read in the same
        turn (handed on callbacks later), so a chain's first part read late is no record."""
        assert self._loop is not None
        self._timer = None
        if self._loop.time() - self._timer_at > CHAIN_GRACE_S and not self._stalled:
            self._stalled = True
            self._arm(self._loop.time() + CHAIN_GRACE_S)
            return
        self._stalled = False
        self._judging = self._loop.call_soon(self._on_deadline)

    def _on_deadline(self) -> None:
        assert self._loop is not None
        self._judging = None
        now = self._loop.time()
        if self.follower is not None and self.follower.unread():
            self._waiting = self._waiting or now
            if now - self._waiting < self.cfg.flush_after_s:  # a partial line at most that long
                self._arm(now + CHAIN_GRACE_S)  # and its batch reschedules
                return
        self._waiting = 0.0
        try:
            self.assembler.flush(now)
            self._drain()
            if self._dirty and now >= self._last_save + CHECKPOINT_INTERVAL_S:
                self._save()
        except Exception:
            self.log.exception("exception_monitor_timer_failed")
        self._schedule()

    def _save(self, *, final: bool = False) -> None:
        if self.ctx.one_shot:
            return
        pending = (meta for _, meta in self.assembler.pending_first_metas())
        cursor = safe_cursor(pending, self.replay.cursor)
        data = self.replay.dump(cursor, self.memory, self.lone, time.time(), final=final)
        try:
            self.ctx.checkpoints.save(CHECKPOINT, data)
        except OSError as err:
            self.log.error("exception_state_save_failed", error=str(err))
            return
        self._dirty = False
        self._last_save = self._loop.time() if self._loop is not None else 0.0
        self.ctx.status.details["cursor"] = cursor
        self.ctx.status.details["fingerprints"] = len(self.memory)

    def _load(self) -> None:
        if self.replay.load(self.ctx.checkpoints.load(CHECKPOINT), self.memory, self.lone):
            if self.replay.cursor and self.replay.saved_at is not None:  # killed after it
                window = CHECKPOINT_INTERVAL_S + self.cfg.flush_after_s
                self._maybe_read = min(time.time(), self.replay.saved_at + window)
            self.log.info("exception_state_loaded", cursor=self.replay.cursor,
                          fingerprints=len(self.memory), published=len(self.replay.published))

    def _sync_follower(self) -> None:
        if self.follower is not None:
            sync_follower_status(self.follower, self.ctx.status, self._synced)
