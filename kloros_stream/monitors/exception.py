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
import hashlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import orjson

from ..analysis.fingerprint import fingerprint_message, fingerprint_records
from ..analysis.source_context import frame_context, read_source_lines
from ..analysis.tracebacks import (
    Assembled,
    ExceptionRecord,
    Frame,
    Traceback,
    TracebackAssembler,
    assemble_text,
    format_records,
    parse_exception_line,
)
from ..config import ExceptionMonitorConfig
from ..core.identity import iso
from ..sources.journal import (
    JournalBatch,
    JournalFollower,
    JournalUnavailable,
    cursor_position,
    entry_filter,
    entry_text,
)
from ..sources.tailer import FileTailer, TailBatch
from .base import Monitor, MonitorContext, MonitorUnavailable

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
MAX_TRACEBACK_CHARS = 32_000
MAX_NAME_CHARS = 300
MAX_PUBLISHED = 65_536
FILE_RECENT = 1024
PRIORITY_NAMES = {"0": "emerg", "1": "alert", "2": "crit", "3": "err"}
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


@dataclass(slots=True)
class Occurrence:
    """One sighting of an error, ready to publish."""

    kind: str  # "traceback" | "json_log" | "priority"
    records: tuple[ExceptionRecord, ...]
    title: str
    fingerprint: str
    text: str
    key: str
    """Identity of this sighting in its source (replays of it are not published again)."""
    observed_at: float
    facts: dict[str, Any] = field(default_factory=dict)


