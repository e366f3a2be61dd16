"""The exception monitor's late chains: an exception published as a question of its own,
then found as the cause or context of a later chain of the same process, is withdrawn.
Pure: no clock, no I/O.

``logging.exception(...)`` and then raising another exception from the handler prints the
logged traceback, then the final chain that holds the logged exception as its context.
The assembler holds the logged record until the next record of its stream and drops it
when that holds it (:attr:`~kloros_stream.analysis.tracebacks.TracebackAssembler.absorbed`),
but on a loaded machine the re-raise may be written after the chain grace: the logged
record was then published alone, beside the chain's question. That is undone afterwards,
however late the chain came: every published occurrence is compared with the records
its process (:func:`stream_of`: unit, PID, identifier and boot; a log file; none without a
PID) published alone just before it (:class:`LoneRecords`, the last :data:`PER_STREAM` of
each of the last :data:`MAX_STREAMS` processes, kept in the checkpoint). Only the latest
run of them counts (:meth:`LoneRecords.held`): walking back from the last one the process
published, each whose final exception (type, message and innermost frame: :func:`identity`)
is a cause or context of the new chain not yet matched, written at most :data:`MAX_GAP_S`
before the chain's first entry, is absorbed (one per cause record; none for a cause whose
logged record the assembler already absorbed in time); the walk stops at the first that
does not qualify (the limits of telling a late re-raise from a separate sighting this
way are in docs/monitors.md). An absorbed sighting is taken off
the fingerprint's count; with no other sighting left its question is resolved
(:func:`absorb`). A chain re-read after a kill also withdraws its parts that the
checkpoint does not count (:func:`unrecorded`: published alone just before the kill, the
checkpoint not yet saved), if the previous run may have read them.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

from ..analysis.fingerprint import fingerprint_records
from ..analysis.occurrences import MAX_NAME_CHARS, Occurrence, primary
from ..analysis.traceback_text import ExceptionRecord
from ..analysis.tracebacks import Assembled
from .exception_state import FingerprintMemory

PER_STREAM = 4
"""Records published alone remembered per process (a logged exception, and the first part
of its chain finished early, are two)."""
MAX_STREAMS = 512
"""Processes remembered (least recently published forgotten first)."""
MAX_MESSAGE_CHARS = 200
"""Of an exception's message, this much counts for its identity (and is checkpointed)."""
MAX_GAP_S = 30.0
"""A record published alone is held by a chain of its process only if the chain's first
entry was written at most this long after the record's last (the entries' own times)."""
ABSORBING_KINDS = frozenset({"traceback", "json_log"})
"""Occurrences with an exception chain (an error-priority line holds no cause)."""

Identity = tuple[str, str, str, int | None, str]
"""``(type, message, innermost frame's file, line, function)``."""


def identity(record: ExceptionRecord) -> Identity:
    """An exception as printed once: its type, message and where it was raised."""
    frame = record.frames[-1] if record.frames else None
    return (
        record.exc_type,
        record.message[:MAX_MESSAGE_CHARS],
        frame.filename if frame else "",
        frame.lineno if frame else None,
        frame.function if frame else "",
    )


def stream_of(source: str, *parts: Any) -> tuple[str, ...]:
    """The process an occurrence came from: ``("j", unit, pid, identifier, boot)`` for the
    journal, ``("f", path)`` for a log file."""
    return (source, *("" if p is None else str(p) for p in parts))


