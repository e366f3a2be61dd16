"""The UMN wire (sinks/umn.py): framing as KLoROS's umn_bus.py, decoding other components'
gaps, the loop guard and UMNSub's replay window."""

from __future__ import annotations

import json

import pytest

from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.models import CAPABILITY_GAP_RESOLVED, Signal
from kloros_stream.sinks.umn import (
    RESOLVED_TOPIC,
    UMN_FIELDS,
    Rejected,
    ReplayWindow,
    decode_gap,
    gap_frames,
    is_ours,
    question_frames,
)
from tests.support.umn import kloros_frames, umn_message

T0 = 1_700_000_000.0
FACTS = {"gap_type": "orphaned_queue", "gap_name": "jobs", "gap_category": "integration",
         "gap_reason": "nobody reads jobs"}


def signal(resolved: bool = False, **kw: object) -> Signal:
    return Signal(signal=CAPABILITY_GAP_RESOLVED if resolved else "CAPABILITY_GAP",
                  ecosystem="integration", facts=dict(FACTS), monitor="integration",
                  incident_id="orphaned_queue:jobs", ts=T0, observed_at=T0 - 1, **kw)


def test_a_gap_has_exactly_the_umn_fields_and_our_extras_in_facts() -> None:
    topic, payload = gap_frames(signal())
    assert topic == b"CAPABILITY_GAP"
    msg = json.loads(payload)
    assert tuple(msg) == UMN_FIELDS == tuple(umn_message("X", ecosystem="e", facts={}))
    assert b" " not in payload.replace(b"nobody reads jobs", b"")  # compact separators
    assert msg["signal"] == "CAPABILITY_GAP" and msg["channel"] == "legacy"
    assert msg["facts"] == {**FACTS, "origin": "kloros-stream", "monitor": "integration",
                            "observed_at": T0 - 1}
    assert msg["ts"] == T0 and msg["schema_version"] == 1


def test_a_resolution_is_on_another_topic_with_another_incident_id() -> None:
    gap_topic, gap_payload = gap_frames(signal())
    topic, payload = gap_frames(signal(resolved=True))
    assert topic == RESOLVED_TOPIC.encode() and not topic.startswith(gap_topic)
    assert json.loads(payload)["signal"] == RESOLVED_TOPIC
    assert json.loads(payload)["incident_id"] != json.loads(gap_payload)["incident_id"]


def test_a_question_has_kloros_investigate_layout() -> None:
    q = CuriosityCore().handle(signal(), T0)
    assert q is not None
    topic, payload = question_frames(q, T0)
    msg = json.loads(payload)
    assert topic == b"Q_CURIOSITY_INVESTIGATE" and tuple(msg) == UMN_FIELDS
    assert (msg["signal"], msg["ecosystem"], msg["intensity"]) == (
        "Q_CURIOSITY_INVESTIGATE", "introspection", 1.0)
    assert msg["facts"]["question_id"] == q.id and msg["facts"]["priority"] == "high"
    assert msg["incident_id"] == f"kloros-stream:question:{q.id}:{q.evidence_hash}:0"


def test_a_kloros_gap_without_reason_becomes_a_chembus_signal() -> None:
    facts = {"gap_type": "exception", "gap_name": "exception_kloros-x_1234abcd",
             "gap_category": "error_handling", "unit": "kloros-x", "priority": 3,
             "traceback": None}
    sig = decode_gap(kloros_frames("CAPABILITY_GAP", ecosystem="diagnostics", facts=facts), T0)
    assert sig.monitor == "chembus" and sig.ecosystem == "diagnostics"
    assert sig.facts["gap_reason"] == "" and sig.facts["unit"] == "kloros-x"
    assert sig.incident_id == "" and sig.observed_at == T0


@pytest.mark.parametrize(("frames", "reason"), [
    ([b"CAPABILITY_GAP"], "malformed_frames"),
    ([b"CAPABILITY_GAP", b"{}", b"extra"], "malformed_frames"),
    ([b"CAPABILITY_GAP_FOUND", b"{}"], "prefix_topic"),
    ([b"CAPABILITY_GAP", b"\xff not json"], "malformed_json"),
    ([b"CAPABILITY_GAP", b"[1, 2]"], "malformed_json"),
    ([b"CAPABILITY_GAP", b'{"facts": "x"}'], "malformed_gap"),
    ([b"CAPABILITY_GAP", b'{"facts": {"gap_type": "a"}}'], "malformed_gap"),
    ([b"CAPABILITY_GAP", b'{"facts": {"gap_type": "a", "gap_name": 7}}'], "malformed_gap"),
    ([b"CAPABILITY_GAP", b'{"facts": {"gap_type": "a", "gap_name": "b", "origin": '
      b'"kloros-stream"}}'], "loop"),
    ([b"CAPABILITY_GAP", b'{"incident_id": "kloros-stream:gap:x:1", "facts": {}}'], "loop"),
])
def test_what_is_not_a_gap_is_rejected_with_a_reason(frames: list[bytes], reason: str) -> None:
    with pytest.raises(Rejected) as err:
        decode_gap(frames, T0)
    assert err.value.reason == reason


def test_our_own_gap_is_recognised_by_the_loop_guard() -> None:
    assert is_ours(json.loads(gap_frames(signal())[1]))
    assert not is_ours(umn_message("CAPABILITY_GAP", ecosystem="x", facts=dict(FACTS)))
    with pytest.raises(Rejected, match="loop"):
        decode_gap(gap_frames(signal()), T0)


def test_replay_window_drops_a_recent_incident_id_only() -> None:
    now = [0.0]
    window = ReplayWindow(60.0, clock=lambda: now[0])
    assert not window.seen("a") and window.seen("a")
    assert not window.seen("") and not window.seen("")  # no id: never a replay
    now[0] = 61.0
    assert not window.seen("a") and len(window) == 1