class FingerprintMemory:
    """Bounded LRU of fingerprints: count, first and last sighting (see module docstring)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, list[Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, fp: str) -> bool:
        return fp in self._items

    def record(self, fp: str, when: float) -> tuple[int, float, bool]:
        """Count one sighting; returns (count, first_seen, new)."""
        item = self._items.get(fp)
        if item is None:
            item = self._items[fp] = [0, when, when]
            if len(self._items) > self.size:
                self._items.popitem(last=False)
            new = True
        else:
            self._items.move_to_end(fp)
            new = False
        item[0] += 1
        item[2] = when
        return item[0], item[1], new

    def dump(self) -> list[list[Any]]:
        return [[fp, *item] for fp, item in self._items.items()]

    def load(self, data: Any) -> None:
        if not isinstance(data, list):
            return
        for row in data[-self.size :]:
            if (
                isinstance(row, list)
                and len(row) == 4
                and isinstance(row[0], str)
                and all(isinstance(v, (int, float)) for v in row[1:])
            ):
                self._items[row[0]] = [int(row[1]), float(row[2]), float(row[3])]


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
        self._cursor: str | None = None
        self._seq = 0
        self._published: dict[str, None] = {}
        self._file_recent: dict[str, deque[str]] = {}
        self._file_recent_sets: dict[str, set[str]] = {}
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
            after_cursor=self._cursor,
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
        prev = self._cursor
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
        self._cursor = prev
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
        priority = _field(entry, "PRIORITY")
        asm = self.assembler
        if asm.may_take(message):
            # One print of a traceback shares its stream and priority; a line logged at
            # another priority in between is a record of its own, not part of it.
            key = (
                "j",
                unit,
                _field(entry, "_PID"),
                _field(entry, "SYSLOG_IDENTIFIER"),
                _field(entry, "_STREAM_ID"),
                priority,
            )
            if asm.feed(key, message, now, _JournalMeta(entry, prev, self._seq, wall)):
                return
        if message.startswith("{") and '"exception"' in message:
            occ = _json_occurrence(message, _entry_key(entry), wall)
            if occ is not None:
                self._publish_journal(occ, entry, unit, entry, wall)
                return
        if priority in PRIORITY_NAMES:
            self._publish_journal(
                _priority_occurrence(entry, unit, message, priority, wall),
                entry,
                unit,
                entry,
                wall,
            )

    def _on_whole_message(
        self, entry: dict[str, Any], unit: str, message: str, wall: float
    ) -> None:
        """A multi-line MESSAGE (native protocol, syslog, JournalHandler): parsed whole."""
        base = _entry_key(entry)
        tracebacks = assemble_text(message)
        for i, tb in enumerate(tracebacks):
            key = base if len(tracebacks) == 1 else f"{base}#{i}"
            self._publish_journal(_traceback_occurrence(tb, key, wall), entry, unit, entry, wall)
        if tracebacks:
            return
        if message.startswith("{") and '"exception"' in message:
            occ = _json_occurrence(message, base, wall)
            if occ is not None:
                self._publish_journal(occ, entry, unit, entry, wall)
                return
        priority = _field(entry, "PRIORITY")
        if priority in PRIORITY_NAMES:
            self._publish_journal(
                _priority_occurrence(entry, unit, message, priority, wall), entry, unit, entry, wall
            )

    def _publish_journal(
        self, occ: Occurrence, first: dict[str, Any], unit: str, last: dict[str, Any], wall: float
    ) -> None:
        if occ.key in self._published:
            self.ctx.status.count("replays_suppressed")
            return
        self._published[occ.key] = None
        if len(self._published) > MAX_PUBLISHED:
            del self._published[next(iter(self._published))]
        ts = _realtime(last)
        if ts is not None and 0.0 <= wall - ts <= LIVE_WINDOW_S:
            occ.observed_at = ts
        occ.facts.update(
            source="journal",
            unit=unit,
            pid=_int(_field(first, "_PID")),
            identifier=_field(first, "SYSLOG_IDENTIFIER"),
            cursor=occ.key,
        )
        first_ts = _realtime(first)
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
                occ = _json_occurrence(line, _file_key(end, line), batch.observed_at)
                if occ is not None:
                    self._publish_file(occ, path, end)
        self.ctx.touch(batch.observed_at)
        self._drain()
        self._schedule()

    def _publish_file(self, occ: Occurrence, path: str, offset: int) -> None:
        recent = self._file_recent.setdefault(path, deque())
        seen = self._file_recent_sets.setdefault(path, set())
        if occ.key in seen:
            self.ctx.status.count("replays_suppressed")
            return
        recent.append(occ.key)
        seen.add(occ.key)
        if len(recent) > FILE_RECENT:
            seen.discard(recent.popleft())
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
            occ = _traceback_occurrence(item.traceback, _entry_key(first.entry), last.wall)
            unit = item.key[1] if isinstance(item.key, tuple) else ""
            self._publish_journal(occ, first.entry, str(unit), last.entry, last.wall)
        elif isinstance(first, _FileMeta) and isinstance(last, _FileMeta):
            occ = _traceback_occurrence(
                item.traceback,
                _file_key(last.offset, item.traceback.text),
                last.wall,
            )
            self._publish_file(occ, last.path, last.offset)

    # -- publishing ------------------------------------------------------------------------
    def _publish(self, occ: Occurrence, *, where: str) -> None:
        count, first_seen, new = self.memory.record(occ.fingerprint, occ.observed_at)
        self._dirty = True
        primary = _primary(occ.records)
        reason = {
            "traceback": f"{where} raised {primary.exc_type}",
            "json_log": f"{where} logged {primary.exc_type} in a JSON log line",
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
            traceback=_clip(occ.text),
            kind=occ.kind,
            exception_type=primary.exc_type,
            message=primary.first_line,
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
        return oldest.prev_cursor if oldest is not None else self._cursor

    def _save(self) -> None:
        if self.ctx.one_shot:
            return
        cursor = self._safe_cursor()
        self._prune_published(cursor)
        data = {
            "version": 1,
            "cursor": cursor,
            "published": list(self._published),
            "files": {path: list(keys) for path, keys in self._file_recent.items()},
            "fingerprints": self.memory.dump(),
        }
        try:
            self.ctx.checkpoints.save(CHECKPOINT, data)
        except OSError as err:
            self.log.error("exception_state_save_failed", error=str(err))
            return
        self._dirty = False
        self._last_save = self._loop.time() if self._loop is not None else 0.0
        self.ctx.status.details["cursor"] = cursor
        self.ctx.status.details["fingerprints"] = len(self.memory)

    def _prune_published(self, cursor: str | None) -> None:
        """Keep only keys after ``cursor``: the entries a restart would read again."""
        limit = cursor_position(cursor)
        if limit is None:
            return
        keep: dict[str, None] = {}
        for key in self._published:
            pos = cursor_position(key.split("#", 1)[0])
            if pos is None or pos[0] != limit[0] or pos[1] > limit[1]:
                keep[key] = None
        self._published = keep

    def _load(self) -> None:
        data = self.ctx.checkpoints.load(CHECKPOINT)
        if not isinstance(data, dict):
            return
        cursor = data.get("cursor")
        self._cursor = cursor if isinstance(cursor, str) and cursor else None
        published = data.get("published")
        if isinstance(published, list):
            self._published = {k: None for k in published[-MAX_PUBLISHED:] if isinstance(k, str)}
        files = data.get("files")
        if isinstance(files, dict):
            for path, keys in files.items():
                if isinstance(keys, list):
                    kept = [k for k in keys[-FILE_RECENT:] if isinstance(k, str)]
                    self._file_recent[str(path)] = deque(kept)
                    self._file_recent_sets[str(path)] = set(kept)
        self.memory.load(data.get("fingerprints"))
        self.log.info(
            "exception_state_loaded",
            cursor=self._cursor,
            fingerprints=len(self.memory),
            published=len(self._published),
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


# -- occurrences (pure helpers) ------------------------------------------------------------
def _primary(records: tuple[ExceptionRecord, ...]) -> ExceptionRecord:
    for record in reversed(records):
        if record.depth == 0:
            return record
    return records[-1]


def _traceback_occurrence(tb: Traceback, key: str, wall: float) -> Occurrence:
    primary = tb.primary
    facts: dict[str, Any] = {"complete": tb.complete}
    return Occurrence(
        "traceback",
        tb.chain,
        primary.title,
        fingerprint_records(tb.chain),
        tb.text,
        key,
        wall,
        facts,
    )


def _json_occurrence(line: str, key: str, wall: float) -> Occurrence | None:
    """A JSON object with a non-empty ``exception`` field, else None."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not obj.get("exception"):
        return None
    exc = obj["exception"]
    records = _records_from_json(exc)
    text = exc if isinstance(exc, str) else format_records(records)
    logged = obj.get("event") or obj.get("message") or obj.get("msg")
    facts: dict[str, Any] = {}
    if isinstance(logged, str) and logged:
        facts["log_message"] = logged[:MAX_NAME_CHARS]
    title = _primary(records).title
    return Occurrence(
        "json_log", records, title, fingerprint_records(records), text, key, wall, facts
    )


