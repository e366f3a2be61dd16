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
one question per bug, ``occurrences`` counting up.

Sources: journalctl through :class:`~kloros_stream.sources.journal.JournalFollower` and
``log_files`` through the checkpointing :class:`~kloros_stream.sources.tailer.FileTailer`.
If the journal is unavailable the log files are still followed (the reason is in
``/health`` details); with no source left the monitor is ``unavailable``.

State (one checkpoint file ``state.json``, saved atomically at most once a second while
something changed, and on stop):

- ``cursor``: the journal cursor up to which everything is *fully* processed, i.e. just
  before the first entry of the oldest traceback still being assembled, so a restart
  resumes there (``--after-cursor``) and neither loses a half-read traceback nor skips an
  entry;
- ``published``: occurrence keys (the cursor of an occurrence's first entry) published
  after that cursor: the entries a restart re-reads, so an occurrence already published is
  not published twice;
- ``files``: per log file, the keys (end offset and text hash) of recent occurrences, the
  same guard for the tailer's at-least-once replay after kill -9;
- ``fingerprints``: the bounded LRU (``dedup_size``) of fingerprints with their count and
  first/last sighting. It survives restarts and feeds the facts ``occurrences``,
  ``first_seen`` and ``last_seen``; only the first sighting of a fingerprint since it
  entered the LRU is logged at warning level (repeats at debug), so a crash loop does not
  flood the log. Eviction only resets those facts: the core still groups by fingerprint.

One-shot (``scan``): ``journalctl --lines=10000`` without ``--follow`` (the scan's
read-only checkpoint store has no cursor) and each log file from its start, then every
record still being assembled is finished and the monitor returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..analysis.occurrences import (
    MAX_NAME_CHARS,
    PRIORITY_NAMES,
    Occurrence,
    as_int,
    clip,
    file_key,
    json_occurrence,
    primary,
    priority_occurrence,
    traceback_occurrence,
)
from ..analysis.source_context import frame_context, read_source_lines
from ..analysis.tracebacks import Assembled, TracebackAssembler, assemble_text
from ..config import ExceptionMonitorConfig
from ..core.identity import iso
from ..sources.journal import (
    JournalBatch,
    JournalFollower,
    JournalUnavailable,
    entry_field,
    entry_filter,
    entry_key,
    entry_realtime,
    entry_text,
)
from ..sources.tailer import FileTailer, TailBatch
from .base import Monitor, MonitorContext, MonitorUnavailable
from .exception_state import FingerprintMemory, ReplayState

__all__ = ["ExceptionMonitor", "FingerprintMemory"]

CHECKPOINT = "state"
CHECKPOINT_INTERVAL_S = 1.0
CHAIN_GRACE_S = 0.02
"""Quiet after an exception line before the traceback counts as complete (a chained
exception's next part comes in the same write burst). A stream whose lines arrive with
jitter (the journal interleaving processes) waits longer: a few of its own gaps, see
:data:`~kloros_stream.analysis.tracebacks.JITTER_FACTOR`."""
LIVE_WINDOW_S = 10.0
"""An entry read within this of its journal timestamp is live: its timestamp is the
latency origin (``observed_at``); older entries (replays) use the time they were read."""
GAP_CATEGORY = "error_handling"


@dataclass(slots=True)
class _JournalMeta:
    entry: dict[str, Any]
    prev_cursor: str | None
    """The cursor of the entry before this one: where a restart must resume to re-read it."""
    seq: int
    wall: float


@dataclass(slots=True)
class _FileMeta:
    path: str
    offset: int
    wall: float


class ExceptionMonitor(Monitor[ExceptionMonitorConfig]):
    name: ClassVar[str] = "exception"
    ecosystem: ClassVar[str] = "diagnostics"
    config_model = ExceptionMonitorConfig
    def __init__(self, ctx: MonitorContext) -> None:
        super().__init__(ctx)
        cfg = self.cfg
        self.max_line_bytes = ctx.config.service.max_line_bytes
        self.assembler = TracebackAssembler(
            flush_after_s=cfg.flush_after_s, chain_grace_s=min(CHAIN_GRACE_S, cfg.flush_after_s)
        )
        self.memory = FingerprintMemory(cfg.dedup_size)
        self.follower: JournalFollower | None = None
        self._accept = entry_filter(cfg.units, cfg.identifiers)
        self.replay = ReplayState()
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._dirty = False
        self._last_save = float("-inf")
        self._synced: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._load()
        sources: dict[str, Callable[[], Awaitable[None]]] = {}
        if self.cfg.journal:
            sources["journal"] = self._follow_journal
        for path in self.cfg.log_files:
            sources[str(path)] = self._file_source(Path(path))
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.ctx.one_shot:
            self.assembler.flush(0.0, force=True)
        else:
            files = [k for k, _ in self.assembler.pending_first_metas() if k[0] == "f"]
            self.assembler.flush(0.0, keys=files)
        self._drain()
        self._save()

    # -- journal ---------------------------------------------------------------------------
    async def _follow_journal(self) -> None:
        cfg = self.cfg
        follower = self.follower = JournalFollower(
            journalctl=cfg.journalctl,
            namespace=cfg.namespace,
            after_cursor=self.replay.cursor,
            initial_lines=cfg.initial_lines,
            max_line_bytes=self.max_line_bytes,
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
        accept = self._accept
        prev = self.replay.cursor
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
        if "\n" in message:
            self._on_whole_message(entry, unit, message, wall)
            return
        priority = entry_field(entry, "PRIORITY")
        asm = self.assembler
        if asm.may_take(message):
            # One print of a traceback shares its stream and priority; a line logged at
            # another priority in between is a record of its own, not part of it.
            key = (
                "j",
                unit,
                entry_field(entry, "_PID"),
                entry_field(entry, "SYSLOG_IDENTIFIER"),
                entry_field(entry, "_STREAM_ID"),
                priority,
            )
            if asm.feed(key, message, now, _JournalMeta(entry, prev, self._seq, wall)):
                return
        if message.startswith("{") and '"exception"' in message:
            occ = json_occurrence(message, entry_key(entry), wall)
            if occ is not None:
                self._publish_journal(occ, entry, unit, entry, wall)
                return
        if priority in PRIORITY_NAMES:
            self._publish_journal(
                self._priority(entry, unit, message, priority, wall), entry, unit, entry, wall
            )

    def _on_whole_message(
        self, entry: dict[str, Any], unit: str, message: str, wall: float
    ) -> None:
        """A multi-line MESSAGE (native protocol, syslog, JournalHandler): parsed whole."""
        base = entry_key(entry)
        tracebacks = assemble_text(message)
        for i, tb in enumerate(tracebacks):
            key = base if len(tracebacks) == 1 else f"{base}#{i}"
            self._publish_journal(traceback_occurrence(tb, key, wall), entry, unit, entry, wall)
        if tracebacks:
            return
        if message.startswith("{") and '"exception"' in message:
            occ = json_occurrence(message, base, wall)
            if occ is not None:
                self._publish_journal(occ, entry, unit, entry, wall)
                return
        priority = entry_field(entry, "PRIORITY")
        if priority in PRIORITY_NAMES:
            self._publish_journal(
                self._priority(entry, unit, message, priority, wall), entry, unit, entry, wall
            )

    @staticmethod
    def _priority(
        entry: dict[str, Any], unit: str, message: str, priority: str, wall: float
    ) -> Occurrence:
        source = entry_field(entry, "SYSLOG_IDENTIFIER") or unit or entry_field(entry, "_COMM")
        return priority_occurrence(source, message, priority, entry_key(entry), wall)

    def _publish_journal(
        self, occ: Occurrence, first: dict[str, Any], unit: str, last: dict[str, Any], wall: float
    ) -> None:
        if not self.replay.journal_first(occ.key):
            self.ctx.status.count("replays_suppressed")
            return
        ts = entry_realtime(last)
        if ts is not None and 0.0 <= wall - ts <= LIVE_WINDOW_S:
            occ.observed_at = ts
        occ.facts.update(
            source="journal",
            unit=unit,
            pid=as_int(entry_field(first, "_PID")),
            identifier=entry_field(first, "SYSLOG_IDENTIFIER"),
            cursor=occ.key,
        )
        first_ts = entry_realtime(first)
        if first_ts is not None:
            occ.facts["timestamp"] = iso(first_ts)
        self._publish(occ, where=unit or occ.facts["identifier"] or "journal")

    # -- log files -------------------------------------------------------------------------
    def _file_source(self, path: Path) -> Callable[[], Awaitable[None]]:
        async def follow() -> None:
            tailer = FileTailer(
                path,
                self.ctx.checkpoints,
                name=f"file-{path}",
                max_line_bytes=self.max_line_bytes,
                parse_json=False,
            )
            files = self.ctx.status.details.setdefault("log_files", {})
            files[str(path)] = "following" if not self.ctx.one_shot else "scan"
            seen = dict.fromkeys(tailer.stats, 0)
            async with contextlib.aclosing(tailer.batches(follow=not self.ctx.one_shot)) as it:
                async for batch in it:
                    self._on_file_batch(batch)
                    for name, value in tailer.stats.items():
                        if value != seen[name]:
                            self.ctx.status.count(f"file_{name}", value - seen[name])
                            seen[name] = value

        return follow

    def _on_file_batch(self, batch: TailBatch) -> None:
        assert self._loop is not None
        now = self._loop.time()
        path = str(batch.path)
        key = ("f", path)
        ends = _record_ends(batch.records, batch.offset)
        for raw, end in zip(batch.records, ends, strict=True):
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if self.assembler.feed(key, line, now, _FileMeta(path, end, batch.observed_at)):
                continue
            if line.startswith("{") and '"exception"' in line:
                occ = json_occurrence(line, file_key(end, line), batch.observed_at)
                if occ is not None:
                    self._publish_file(occ, path, end)
        self.ctx.touch(batch.observed_at)
        self._drain()
        self._schedule()

    def _publish_file(self, occ: Occurrence, path: str, offset: int) -> None:
        if not self.replay.file_first(path, occ.key):
            self.ctx.status.count("replays_suppressed")
            return
        self._dirty = True
        occ.facts.update(source="file", path=path, offset=offset, unit="")
        self._publish(occ, where=Path(path).name)

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
        if isinstance(first, _JournalMeta) and isinstance(last, _JournalMeta):
            occ = traceback_occurrence(item.traceback, entry_key(first.entry), last.wall)
            unit = item.key[1] if isinstance(item.key, tuple) else ""
            self._publish_journal(occ, first.entry, str(unit), last.entry, last.wall)
        elif isinstance(first, _FileMeta) and isinstance(last, _FileMeta):
            occ = traceback_occurrence(
                item.traceback,
                file_key(last.offset, item.traceback.text),
                last.wall,
            )
            self._publish_file(occ, last.path, last.offset)

    # -- publishing ------------------------------------------------------------------------
    def _publish(self, occ: Occurrence, *, where: str) -> None:
        count, first_seen, new = self.memory.record(occ.fingerprint, occ.observed_at)
        self._dirty = True
        raised = primary(occ.records)
        reason = {
            "traceback": f"{where} raised {raised.exc_type}",
            "json_log": f"{where} logged {raised.exc_type} in a JSON log line",
            "priority": f"{where} logged at priority {occ.facts.get('priority')} "
            f"({occ.facts.get('level')})",
        }[occ.kind]
        if occ.facts.get("complete") is False:
            reason += " (incomplete traceback)"
        if len(occ.records) > 1:
            occ.facts["chain"] = [r.title[:MAX_NAME_CHARS] for r in occ.records[:20]]
        if new:  # the question's evidence is its first sighting's: read the code once
            occ.facts["source_context"] = frame_context(occ.records, read_source_lines)
        self.ctx.status.count(f"{occ.kind}_occurrences")
        (self.log.warning if new else self.log.debug)(
            "exception_seen",
            kind=occ.kind,
            name=occ.title,
            fingerprint=occ.fingerprint,
            where=where,
            occurrences=count,
        )
        self.ctx.gap(
            gap_type="exception",
            gap_name=occ.title[:MAX_NAME_CHARS],
            gap_category=GAP_CATEGORY,
            gap_reason=reason,
            ecosystem=self.ecosystem,
            observed_at=occ.observed_at,
            fingerprint=occ.fingerprint,
            traceback=clip(occ.text),
            kind=occ.kind,
            exception_type=raised.exc_type,
            message=raised.first_line,
            occurrences=count,
            first_seen=iso(first_seen),
            last_seen=iso(occ.observed_at),
            **occ.facts,
        )

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
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = loop.call_at(max(deadline, loop.time()), self._on_timer)

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        try:
            self.assembler.flush(now)
            self._drain()
            if self._dirty and now >= self._last_save + CHECKPOINT_INTERVAL_S:
                self._save()
        except Exception:
            self.log.exception("exception_monitor_timer_failed")
        self._schedule()

    def _safe_cursor(self) -> str | None:
        """Just before the oldest journal traceback still being assembled, else the last
        entry processed."""
        oldest: _JournalMeta | None = None
        for _, meta in self.assembler.pending_first_metas():
            if isinstance(meta, _JournalMeta) and (oldest is None or meta.seq < oldest.seq):
                oldest = meta
        return oldest.prev_cursor if oldest is not None else self.replay.cursor

    def _save(self) -> None:
        if self.ctx.one_shot:
            return
        cursor = self._safe_cursor()
        data = self.replay.dump(cursor, self.memory)
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
        if not self.replay.load(self.ctx.checkpoints.load(CHECKPOINT), self.memory):
            return
        self.log.info(
            "exception_state_loaded",
            cursor=self.replay.cursor,
            fingerprints=len(self.memory),
            published=len(self.replay.published),
        )

    def _sync_follower(self) -> None:
        f = self.follower
        if f is None:
            return
        details = self.ctx.status.details
        details["journalctl"] = {"pid": f.pid, "restarts": f.restarts, "last_exit": f.last_exit}
        for name, value in (
            ("journalctl_restarts", f.restarts),
            ("journal_lines_skipped", f.lines_skipped),
            ("journal_lines_malformed", f.lines_malformed),
        ):
            delta = value - self._synced.get(name, 0)
            if delta:
                self.ctx.status.count(name, delta)
                self._synced[name] = value


def _record_ends(records: list[bytes], end: int) -> list[int]:
    """File offset just past each record (newline included), from the batch's end."""
    ends = [0] * len(records)
    for i in range(len(records) - 1, -1, -1):
        ends[i] = end
        end -= len(records[i]) + 1
    return ends
