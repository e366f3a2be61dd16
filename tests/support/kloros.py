"""KLoROS's own readers, written here from its source (HomoYouDidnt/kloros at commit
09c094d7fe5c4f60ee9aacde57f8093c491c1789), to check what we write against them.

- :class:`CuriosityQuestion`, :class:`QuestionStatus`, :class:`ActionClass`: copied field
  for field from ``src/cognition/awareness/monitors/base_types.py`` (facts, not code: the
  names, defaults and enum values);
- :func:`load_questions`: what ``curiosity_processor._archive_skipped_question`` does to a
  feed entry (enum conversion, then ``CuriosityQuestion(**q)``);
- :func:`process_feed`: how ``curiosity_processor.process_curiosity_feed()`` and
  ``_question_to_intent()`` read the file (``json.load``, ``feed.get("questions", [])``,
  ``q["id"]``, ``q["value_estimate"]``, ``q["cost"]``, ``q["action_class"]``,
  ``q["hypothesis"].lower()``, ``q["question"]``, evidence items' ``startswith``) and which
  questions pass its value/cost threshold of 1.5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

KLOROS_COMMIT = "09c094d7fe5c4f60ee9aacde57f8093c491c1789"
VALUE_THRESHOLD = 1.5


class QuestionStatus(Enum):
    READY = "ready"
    IN_PROGRESS = "in_progress"
    ANSWERED = "answered"
    BLOCKED = "blocked"


class ActionClass(Enum):
    EXPLAIN_AND_SOFT_FALLBACK = "explain_and_soft_fallback"
    INVESTIGATE = "investigate"
    PROPOSE_FIX = "propose_fix"
    REQUEST_USER_ACTION = "request_user_action"
    FIND_SUBSTITUTE = "find_substitute"
    EXPERIMENT = "experiment"
    EXPLORE = "explore"


@dataclass
class CuriosityQuestion:
    id: str
    hypothesis: str
    question: str
    evidence: list[str] = field(default_factory=list)
    evidence_hash: str | None = None
    action_class: ActionClass = ActionClass.EXPLAIN_AND_SOFT_FALLBACK
    autonomy: int = 3
    value_estimate: float = 0.5
    cost: float = 0.2
    status: QuestionStatus = QuestionStatus.READY
    created_at: str = field(default_factory=lambda: datetime.now().isoformat())
    capability_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def load_questions(path: Path) -> list[CuriosityQuestion]:
    """Every entry as KLoROS builds it: a field it does not know raises TypeError, a value
    its enums do not know raises ValueError."""
    with open(path) as f:
        feed = json.load(f)
    out = []
    for q in feed.get("questions", []):
        q_dict = q.copy()
        if isinstance(q_dict.get("action_class"), str):
            q_dict["action_class"] = ActionClass(q_dict["action_class"])
        if isinstance(q_dict.get("status"), str):
            q_dict["status"] = QuestionStatus(q_dict["status"])
        out.append(CuriosityQuestion(**q_dict))
    return out


def process_feed(path: Path) -> dict[str, Any]:
    """The reads of ``process_curiosity_feed()`` and ``_question_to_intent()``: the intents
    it would create (one per question at or above the threshold) and the low-value ids."""
    with open(path) as f:
        feed = json.load(f)
    questions = feed.get("questions", [])
    intents, low = [], []
    for q in questions:
        qid = q["id"]
        ratio = q["value_estimate"] / max(q["cost"], 0.01)
        action_class = q["action_class"]
        evidence = q.get("evidence", [])
        if ratio < VALUE_THRESHOLD:
            low.append(qid)
            continue
        domain = "unknown"
        for ev in evidence:
            if ev and ev.startswith("capability:"):
                domain = ev.split(":", 1)[1]
                break
        intents.append({
            "question_id": qid, "question": q["question"], "hypothesis": q["hypothesis"],
            "hypothesis_lower": q["hypothesis"].lower(),
            "capability_key": q.get("capability_key", "unknown"),
            "value_estimate": q["value_estimate"], "cost_estimate": q["cost"],
            "action_class": action_class, "evidence": evidence, "domain": domain,
        })
    return {"questions_total": len(questions), "intents": intents, "low_value": low,
            "generated_at": feed["generated_at"], "count": feed["count"]}