def _records_from_json(exc: Any) -> tuple[ExceptionRecord, ...]:
    if isinstance(exc, list) and exc and all(isinstance(s, dict) for s in exc):
        # structlog's dict tracebacks: the raised exception first, then its causes.
        out = []
        for stack in reversed(exc):
            frames = tuple(
                Frame(str(f.get("filename", "")), _int(f.get("lineno")), str(f.get("name", "")))
                for f in stack.get("frames") or ()
                if isinstance(f, dict)
            )
            out.append(
                ExceptionRecord(
                    str(stack.get("exc_type") or "Exception"),
                    str(stack.get("exc_value") or ""),
                    frames,
                )
            )
        return tuple(out)
    text = exc if isinstance(exc, str) else str(exc)
    tracebacks = assemble_text(text)
    if tracebacks:
        return tracebacks[-1].chain
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = parse_exception_line(lines[-1]) if lines else None
    if parsed is not None:
        return (ExceptionRecord(parsed[0], parsed[1]),)
    return (ExceptionRecord("LoggedException", lines[0] if lines else text),)


def _priority_occurrence(
    entry: dict[str, Any], unit: str, message: str, priority: str, wall: float
) -> Occurrence:
    level = PRIORITY_NAMES[priority]
    source = _field(entry, "SYSLOG_IDENTIFIER") or unit or _field(entry, "_COMM")
    record = ExceptionRecord(level, message)
    facts = {"priority": int(priority), "level": level}
    return Occurrence(
        "priority",
        (record,),
        record.title,
        fingerprint_message(source, message),
        message,
        _entry_key(entry),
        wall,
        facts,
    )


def _field(entry: dict[str, Any], name: str) -> str:
    value = entry.get(name)
    if type(value) is str:
        return value
    return entry_text(entry, name)


def _entry_key(entry: dict[str, Any]) -> str:
    cursor = entry.get("__CURSOR")
    if isinstance(cursor, str):
        return cursor
    return "entry:" + hashlib.sha256(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _file_key(offset: int, text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:12]
    return f"{offset}:{digest}"


def _record_ends(records: list[bytes], end: int) -> list[int]:
    """File offset just past each record (newline included), from the batch's end."""
    ends = [0] * len(records)
    for i in range(len(records) - 1, -1, -1):
        ends[i] = end
        end -= len(records[i]) + 1
    return ends


def _realtime(entry: dict[str, Any]) -> float | None:
    value = entry.get("__REALTIME_TIMESTAMP")
    try:
        return int(value) / 1e6 if value is not None else None
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _clip(text: str) -> str:
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    half = MAX_TRACEBACK_CHARS // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters ...]\n{text[-half:]}"