@dataclass(frozen=True, slots=True)
class Sighting:
    """Where and when a published occurrence was written, as :func:`absorb` needs it."""

    stream: tuple[str, ...] | None
    """Its process (:func:`stream_of`); None: unknown (nothing remembered or absorbed)."""
    first_at: float | None
    """Its first entry's own timestamp (None: unknown, it holds nothing)."""
    last_at: float | None
    """Its last entry's own timestamp (None: unknown, it is never held)."""
    in_time: tuple[tuple[ExceptionRecord, float | None], ...] = ()
    """Logged records the assembler absorbed into it in time, with their last entry's
    time: a cause no remembered record stands for again (unless it is that same print,
    re-read after a restart)."""
    rejoined: bool = False
    """Its head was published alone before its tail came (that head is its own print)."""
    replayed: bool = False
    """Re-read after a kill: the previous run may have read it unrecorded."""

    @classmethod
    def of(cls, stream: tuple[str, ...] | None, first_at: float | None,
           last_at: float | None, item: Assembled | None,
           when: Callable[[Any], float | None] = lambda meta: meta,
           replayed: bool = False) -> Sighting:
        """The sighting of an occurrence built from ``item`` (None: from one line);
        ``when``: a line's own time from its metadata."""
        if item is None:
            return cls(stream, first_at, last_at, replayed=replayed)
        return cls(stream, first_at, last_at, tuple(_in_time(item.absorbed, when)),
                   item.rejoined, replayed)


def _in_time(absorbed: tuple[Assembled, ...],
             when: Callable[[Any], float | None]) -> Iterator[tuple[ExceptionRecord, float | None]]:
    """Every exception of the prints absorbed in time, and of what they absorbed in turn
    (a logged record absorbed into a printed chain absorbed into the final one)."""
    for item in absorbed:
        at = when(item.last_meta)
        for record in item.traceback.chain:
            if record.depth == 0:
                yield record, at
        yield from _in_time(item.absorbed, when)


@dataclass(frozen=True, slots=True)
class Lone:
    """An occurrence published alone, as remembered."""

    identity: Identity
    fingerprint: str
    title: str
    at: float | None
    """Its last entry's own timestamp (None: unknown, never held)."""


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A remembered occurrence absorbed into a later chain of its process."""

    lone: Lone
    left: int | None
    """Sightings of its fingerprint left after this one is taken off (0: resolve it;
    None: the fingerprint is no longer counted, nothing is resolved)."""
    into: str
    """The title of the chain that holds it."""

    def log_fields(self) -> dict[str, Any]:
        return {"name": self.lone.title, "fingerprint": self.lone.fingerprint,
                "into": self.into, "occurrences_left": self.left}


class LoneRecords:
    """Per process, the last occurrences published alone (see the module docstring)."""

    def __init__(self, per_stream: int = PER_STREAM, streams: int = MAX_STREAMS) -> None:
        self.per_stream = per_stream
        self.streams = streams
        self._items: OrderedDict[Hashable, list[Lone]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(v) for v in self._items.values())

    def held(self, stream: tuple[str, ...], records: tuple[ExceptionRecord, ...],
             seen: Sighting) -> list[Lone]:
        """Take out and return the latest records of ``stream`` that ``records`` holds as a
        cause or context (see the module docstring): from the last one back, one per
        cause record not absorbed in time, each written at most :data:`MAX_GAP_S` before
        the chain; the first that does not qualify ends the walk."""
        kept = self._items.get(stream)
        if not kept or len(records) < 2 or seen.first_at is None:
            return []
        final = primary(records)
        causes = Counter(identity(r) for r in records if r is not final)
        remembered = {(x.identity, x.at) for x in kept}
        for record, at in seen.in_time:
            if (identity(record), at) not in remembered:
                causes[identity(record)] -= 1
        own, out = seen.rejoined, []
        while kept:
            item = kept[-1]
            if (item.at is None or seen.first_at - item.at > MAX_GAP_S
                    or causes[item.identity] <= 0):
                break
            if own:  # the chain's own head, published before its tail: holds no cause
                own = False
            else:
                causes[item.identity] -= 1
            out.append(kept.pop())
        if not kept:
            del self._items[stream]
        return out

    def remember(self, stream: tuple[str, ...], occ: Occurrence, at: float | None) -> None:
        """Remember ``occ`` (published alone, its last entry written at ``at``) as a record
        its process may hold later; anything else it published ends the run before it."""
        if occ.kind not in ABSORBING_KINDS or not occ.records:
            self._items.pop(stream, None)
            return
        title = occ.title[:MAX_NAME_CHARS]
        lone = Lone(identity(primary(occ.records)), occ.fingerprint, title, at)
        kept = self._items.get(stream)
        if kept is None:
            kept = self._items[stream] = []
            if len(self._items) > self.streams:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(stream)
        kept.append(lone)
        del kept[: -self.per_stream]

    def dump(self) -> list[list[Any]]:
        return [
            [list(stream), [[*x.identity, x.fingerprint, x.title, x.at] for x in kept]]
            for stream, kept in self._items.items()
        ]

    def load(self, data: Any) -> None:
        """Restore from :meth:`dump`'s output; malformed rows are left out."""
        if not isinstance(data, list):
            return
        for row in data[-self.streams :]:
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], list)
                    and isinstance(row[1], list)):
                continue
            kept = [lone for item in row[1][-self.per_stream :] if (lone := _lone(item))]
            if kept:
                self._items[tuple(str(p) for p in row[0])] = kept


