"""The exception monitor's journal side: what an entry is as an occurrence, and where a
restart must resume.

- :func:`stream_key`: the stream a traceback line belongs to (unit, PID, identifier,
  stream id, priority), so interleaved processes are reassembled apart;
- :func:`whole_message_occurrences`: a multi-line ``MESSAGE`` parsed whole;
- :func:`entry_priority_occurrence`: an entry logged at an error priority;
- :func:`add_journal_facts`: the journal facts of an occurrence and its latency origin;
- :func:`safe_cursor`: just before the oldest traceback still being assembled;
- :func:`written_before`: an entry written before a wall time (one a killed run may have read);
- :func:`journal_sighting`: an occurrence's process and entry times for absorption;
- :func:`sync_follower_status`: journalctl's process and counters in the monitor status;
- :class:`DeliveryLag`: how late entries reach the monitor, which widens the chain grace.

Field access is :mod:`kloros_stream.sources.journal`'s; building occurrences is
:mod:`kloros_stream.analysis.occurrences`'s (pure); this module only joins them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..analysis.occurrences import (
    PRIORITY_NAMES,
    Occurrence,
    as_int,
    json_occurrence,
    priority_occurrence,
    traceback_occurrence,
)
from ..analysis.tracebacks import Assembled, assemble_text
from ..core.identity import iso
from ..sources.journal import (
    JournalBatch,
    JournalFollower,
    entry_field,
    entry_key,
    entry_realtime,
)
from .base import MonitorStatus
from .exception_absorb import Sighting, stream_of

LIVE_WINDOW_S = 10.0
"""An entry read within this of its journal timestamp is live: its timestamp is the
latency origin (``observed_at``); older entries (replays) use the time they were read."""
LAG_HALF_LIFE_S = 5.0
"""How fast a delivery lag seen once is forgotten."""


@dataclass(slots=True)
class JournalMeta:
    """What the assembler keeps of a journal line of a traceback."""

    entry: dict[str, Any]
    prev_cursor: str | None
    """The cursor of the entry before this one: where a restart must resume to re-read it."""
    seq: int
    wall: float


def stream_key(entry: dict[str, Any], unit: str, priority: str) -> tuple[str, ...]:
    """The assembler key of a journal line. One print of a traceback shares its stream and
    priority; a line logged at another priority in between is a record of its own."""
    return (
        "j",
        unit,
        entry_field(entry, "_PID"),
        entry_field(entry, "SYSLOG_IDENTIFIER"),
        entry_field(entry, "_STREAM_ID"),
        priority,
    )


def entry_priority_occurrence(
    entry: dict[str, Any], unit: str, message: str, priority: str, wall: float
) -> Occurrence:
    """The entry as logged at ``priority`` (one of :data:`PRIORITY_NAMES`) by its
    identifier, else its unit, else its command."""
    source = entry_field(entry, "SYSLOG_IDENTIFIER") or unit or entry_field(entry, "_COMM")
    return priority_occurrence(source, message, priority, entry_key(entry), wall)


def line_occurrence(
    entry: dict[str, Any], unit: str, message: str, priority: str, wall: float
) -> Occurrence | None:
    """A one-line entry that no traceback took: a JSON log line with an ``exception``
    field, else an entry at an error priority, else None."""
    if message.startswith("{") and '"exception"' in message:
        occ = json_occurrence(message, entry_key(entry), wall)
        if occ is not None:
            return occ
    if priority in PRIORITY_NAMES:
        return entry_priority_occurrence(entry, unit, message, priority, wall)
    return None


def whole_message_occurrences(
    entry: dict[str, Any], unit: str, message: str, wall: float
) -> list[Occurrence]:
    """A multi-line ``MESSAGE`` (native protocol, syslog, JournalHandler) parsed whole: its
    tracebacks, else a JSON log line with an ``exception`` field, else an error priority."""
    base = entry_key(entry)
    tracebacks = assemble_text(message)
    if tracebacks:
        return [
            traceback_occurrence(tb, base if len(tracebacks) == 1 else f"{base}#{i}", wall)
            for i, tb in enumerate(tracebacks)
        ]
    occ = line_occurrence(entry, unit, message, entry_field(entry, "PRIORITY"), wall)
    return [] if occ is None else [occ]


def add_journal_facts(
    occ: Occurrence, first: dict[str, Any], unit: str, last: dict[str, Any], wall: float
) -> None:
    """The journal facts (unit, PID, identifier, cursor, first entry's timestamp); a live
    occurrence's ``observed_at`` becomes its last entry's journal timestamp."""
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


def written_before(entry: dict[str, Any], at: float | None) -> bool:
    """Whether the entry was written before wall time ``at`` (None: never)."""
    ts = entry_realtime(entry)
    return at is not None and ts is not None and ts < at


def journal_sighting(
    first: dict[str, Any],
    unit: str,
    last: dict[str, Any],
    before: float | None,
    item: Assembled | None = None,
) -> Sighting:
    """An occurrence of entries ``first`` to ``last`` as absorption sees it: its process
    (unit, PID, identifier, boot; none without a PID), its entries' own times, and whether
    a killed previous run may have read it (written before ``before``)."""
    pid = entry_field(first, "_PID")
    stream = None
    if pid:
        stream = stream_of(
            "j", unit, pid, entry_field(first, "SYSLOG_IDENTIFIER"), entry_field(first, "_BOOT_ID")
        )
    return Sighting.of(
        stream,
        entry_realtime(first),
        entry_realtime(last),
        item,
        lambda meta: entry_realtime(meta.entry),
        written_before(first, before),
    )


def safe_cursor(pending_first_metas: Iterable[Any], cursor: str | None) -> str | None:
    """Just before the oldest journal traceback still being assembled, else ``cursor``
    (the last entry processed)."""
    oldest: JournalMeta | None = None
    for meta in pending_first_metas:
        if isinstance(meta, JournalMeta) and (oldest is None or meta.seq < oldest.seq):
            oldest = meta
    return oldest.prev_cursor if oldest is not None else cursor


def sync_follower_status(
    follower: JournalFollower, status: MonitorStatus, synced: dict[str, int]
) -> None:
    """journalctl's PID, restarts and last exit in ``/health`` details, and what its
    counters gained since ``synced`` (updated) added to the monitor's counters."""
    f = follower
    status.details["journalctl"] = {"pid": f.pid, "restarts": f.restarts, "last_exit": f.last_exit}
    for name, value in (
        ("journalctl_restarts", f.restarts),
        ("journal_lines_skipped", f.lines_skipped),
        ("journal_lines_malformed", f.lines_malformed),
    ):
        delta = value - synced.get(name, 0)
        if delta:
            status.count(name, delta)
            synced[name] = value


class DeliveryLag:
    """How late entries reach the monitor (journald, journalctl, the event loop), as a
    maximum that halves every :data:`LAG_HALF_LIFE_S`. On a loaded machine every process
    waits for a CPU: a service between the parts of a chained traceback (or between a
    logged exception and the one it raises next) about as long as the pipe to us, so the
    chain grace is at least this lag; an idle machine keeps the short grace. Entries older
    than ``cap`` (a backlog, a replay) tell nothing about the machine and are left out."""

    def __init__(self, floor: float, cap: float) -> None:
        self.floor, self.cap = floor, cap
        self.value = 0.0
        self._at: float | None = None

    def grace(self, batch: JournalBatch, now: float) -> float:
        """The chain grace after ``batch`` (read at loop time ``now``)."""
        ts = entry_realtime(batch.entries[-1]) if batch.entries else None
        decayed = 0.0
        if self._at is not None:
            decayed = self.value * 0.5 ** ((now - self._at) / LAG_HALF_LIFE_S)
        lag = batch.observed_at - ts if ts is not None else -1.0
        self.value = max(decayed, lag) if 0.0 <= lag <= self.cap else decayed
        self._at = now
        return min(self.cap, max(self.floor, self.value))
