"""The exception monitor's late chains: an exception published as a question of its own,
then found as the cause or context of a later chain of the same process, is withdrawn.
Pure: no clock, no I/O.

``logging.exception(...)`` and then raising another exception from the handler prints the
logged traceback, then the final chain that holds the logged exception as its context.
The assembler holds the logged record until the next record of its stream and drops it
when that holds it (:attr:`~kloros_stream.analysis.tracebacks.TracebackAssembler.absorbed`),
but on a loaded machine the re-raise may be written after the chain grace: the logged
record was then published alone, beside the chain's question. That edge is repaired from
the level, whenever it came late: every published occurrence is compared with the records
its process (:func:`stream_of`: unit, PID and identifier; a log file) published alone
before (:class:`LoneRecords`, the last :data:`PER_STREAM` of each of the last
:data:`MAX_STREAMS` processes, kept in the checkpoint). A remembered record whose final
exception (type, message and innermost frame: :func:`identity`) is a cause or context of
the new occurrence is absorbed: its sighting is taken off the fingerprint's count, and if
no other sighting is left its question is resolved (:func:`absorb`); a fingerprint also
seen elsewhere keeps its question open (those sightings stand on their own). A chain
re-read after a restart also withdraws its parts that the checkpoint does not count
(:func:`unrecorded`: published alone just before a kill, the checkpoint not yet saved).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from ..analysis.fingerprint import fingerprint_records
from ..analysis.occurrences import MAX_NAME_CHARS, Occurrence, primary
from ..analysis.traceback_text import ExceptionRecord
from .exception_state import FingerprintMemory

PER_STREAM = 4
"""Records published alone remembered per process (a logged exception, and the first part
of its chain finished early, are two)."""
MAX_STREAMS = 512
"""Processes remembered (least recently published forgotten first)."""
MAX_MESSAGE_CHARS = 200
"""Of an exception's message, this much counts for its identity (and is checkpointed)."""
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
    """The process an occurrence came from: ``("j", unit, pid, identifier)`` for the
    journal, ``("f", path)`` for a log file."""
    return (source, *("" if p is None else str(p) for p in parts))


@dataclass(frozen=True, slots=True)
class Lone:
    """An occurrence published alone, as remembered."""

    identity: Identity
    fingerprint: str
    title: str


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A remembered occurrence absorbed into a later chain of its process."""

    lone: Lone
    left: int
    """Sightings of its fingerprint left after this one is taken off (0: resolve it)."""
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

    def held(self, stream: tuple[str, ...], records: tuple[ExceptionRecord, ...]) -> list[Lone]:
        """Take out and return the remembered records of ``stream`` that ``records`` holds
        as a cause or context (every record of the chain but its final exception)."""
        kept = self._items.get(stream)
        if not kept or len(records) < 2:
            return []
        final = primary(records)
        causes = {identity(r) for r in records if r is not final}
        out = [lone for lone in kept if lone.identity in causes]
        if out:
            kept[:] = [lone for lone in kept if lone.identity not in causes]
            if not kept:
                del self._items[stream]
        return out

    def remember(self, stream: tuple[str, ...], occ: Occurrence) -> None:
        """Remember ``occ`` (published alone) as a record its process may hold later."""
        if occ.kind not in ABSORBING_KINDS or not occ.records:
            return
        lone = Lone(identity(primary(occ.records)), occ.fingerprint, occ.title[:MAX_NAME_CHARS])
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
            [list(stream), [[*lone.identity, lone.fingerprint, lone.title] for lone in kept]]
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
    if not (isinstance(item, list) and len(item) == 7):
        return None
    exc_type, message, filename, lineno, function, fp, title = item
    if not all(isinstance(v, str) for v in (exc_type, message, filename, function, fp, title)):
        return None
    if lineno is not None and type(lineno) is not int:
        return None
    return Lone((exc_type, message, filename, lineno, function), fp, title)


def absorb(
    lone: LoneRecords,
    memory: FingerprintMemory,
    stream: tuple[str, ...],
    occ: Occurrence,
    *,
    replayed: bool = False,
) -> list[Withdrawal]:
    """``occ`` was just published by ``stream``: the records of that process it holds are
    absorbed (each sighting taken off its fingerprint's count in ``memory``), then ``occ``
    is remembered in their place. ``replayed``: ``occ`` was re-read from before a restart
    (see :func:`unrecorded`)."""
    into = occ.title[:MAX_NAME_CHARS]
    out = [Withdrawal(item, memory.discount(item.fingerprint), into)
           for item in lone.held(stream, occ.records)]
    if replayed:
        done = {w.lone.fingerprint for w in out}
        out += [Withdrawal(item, 0, into) for item in unrecorded(occ.records, memory)
                if item.fingerprint not in done]
    lone.remember(stream, occ)
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
                out.append(Lone(identity(record), fp, record.title[:MAX_NAME_CHARS]))
    return out


def resolution(w: Withdrawal, where: str, gap_category: str) -> dict[str, Any]:
    """The CAPABILITY_GAP_RESOLVED facts of an absorbed occurrence's question (its
    ``gap_reason`` is the question's ``metadata.resolution`` in the feed)."""
    reason = (f"absorbed into the chain of {w.into}: {where} logged it, then raised that "
              "exception with it as the cause or context (one question per chain)")
    return {"gap_type": "exception", "gap_name": w.lone.title, "gap_category": gap_category,
            "gap_reason": reason, "fingerprint": w.lone.fingerprint}
