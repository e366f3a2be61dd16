"""The data that crosses component boundaries: bus signals and curiosity questions.

``Signal`` is the seed's CAPABILITY_GAP schema inside the KLoROS ChemBus envelope
(``signal, ecosystem, intensity, facts, incident_id, trace, ts, schema_version, channel``)
so a bridge can forward it unchanged. ``CuriosityQuestion`` is one line of the feed.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CAPABILITY_GAP = "CAPABILITY_GAP"
CAPABILITY_GAP_RESOLVED = "CAPABILITY_GAP_RESOLVED"
SCHEMA_VERSION = 1
REQUIRED_FACTS = ("gap_type", "gap_name", "gap_category", "gap_reason")


class Signal(BaseModel):
    """One message on the bus."""

    model_config = ConfigDict(extra="allow")

    signal: Literal["CAPABILITY_GAP", "CAPABILITY_GAP_RESOLVED"] = CAPABILITY_GAP
    ecosystem: str
    intensity: float = 1.0
    facts: dict[str, Any]
    incident_id: str = ""
    trace: str | None = None
    ts: float = Field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION
    channel: str = "curiosity"
    monitor: str = ""
    observed_at: float = Field(default_factory=time.time)
    """Wall-clock time the source event was seen (file event, journal line): latency origin."""

    @field_validator("facts")
    @classmethod
    def _facts_have_gap_fields(cls, facts: dict[str, Any]) -> dict[str, Any]:
        missing = [k for k in REQUIRED_FACTS if not isinstance(facts.get(k), str)]
        if missing:
            raise ValueError(f"facts lack string fields: {', '.join(missing)}")
        return facts

    @property
    def gap_type(self) -> str:
        return self.facts["gap_type"]

    @property
    def gap_name(self) -> str:
        return self.facts["gap_name"]

    @property
    def resolved(self) -> bool:
        return self.signal == CAPABILITY_GAP_RESOLVED


class ActionClass(StrEnum):
    EXPLAIN_AND_SOFT_FALLBACK = "explain_and_soft_fallback"
    INVESTIGATE = "investigate"
    PROPOSE_FIX = "propose_fix"
    REQUEST_USER_ACTION = "request_user_action"
    FIND_SUBSTITUTE = "find_substitute"
    EXPERIMENT = "experiment"
    EXPLORE = "explore"


class QuestionStatus(StrEnum):
    READY = "ready"
    IN_PROGRESS = "in_progress"
    ANSWERED = "answered"
    BLOCKED = "blocked"
    RESOLVED = "resolved"


OPEN_STATUSES = frozenset(
    {QuestionStatus.READY, QuestionStatus.IN_PROGRESS, QuestionStatus.BLOCKED}
)


class CuriosityQuestion(BaseModel):
    """One question of the feed; a later line with the same ``id`` supersedes earlier ones."""

    model_config = ConfigDict(extra="allow")

    id: str
    hypothesis: str
    question: str
    evidence: list[str]
    evidence_hash: str
    action_class: ActionClass
    autonomy: int
    value_estimate: float
    cost: float
    priority: float
    status: QuestionStatus = QuestionStatus.READY
    created_at: str
    updated_at: str
    capability_key: str
    metadata: dict[str, Any]

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES
