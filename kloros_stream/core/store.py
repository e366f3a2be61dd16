"""What the core keeps of a question, and the store interface it works through.

A :class:`QuestionEntry` holds what ranking, dedup and the lifecycle need (id, status,
priority, occurrences, timestamps, evidence hash, gap type/name, monitor) and where the
question's full line lives; the full question is read back only when asked for.
:class:`QuestionStore` is the interface CuriosityCore (and the lifecycle transitions built on
it) use; :class:`MemoryStore` is its pure, in-memory implementation (one-shot views, unit
tests); :mod:`kloros_stream.store` is the durable one (feed + SQLite index).

Lifecycle transitions (claim, answer, ...) are one feed line each: build the next
:class:`CuriosityQuestion` and ``put`` it; status and every other field are generic here.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..models import OPEN_STATUSES, CuriosityQuestion, QuestionStatus

OPEN_STATUS_VALUES = frozenset(s.value for s in OPEN_STATUSES)
STATUS_VALUES = frozenset(s.value for s in QuestionStatus)
VIEWS = ("open", "all")


@dataclass(frozen=True, slots=True)
class QuestionEntry:
    """One question as the index knows it; ``offset``/``length``: its line in the feed."""

    id: str
    status: str
    priority: float
    occurrences: int
    created_at: str
    updated_at: str
    last_seen: str
    evidence_hash: str
    gap_type: str
    gap_name: str
    monitor: str
    offset: int = -1
    length: int = 0
    live: bool = True
    """False once a resolved question is past the retention (archived at compaction)."""

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUS_VALUES

    @property
    def rank(self) -> tuple[float, str]:
        """Sort key: highest priority first, then id."""
        return (-self.priority, self.id)


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def entry_of(data: Mapping[str, Any], offset: int = -1, length: int = 0) -> QuestionEntry:
    """The entry of a question given as JSON data (a feed line, a model dump)."""
    meta = data.get("metadata")
    if not isinstance(meta, Mapping):
        raise ValueError("metadata is not an object")
    occurrences = meta.get("occurrences", 1)
    if not isinstance(occurrences, int):
        raise ValueError("metadata.occurrences is not an integer")
    priority = data["priority"]
    if not isinstance(priority, int | float) or isinstance(priority, bool):
        raise ValueError("priority is not a number")
    status = data.get("status", QuestionStatus.READY.value)
    if status not in STATUS_VALUES:
        raise ValueError(f"unknown status {status!r}")
    return QuestionEntry(
        id=str(data["id"]), status=status, priority=float(priority), occurrences=occurrences,
        created_at=_str(data.get("created_at")), updated_at=_str(data.get("updated_at")),
        last_seen=_str(meta.get("last_seen")), evidence_hash=_str(data.get("evidence_hash")),
        gap_type=_str(meta.get("gap_type"), "unknown"), gap_name=_str(meta.get("gap_name")),
        monitor=_str(meta.get("monitor")), offset=offset, length=length)


def entry_of_question(q: CuriosityQuestion, offset: int = -1, length: int = 0
                      ) -> QuestionEntry:
    meta = q.metadata
    occurrences = meta.get("occurrences", 1)
    return QuestionEntry(
        id=q.id, status=q.status.value, priority=q.priority,
        occurrences=occurrences if isinstance(occurrences, int) else 1,
        created_at=q.created_at, updated_at=q.updated_at,
        last_seen=_str(meta.get("last_seen")), evidence_hash=q.evidence_hash,
        gap_type=_str(meta.get("gap_type"), "unknown"), gap_name=_str(meta.get("gap_name")),
        monitor=_str(meta.get("monitor")), offset=offset, length=length)


def question_json(q: CuriosityQuestion) -> bytes:
    """One question as JSON: orjson, or pydantic for what orjson refuses (ints > 64 bit)."""
    try:
        return orjson.dumps(q.model_dump(mode="json"))
    except TypeError:
        return q.model_dump_json().encode()


# -- selection -------------------------------------------------------------------------------
class CursorError(ValueError):
    """A page cursor that this service did not hand out."""


def encode_cursor(entry: QuestionEntry) -> str:
    raw = orjson.dumps([entry.priority, entry.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[float, str]:
    """``(priority, id)`` of the last question of the previous page."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        priority, qid = data
        if isinstance(priority, bool) or not isinstance(priority, int | float) \
                or not isinstance(qid, str):
            raise TypeError
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
        raise CursorError("cursor is not one this service handed out") from None
    return float(priority), qid


@dataclass(frozen=True, slots=True)
class Selection:
    """Which questions, ranked (highest priority first, then id), and how many."""

    status: str = "open"
    """``open`` (ready, in_progress, blocked), ``all``, or one status value."""
    gap_type: str | None = None
    monitor: str | None = None
    after: tuple[float, str] | None = None
    """Keyset cursor: only questions ranked after this ``(priority, id)``."""
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.status not in VIEWS and self.status not in STATUS_VALUES:
            raise ValueError(f"status must be one of {', '.join((*VIEWS, *sorted(STATUS_VALUES)))}")

    def matches(self, e: QuestionEntry) -> bool:
        if not e.live:
            return False
        if self.status == "open":
            if not e.is_open:
                return False
        elif self.status != "all" and e.status != self.status:
            return False
        if self.gap_type is not None and e.gap_type != self.gap_type:
            return False
        if self.monitor is not None and e.monitor != self.monitor:
            return False
        return self.after is None or e.rank > (-self.after[0], self.after[1])


class QuestionStore(Protocol):
    """Where the core's questions live (latest version per id)."""

    def entry(self, qid: str) -> QuestionEntry | None:
        """The entry of ``qid``, retained-or-not (dedup sees archived-to-be questions)."""

    def read(self, qid: str) -> CuriosityQuestion | None:
        """The full question (from disk for a durable store)."""

    def read_json(self, entry: QuestionEntry) -> bytes | None:
        """The question's JSON as stored (one feed line without its newline); None if it
        cannot be read (logged)."""

    def put(self, q: CuriosityQuestion) -> None:
        """Record a new version: one feed line (written at the store's next flush)."""

    def select(self, sel: Selection) -> list[QuestionEntry]:
        """Matching live questions, ranked, at most ``sel.limit``."""

    def counts(self) -> Counter[tuple[str, bool]]:
        """``(gap_type, is_open) -> n`` over the live questions."""

    def ids(self) -> Iterator[str]:
        """Every live question's id."""


class MemoryStore:
    """Questions held whole in memory: no I/O (one-shot views and unit tests)."""

    def __init__(self) -> None:
        self._questions: dict[str, CuriosityQuestion] = {}

    def entry(self, qid: str) -> QuestionEntry | None:
        q = self._questions.get(qid)
        return None if q is None else entry_of_question(q)

    def read(self, qid: str) -> CuriosityQuestion | None:
        return self._questions.get(qid)

    def read_json(self, entry: QuestionEntry) -> bytes:
        return question_json(self._questions[entry.id])

    def put(self, q: CuriosityQuestion) -> None:
        self._questions[q.id] = q

    def select(self, sel: Selection) -> list[QuestionEntry]:
        found = [e for e in map(entry_of_question, self._questions.values()) if sel.matches(e)]
        found.sort(key=lambda e: e.rank)
        return found if sel.limit is None else found[: sel.limit]

    def counts(self) -> Counter[tuple[str, bool]]:
        return Counter((e.gap_type, e.is_open)
                       for e in map(entry_of_question, self._questions.values()))

    def ids(self) -> Iterator[str]:
        return iter(list(self._questions))
