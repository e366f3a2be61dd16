"""A question's consumer lifecycle: claim with a lease, lease extension, answered /
blocked / ready, lease expiry, re-opening on new evidence.

Pure: no I/O, the clock passed in. Each transition takes a question and returns the next
one (a feed line is due), the same object (nothing changed: a repeated request is
idempotent), or raises :class:`LifecycleError` with the HTTP status it maps to.

::

    ready --claim--> in_progress --answered--> answered --evidence changes--> ready
      ^                  |  \\--blocked--> blocked --answered--> answered
      |                  |                  |
      +---ready/expiry---+------ready-------+
    any status --monitor resolution--> resolved --gap seen again--> ready

A question held by one consumer (``in_progress`` with an unexpired lease) can only be
extended, answered, blocked or released by that consumer (or by a request naming no
consumer: an operator).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..models import CuriosityQuestion, QuestionStatus
from .identity import iso

DEFAULT_LEASE_S = 300.0
MAX_LEASE_S = 86_400.0
MAX_NAME_CHARS = 200
MAX_NOTE_CHARS = 4000
SETTABLE = (QuestionStatus.ANSWERED, QuestionStatus.BLOCKED, QuestionStatus.READY)


class LifecycleError(Exception):
    """A request that cannot be applied; ``status`` is the HTTP status it maps to."""

    status = 400


class BadRequest(LifecycleError):
    status = 400


class NotFound(LifecycleError):
    status = 404


class Conflict(LifecycleError):
    status = 409


# -- requests ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimRequest:
    consumer: str
    lease_s: float = DEFAULT_LEASE_S
    gap_types: frozenset[str] = frozenset()
    min_priority: float = 0.0

    def matches(self, q: CuriosityQuestion) -> bool:
        return (q.status == QuestionStatus.READY and q.priority >= self.min_priority
                and (not self.gap_types or q.metadata.get("gap_type") in self.gap_types))


@dataclass(frozen=True)
class LeaseRequest:
    consumer: str
    lease_s: float = DEFAULT_LEASE_S


@dataclass(frozen=True)
class StatusRequest:
    status: QuestionStatus
    note: str = ""
    consumer: str = ""


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _unknown(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise BadRequest(f"unknown field(s): {', '.join(extra)}")


def _name(body: dict[str, Any], key: str, *, required: bool) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise BadRequest(f"{key} must be a string of at most {MAX_NAME_CHARS} characters")
    value = value.strip()
    if required and not value:
        raise BadRequest(f"{key} is required")
    return value


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        low <= value <= high
    ):
        raise BadRequest(f"{key} must be a number between {low:g} and {high:g}")
    return float(value)


def parse_claim(body: Any) -> ClaimRequest:
    body = _object(body)
    _unknown(body, {"consumer", "lease_s", "gap_types", "min_priority"})
    gap_types = body.get("gap_types", [])
    if not isinstance(gap_types, list) or not all(isinstance(t, str) for t in gap_types):
        raise BadRequest("gap_types must be a list of strings")
    return ClaimRequest(
        consumer=_name(body, "consumer", required=True),
        lease_s=_number(body, "lease_s", DEFAULT_LEASE_S, 1.0, MAX_LEASE_S),
        gap_types=frozenset(gap_types),
        min_priority=_number(body, "min_priority", 0.0, float("-inf"), float("inf")),
    )


def parse_lease(body: Any) -> LeaseRequest:
    body = _object(body)
    _unknown(body, {"consumer", "lease_s"})
    return LeaseRequest(consumer=_name(body, "consumer", required=True),
                        lease_s=_number(body, "lease_s", DEFAULT_LEASE_S, 1.0, MAX_LEASE_S))


def parse_status(body: Any) -> StatusRequest:
    body = _object(body)
    _unknown(body, {"status", "note", "consumer"})
    raw = body.get("status")
    if raw not in {s.value for s in SETTABLE}:
        raise BadRequest("status must be one of: answered, blocked, ready")
    status = QuestionStatus(raw)
    note = body.get("note", "")
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise BadRequest(f"note must be a string of at most {MAX_NOTE_CHARS} characters")
    note = note.strip()
    if status != QuestionStatus.READY and not note:
        raise BadRequest(f"status {status.value} needs a note "
                         f"({'the answer or a link' if status == 'answered' else 'the reason'})")
    return StatusRequest(status=status, note=note, consumer=_name(body, "consumer",
                                                                  required=False))


# -- leases ------------------------------------------------------------------------------
def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def lease_until(q: CuriosityQuestion) -> float | None:
    """When the lease of an ``in_progress`` question runs out (None: no lease)."""
    claim = q.metadata.get("claim")
    if q.status != QuestionStatus.IN_PROGRESS or not isinstance(claim, dict):
        return None
    try:
        return parse_iso(str(claim["lease_until"]))
    except (KeyError, ValueError):
        return 0.0  # a damaged lease counts as expired: the question goes back to ready


def holder(q: CuriosityQuestion) -> str:
    claim = q.metadata.get("claim")
    return str(claim.get("consumer", "")) if isinstance(claim, dict) else ""


def _without(metadata: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k not in keys}


def _next(q: CuriosityQuestion, status: QuestionStatus, metadata: dict[str, Any],
          now: float) -> CuriosityQuestion:
    return q.model_copy(update={"status": status, "metadata": metadata,
                                "updated_at": iso(now)})


def pick(ranked: Iterable[CuriosityQuestion], req: ClaimRequest) -> CuriosityQuestion | None:
    """The first question (of those ranked highest first) this claim may take."""
    return next((q for q in ranked if req.matches(q)), None)


def claim(q: CuriosityQuestion, req: ClaimRequest, now: float) -> CuriosityQuestion:
    if not req.matches(q):
        raise Conflict(f"question {q.id} is {q.status.value}, not claimable")
    metadata = _without(q.metadata, "blocked")
    metadata["claim"] = {"consumer": req.consumer, "lease_until": iso(now + req.lease_s),
                         "claimed_at": iso(now)}
    metadata["claims"] = int(q.metadata.get("claims", 0)) + 1
    return _next(q, QuestionStatus.IN_PROGRESS, metadata, now)


def _check_holder(q: CuriosityQuestion, consumer: str, now: float) -> None:
    until = lease_until(q)
    if until is None:
        return
    if until <= now:
        raise Conflict(f"the lease on {q.id} has expired")
    if consumer and consumer != holder(q):
        raise Conflict(f"question {q.id} is held by {holder(q)!r}, not {consumer!r}")


def extend(q: CuriosityQuestion, req: LeaseRequest, now: float) -> CuriosityQuestion:
    if q.status != QuestionStatus.IN_PROGRESS:
        raise Conflict(f"question {q.id} is {q.status.value}: no lease to extend")
    _check_holder(q, req.consumer, now)
    metadata = dict(q.metadata)
    metadata["claim"] = {**q.metadata["claim"], "lease_until": iso(now + req.lease_s)}
    return _next(q, QuestionStatus.IN_PROGRESS, metadata, now)


def set_status(q: CuriosityQuestion, req: StatusRequest, now: float) -> CuriosityQuestion:
    """answered / blocked / ready by a consumer; the same request again changes nothing."""
    current, target = q.status, req.status
    if current == QuestionStatus.RESOLVED:
        raise Conflict(f"question {q.id} was resolved by its monitor")
    if current == QuestionStatus.ANSWERED:
        if target == QuestionStatus.ANSWERED and q.metadata.get("answer", {}).get(
                "note") == req.note:
            return q
        raise Conflict(f"question {q.id} is answered; it reopens when its evidence changes")
    if current == target == QuestionStatus.READY:
        return q
    if current == target == QuestionStatus.BLOCKED and q.metadata.get(
            "blocked", {}).get("note") == req.note:
        return q
    _check_holder(q, req.consumer, now)
    metadata = _without(q.metadata, "claim", "blocked")
    record = {"note": req.note, "consumer": req.consumer or holder(q), "at": iso(now)}
    if target == QuestionStatus.ANSWERED:
        metadata["answer"] = record
    elif target == QuestionStatus.BLOCKED:
        metadata["blocked"] = record
    return _next(q, target, metadata, now)


def expire(q: CuriosityQuestion, now: float) -> CuriosityQuestion | None:
    """An ``in_progress`` question whose lease ran out goes back to ``ready`` (counted in
    ``metadata.lease_expired``); None if its lease still runs (or it has none)."""
    until = lease_until(q)
    if until is None or until > now:
        return None
    metadata = _without(q.metadata, "claim")
    metadata["lease_expired"] = int(q.metadata.get("lease_expired", 0)) + 1
    return _next(q, QuestionStatus.READY, metadata, now)


def reopen_on_evidence(status: QuestionStatus, metadata: dict[str, Any]) -> bool:
    """An answered question whose evidence changed is ready again: counts
    ``metadata.reopened`` and keeps the old answer as ``previous_answer`` (in place)."""
    if status != QuestionStatus.ANSWERED:
        return False
    metadata["reopened"] = int(metadata.get("reopened", 0)) + 1
    if "answer" in metadata:
        metadata["previous_answer"] = metadata.pop("answer")
    return True
