"""KLoROS's UMN ("ChemBus") messages, both ways: pure functions, no sockets, no clock.

From ``src/orchestration/core/umn_bus.py`` (KLoROS commit 09c094d7): a message is two
frames, the topic (UTF-8; KLoROS uses the signal name) and ``UMNMessage`` as compact JSON
(``separators=(",", ":")``) with exactly :data:`UMN_FIELDS`; ``channel`` is ``legacy`` on
the PUB/SUB path. ``UMNSub`` drops an ``incident_id`` it processed in the last 60 s
(:class:`ReplayWindow`).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any

import orjson
from pydantic import ValidationError

from ..models import CAPABILITY_GAP, CuriosityQuestion, Signal
from .kloros import INVESTIGATE_ECOSYSTEM, INVESTIGATE_SIGNAL, investigate_facts, sent_key

UMN_FIELDS: tuple[str, ...] = ("signal", "ecosystem", "intensity", "facts", "incident_id",
                               "trace", "ts", "schema_version", "channel")
UMN_SCHEMA_VERSION = 1
CHANNEL_LEGACY = "legacy"
GAP_TOPIC = CAPABILITY_GAP
RESOLVED_TOPIC = "GAP_RESOLVED"
"""Not a prefix match of ``CAPABILITY_GAP``: KLoROS's curiosity consumer never sees it."""
ORIGIN = "kloros-stream"
INCIDENT_PREFIX = "kloros-stream:"
INGEST_MONITOR = "chembus"
REPLAY_WINDOW_S = 60.0


class Rejected(Exception):
    """An incoming frame set that is not ingested; ``reason`` names the counter."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _dumps(obj: dict[str, Any]) -> bytes:
    """Compact JSON as KLoROS's ``to_bytes``; the stdlib for what orjson refuses."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), default=str).encode()


def umn_frames(topic: str, *, ecosystem: str, facts: dict[str, Any], incident_id: str | None,
               ts: float, intensity: float = 1.0, trace: str | None = None) -> list[bytes]:
    """``[topic, UMNMessage JSON]`` with exactly the UMNMessage fields, in its order."""
    msg = {"signal": topic, "ecosystem": ecosystem, "intensity": intensity, "facts": facts,
           "incident_id": incident_id, "trace": trace, "ts": ts,
           "schema_version": UMN_SCHEMA_VERSION, "channel": CHANNEL_LEGACY}
    return [topic.encode(), _dumps(msg)]


def gap_frames(sig: Signal) -> list[bytes]:
    """Our gap (or resolution) as KLoROS would publish it; ours marked in ``facts``."""
    kind, topic = ("resolved", RESOLVED_TOPIC) if sig.resolved else ("gap", GAP_TOPIC)
    facts = {**sig.facts, "origin": ORIGIN, "monitor": sig.monitor,
             "observed_at": sig.observed_at}
    incident = f"{INCIDENT_PREFIX}{kind}:{sig.incident_id}:{int(sig.ts * 1_000_000)}"
    return umn_frames(topic, ecosystem=sig.ecosystem, facts=facts, incident_id=incident,
                      ts=sig.ts, intensity=sig.intensity, trace=sig.trace)


def question_frames(q: CuriosityQuestion, ts: float) -> list[bytes]:
    """``Q_CURIOSITY_INVESTIGATE`` as ``CuriosityCore.emit_questions_to_bus()`` sends it;
    the ``incident_id`` names the question and its evidence."""
    incident = f"{INCIDENT_PREFIX}question:{q.id}:{sent_key(q)}"
    return umn_frames(INVESTIGATE_SIGNAL, ecosystem=INVESTIGATE_ECOSYSTEM,
                      facts=investigate_facts(q), incident_id=incident, ts=ts)


def is_ours(msg: dict[str, Any]) -> bool:
    """The loop guard: what this service (any instance) published."""
    facts = msg.get("facts")
    incident = msg.get("incident_id")
    return ((isinstance(facts, dict) and facts.get("origin") == ORIGIN)
            or (isinstance(incident, str) and incident.startswith(INCIDENT_PREFIX)))


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def decode_gap(frames: list[bytes], now: float) -> Signal:
    """Another component's ``CAPABILITY_GAP`` as a signal of monitor ``chembus``.

    Raises :class:`Rejected` (reason ``malformed_frames``, ``prefix_topic``,
    ``malformed_json``, ``malformed_gap`` or ``loop``); never anything else.
    """
    if len(frames) != 2:
        raise Rejected("malformed_frames", f"{len(frames)} frames")
    topic, payload = frames
    if topic != GAP_TOPIC.encode():
        raise Rejected("prefix_topic", topic[:80].decode("utf-8", "replace"))
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise Rejected("malformed_json", str(err)) from None
    if not isinstance(msg, dict):
        raise Rejected("malformed_json", f"a JSON {type(msg).__name__}, not an object")
    if is_ours(msg):
        raise Rejected("loop")
    facts = msg.get("facts")
    if not isinstance(facts, dict):
        raise Rejected("malformed_gap", "no facts object")
    if not all(isinstance(facts.get(k), str) and facts[k] for k in ("gap_type", "gap_name")):
        raise Rejected("malformed_gap", "facts lack gap_type/gap_name strings")
    facts = {**facts, "gap_category": _text(facts.get("gap_category")),
             "gap_reason": _text(facts.get("gap_reason"))}
    ts = msg.get("ts")
    intensity = msg.get("intensity")
    try:
        return Signal(
            signal=CAPABILITY_GAP, ecosystem=_text(msg.get("ecosystem")) or INGEST_MONITOR,
            intensity=float(intensity) if isinstance(intensity, int | float) else 1.0,
            facts=facts, incident_id=_text(msg.get("incident_id")),
            trace=msg.get("trace") if isinstance(msg.get("trace"), str) else None,
            ts=float(ts) if isinstance(ts, int | float) else now,
            monitor=INGEST_MONITOR, observed_at=now)
    except (ValidationError, ValueError, OverflowError) as err:
        raise Rejected("malformed_gap", str(err)[:200]) from None


class ReplayWindow:
    """``UMNSub``'s replay defense: an incident_id seen within ``window_s`` is a replay."""

    def __init__(self, window_s: float = REPLAY_WINDOW_S, clock: Any = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def seen(self, incident_id: str) -> bool:
        """True if ``incident_id`` is a replay; otherwise remember it and return False."""
        if not incident_id:
            return False
        now = self.clock()
        cutoff = now - self.window_s
        while self._seen and next(iter(self._seen.values())) < cutoff:
            self._seen.popitem(last=False)
        if incident_id in self._seen:
            return True
        self._seen[incident_id] = now
        return False

    def __len__(self) -> int:
        return len(self._seen)
