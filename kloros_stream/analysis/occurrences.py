"""Occurrences of errors, built from what a source decoded (pure: no I/O, no clock).

An :class:`Occurrence` is one sighting of an error, ready to publish: a reassembled
traceback, a JSON log line with an ``exception`` field (a traceback text or structlog's
dict tracebacks), or a journal entry logged at an error priority. Each carries the
Sentry-like fingerprint (:mod:`.fingerprint`) that makes one question per bug.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from .fingerprint import fingerprint_message, fingerprint_records
from .tracebacks import (
    ExceptionRecord,
    Frame,
    Traceback,
    assemble_text,
    format_records,
    parse_exception_line,
)

MAX_TRACEBACK_CHARS = 32_000
MAX_NAME_CHARS = 300
PRIORITY_NAMES = {"0": "emerg", "1": "alert", "2": "crit", "3": "err"}


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


def primary(records: tuple[ExceptionRecord, ...]) -> ExceptionRecord:
    """The raised exception of a chain (depth 0, the last one), else the last record."""
    for record in reversed(records):
        if record.depth == 0:
            return record
    return records[-1]


def traceback_occurrence(tb: Traceback, key: str, wall: float) -> Occurrence:
    raised = tb.primary
    facts: dict[str, Any] = {"complete": tb.complete}
    return Occurrence(
        "traceback",
        tb.chain,
        raised.title,
        fingerprint_records(tb.chain),
        tb.text,
        key,
        wall,
        facts,
    )


def json_occurrence(line: str, key: str, wall: float) -> Occurrence | None:
    """A JSON object with a non-empty ``exception`` field, else None."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not obj.get("exception"):
        return None
    exc = obj["exception"]
    records = records_from_json(exc)
    text = exc if isinstance(exc, str) else format_records(records)
    logged = obj.get("event") or obj.get("message") or obj.get("msg")
    facts: dict[str, Any] = {}
    if isinstance(logged, str) and logged:
        facts["log_message"] = logged[:MAX_NAME_CHARS]
    title = primary(records).title
    return Occurrence(
        "json_log", records, title, fingerprint_records(records), text, key, wall, facts
    )


def records_from_json(exc: Any) -> tuple[ExceptionRecord, ...]:
    if isinstance(exc, list) and exc and all(isinstance(s, dict) for s in exc):
        # structlog's dict tracebacks: the raised exception first, then its causes.
        out = []
        for stack in reversed(exc):
            frames = tuple(
                Frame(str(f.get("filename", "")), as_int(f.get("lineno")), str(f.get("name", "")))
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


def priority_occurrence(
    source: str, message: str, priority: str, key: str, wall: float
) -> Occurrence:
    """A journal entry logged at ``priority`` (one of :data:`PRIORITY_NAMES`) by ``source``."""
    level = PRIORITY_NAMES[priority]
    record = ExceptionRecord(level, message)
    facts = {"priority": int(priority), "level": level}
    return Occurrence(
        "priority",
        (record,),
        record.title,
        fingerprint_message(source, message),
        message,
        key,
        wall,
        facts,
    )


def file_key(offset: int, text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:12]
    return f"{offset}:{digest}"


def as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def clip(text: str) -> str:
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    half = MAX_TRACEBACK_CHARS // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters ...]\n{text[-half:]}"


def gap_reason(occ: Occurrence, where: str) -> str:
    """The question's reason: who raised or logged what, at ``where`` (a unit, a file)."""
    if occ.kind == "traceback":
        reason = f"{where} raised {primary(occ.records).exc_type}"
    elif occ.kind == "json_log":
        reason = f"{where} logged {primary(occ.records).exc_type} in a JSON log line"
    elif occ.kind == "priority":
        reason = (
            f"{where} logged at priority {occ.facts.get('priority')} ({occ.facts.get('level')})"
        )
    else:
        raise KeyError(occ.kind)
    if occ.facts.get("complete") is False:
        reason += " (incomplete traceback)"
    return reason


def gap_facts(
    occ: Occurrence,
    *,
    occurrences: int,
    first_seen: str,
    last_seen: str,
    source_context: list[str] | None,
) -> dict[str, Any]:
    """The facts of the gap an occurrence publishes: the fingerprint, the clipped text, the
    raised exception, the sighting counts, then the occurrence's own facts, its chain's
    titles (if a chain) and ``source_context`` (if given: a fingerprint's first sighting)."""
    raised = primary(occ.records)
    own = dict(occ.facts)
    if len(occ.records) > 1:
        own["chain"] = [r.title[:MAX_NAME_CHARS] for r in occ.records[:20]]
    if source_context is not None:
        own["source_context"] = source_context
    return {
        "fingerprint": occ.fingerprint,
        "traceback": clip(occ.text),
        "kind": occ.kind,
        "exception_type": raised.exc_type,
        "message": raised.first_line,
        "occurrences": occurrences,
        "first_seen": first_seen,
        "last_seen": last_seen,
        **own,
    }
