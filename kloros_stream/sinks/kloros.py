"""KLoROS's shapes for questions, read from its code (HomoYouDidnt/kloros at commit
09c094d7fe5c4f60ee9aacde57f8093c491c1789): pure functions, no I/O.

- ``CuriosityQuestion`` (``src/cognition/awareness/monitors/base_types.py``) has exactly
  :data:`KLOROS_QUESTION_FIELDS`; its ``QuestionStatus`` knows :data:`KLOROS_STATUSES`
  (no ``resolved``) and its ``ActionClass`` the same seven values as ours.
- ``CuriosityFeed.to_dict()`` is ``{"questions": [...], "generated_at", "count"}``.
- ``CuriosityCore.emit_questions_to_bus()`` (``src/cognition/awareness/curiosity_core.py``)
  emits ``Q_CURIOSITY_INVESTIGATE`` (ecosystem ``introspection``, intensity 1.0) for a
  question whose ``value_estimate / max(cost, 0.01)`` is at least ``value_threshold``
  (1.5), with the facts of :func:`investigate_facts` and ``priority`` from the action
  class (:data:`PRIORITY_BY_ACTION`, anything else ``normal``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

from ..models import CuriosityQuestion

KLOROS_COMMIT = "09c094d7fe5c4f60ee9aacde57f8093c491c1789"
KLOROS_QUESTION_FIELDS: tuple[str, ...] = (
    "id", "hypothesis", "question", "evidence", "evidence_hash", "action_class", "autonomy",
    "value_estimate", "cost", "status", "created_at", "capability_key", "metadata",
)
KLOROS_STATUSES = frozenset({"ready", "in_progress", "answered", "blocked"})
PRIORITY_BY_ACTION = {
    "propose_fix": "high",
    "investigate": "normal",
    "find_substitute": "normal",
    "explain_and_soft_fallback": "low",
}
INVESTIGATE_SIGNAL = "Q_CURIOSITY_INVESTIGATE"
INVESTIGATE_ECOSYSTEM = "introspection"
MIN_COST = 0.01
"""KLoROS divides by ``max(cost, 0.01)``."""


def value_ratio(q: CuriosityQuestion) -> float:
    """KLoROS's ranking and threshold figure: value per unit of cost."""
    return q.value_estimate / max(q.cost, MIN_COST)


def kloros_priority(action_class: str) -> str:
    return PRIORITY_BY_ACTION.get(action_class, "normal")


def kloros_question(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """A question (as JSON data) the way KLoROS's ``CuriosityQuestion.to_dict()`` writes it,
    or None when its status is one KLoROS does not know (``resolved``)."""
    if data.get("status") not in KLOROS_STATUSES:
        return None
    return {name: data.get(name) for name in KLOROS_QUESTION_FIELDS}


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # integers beyond 64 bits: the stdlib reads them
        return json.loads(raw)


def _dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, default=str).encode()


def kloros_item(raw: bytes) -> bytes | None:
    """One feed line's question in KLoROS's shape, as JSON (None: a status KLoROS lacks)."""
    item = kloros_question(_loads(raw))
    return None if item is None else _dumps(item)


def feed_document(items: list[bytes], generated_at: str) -> bytes:
    """``CuriosityFeed.to_dict()`` as JSON bytes, from questions already serialised."""
    return (b'{"questions": [\n' + b",\n".join(items) + b'\n], "generated_at": '
            + orjson.dumps(generated_at) + b', "count": ' + str(len(items)).encode() + b"}\n")


def investigate_facts(q: CuriosityQuestion) -> dict[str, Any]:
    """The facts of KLoROS's ``Q_CURIOSITY_INVESTIGATE``, in its order."""
    action = str(q.action_class)
    return {
        "question_id": q.id,
        "question": q.question,
        "hypothesis": q.hypothesis,
        "evidence": q.evidence,
        "capability_key": q.capability_key or "",
        "action_class": action,
        "value_estimate": q.value_estimate,
        "cost_estimate": q.cost,
        "priority": kloros_priority(action),
    }


def sent_key(q: CuriosityQuestion) -> str:
    """What makes a question worth sending again: its evidence, and each reopening."""
    return f"{q.evidence_hash}:{int(q.metadata.get('reopened', 0) or 0)}"