def _lone(item: Any) -> Lone | None:
    if not (isinstance(item, list) and len(item) in (7, 8)):
        return None
    exc_type, message, filename, lineno, function, fp, title = item[:7]
    at = item[7] if len(item) == 8 else None  # an older checkpoint: never held
    if not all(isinstance(v, str) for v in (exc_type, message, filename, function, fp, title)):
        return None
    if lineno is not None and type(lineno) is not int:
        return None
    if at is not None and type(at) not in (int, float):
        return None
    return Lone((exc_type, message, filename, lineno, function), fp, title,
                None if at is None else float(at))


def absorb(
    lone: LoneRecords, memory: FingerprintMemory, occ: Occurrence, seen: Sighting
) -> list[Withdrawal]:
    """``occ`` was just published (``seen``: by which process, when): the records of
    that process it holds are absorbed (each sighting taken off its fingerprint's count in
    ``memory``), then ``occ`` is remembered in their place. A replayed chain also withdraws
    its parts the checkpoint does not count (:func:`unrecorded`)."""
    into = occ.title[:MAX_NAME_CHARS]
    out: list[Withdrawal] = []
    if seen.stream is not None:
        out = [Withdrawal(item, memory.discount(item.fingerprint), into)
               for item in lone.held(seen.stream, occ.records, seen)]
    if seen.replayed:
        done = {w.lone.fingerprint for w in out}
        out += [Withdrawal(item, 0, into) for item in unrecorded(occ.records, memory)
                if item.fingerprint not in done]
    if seen.stream is not None:
        lone.remember(seen.stream, occ, seen.last_at)
    return out


def unrecorded(records: tuple[ExceptionRecord, ...], memory: FingerprintMemory) -> list[Lone]:
    """The parts of a chain that could have been published alone (each cause or context
    with what it holds in turn) whose fingerprints ``memory`` does not count. For a chain
    re-read after a restart: the previous run may have published such a part alone and been
    killed before its checkpoint recorded it, and now the re-read chain comes whole (the
    assembler absorbs the part): withdrawing a question that was never asked changes
    nothing in the feed."""
    final = primary(records)
    out: list[Lone] = []
    for i, record in enumerate(records):
        if record is final:
            break
        if record.depth == 0:
            fp = fingerprint_records(records[: i + 1])
            if fp not in memory:
                out.append(Lone(identity(record), fp, record.title[:MAX_NAME_CHARS], None))
    return out


def resolution(w: Withdrawal, where: str, gap_category: str) -> dict[str, Any]:
    """The CAPABILITY_GAP_RESOLVED facts of an absorbed occurrence's question (its
    ``gap_reason`` is the question's ``metadata.resolution`` in the feed)."""
    reason = (f"absorbed into the chain of {w.into}: {where} logged it, then raised that "
              "exception with it as the cause or context (one question per chain)")
    return {"gap_type": "exception", "gap_name": w.lone.title, "gap_category": gap_category,
            "gap_reason": reason, "fingerprint": w.lone.fingerprint}
