"""Stable identities and scores: question ids, evidence hashes, priority.

Ids come from the gap's own identity (gap_type plus fingerprint or gap_name) through
SHA-256, never from a clock or Python's salted ``hash()``: the same gap has the same id in
every process, on every host, after every restart.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any

import orjson


def gap_key(facts: dict[str, Any]) -> str:
    """What identifies a gap within its type: the fingerprint if any, else the gap name."""
    return str(facts.get("fingerprint") or facts["gap_name"])


def question_id(gap_type: str, key: str) -> str:
    digest = hashlib.sha256(f"{gap_type}\x00{key}".encode()).hexdigest()[:16]
    return f"{gap_type}-{digest}"


def evidence_hash(evidence: list[str]) -> str:
    return hashlib.sha256(orjson.dumps(evidence)).hexdigest()[:32]


def priority(value_estimate: float, cost: float, occurrences: int = 1) -> float:
    """Value per unit of cost, nudged up (logarithmically) by how often the gap recurs."""
    base = value_estimate / max(cost, 0.05)
    return round(base * (1 + 0.25 * math.log10(max(occurrences, 1))), 4)


def iso(ts: float) -> str:
    """ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
