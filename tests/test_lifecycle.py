"""The consumer lifecycle: pure transitions, request parsing, and the core's part (evidence
re-opens an answered question; a monitor's resolution wins)."""

from __future__ import annotations

from typing import Any

import pytest

from kloros_stream.core import lifecycle
from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.core.lifecycle import (
    BadRequest,
    ClaimRequest,
    Conflict,
    LeaseRequest,
    StatusRequest,
)
from kloros_stream.models import CuriosityQuestion, QuestionStatus
from tests.support.questions import T0, sig


def question(core: CuriosityCore | None = None, name: str = "t::a") -> CuriosityQuestion:
    q = (core or CuriosityCore()).handle(sig(name), T0)
    assert q is not None
    return q


def claimed(q: CuriosityQuestion, consumer: str = "alice", lease_s: float = 60,
            now: float = T0) -> CuriosityQuestion:
    return lifecycle.claim(q, ClaimRequest(consumer, lease_s), now)


def answer(note: str = "fixed in abc123", consumer: str = "") -> StatusRequest:
    return StatusRequest(QuestionStatus.ANSWERED, note, consumer)


# -- requests -------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "message"), [
    ([], "JSON object"),
    ({}, "consumer is required"),
    ({"consumer": "  "}, "consumer is required"),
    ({"consumer": 7}, "consumer must be a string"),
    ({"consumer": "a", "lease_s": 0}, "lease_s must be a number between 1 and 86400"),
    ({"consumer": "a", "lease_s": True}, "lease_s"),
    ({"consumer": "a", "gap_types": "test_failure"}, "gap_types must be a list"),
    ({"consumer": "a", "min_priority": "high"}, "min_priority"),
    ({"consumer": "a", "lease": 5}, "unknown field(s): lease"),
])
def test_bad_claim_bodies_say_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        lifecycle.parse_claim(body)


def test_claim_body_with_filters() -> None:
    req = lifecycle.parse_claim({"consumer": " bot ", "lease_s": 30,
                                 "gap_types": ["test_failure"], "min_priority": 1.5})
    assert req == ClaimRequest("bot", 30.0, frozenset({"test_failure"}), 1.5)
    assert lifecycle.parse_claim({"consumer": "bot"}).lease_s == lifecycle.DEFAULT_LEASE_S


@pytest.mark.parametrize(("body", "message"), [
    ({"status": "resolved", "note": "x"}, "status must be one of"),
    ({"status": "in_progress"}, "status must be one of"),
    ({"status": "answered"}, "needs a note"),
    ({"status": "blocked", "note": "   "}, "needs a note"),
    ({"status": "answered", "note": "x" * 5000}, "at most 4000"),
])
def test_bad_status_bodies(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        lifecycle.parse_status(body)


def test_release_needs_no_note() -> None:
    assert lifecycle.parse_status({"status": "ready"}) == StatusRequest(QuestionStatus.READY)


# -- claim, lease ----------------------------------------------------------------------------
def test_claim_holds_the_question_with_a_lease() -> None:
    q = claimed(question(), "alice", 60)
    assert q.status == QuestionStatus.IN_PROGRESS
    assert q.metadata["claim"]["consumer"] == "alice"
    assert lifecycle.lease_until(q) == pytest.approx(T0 + 60)
    assert q.metadata["claims"] == 1
    with pytest.raises(Conflict):
        claimed(q, "bob")


def test_filters_choose_what_a_claim_may_take() -> None:
    q = question()
    assert ClaimRequest("a", gap_types=frozenset({"test_failure"})).matches(q)
    assert not ClaimRequest("a", gap_types=frozenset({"exception"})).matches(q)
    assert not ClaimRequest("a", min_priority=q.priority + 0.1).matches(q)
    assert lifecycle.pick([q], ClaimRequest("a", min_priority=q.priority + 1)) is None


def test_only_the_holder_extends_and_only_before_expiry() -> None:
    q = claimed(question(), "alice", 60)
    longer = lifecycle.extend(q, LeaseRequest("alice", 600), T0 + 30)
    assert lifecycle.lease_until(longer) == pytest.approx(T0 + 630)
    with pytest.raises(Conflict, match="held by 'alice'"):
        lifecycle.extend(q, LeaseRequest("bob", 600), T0 + 30)
    with pytest.raises(Conflict, match="expired"):
        lifecycle.extend(q, LeaseRequest("alice", 600), T0 + 61)
    with pytest.raises(Conflict, match="no lease"):
        lifecycle.extend(question(), LeaseRequest("alice", 60), T0)


def test_an_expired_lease_returns_the_question_to_ready_counted() -> None:
    q = claimed(question(), "alice", 60)
    assert lifecycle.expire(q, T0 + 59) is None
    back = lifecycle.expire(q, T0 + 60)
    assert back is not None and back.status == QuestionStatus.READY
    assert "claim" not in back.metadata and back.metadata["lease_expired"] == 1
    assert lifecycle.expire(back, T0 + 1000) is None


# -- statuses ---------------------------------------------------------------------------------
def test_answer_by_the_holder_and_again_is_idempotent() -> None:
    q = claimed(question(), "alice")
    with pytest.raises(Conflict, match="held by"):
        lifecycle.set_status(q, answer(consumer="bob"), T0 + 1)
    done = lifecycle.set_status(q, answer(consumer="alice"), T0 + 1)
    assert done.status == QuestionStatus.ANSWERED and "claim" not in done.metadata
    assert done.metadata["answer"]["note"] == "fixed in abc123"
    assert done.metadata["answer"]["consumer"] == "alice"
    assert lifecycle.set_status(done, answer(), T0 + 2) is done
    with pytest.raises(Conflict, match="reopens when its evidence changes"):
        lifecycle.set_status(done, answer("another answer"), T0 + 2)


@pytest.mark.parametrize("target", [QuestionStatus.BLOCKED, QuestionStatus.READY])
def test_an_answer_stands_against_block_and_release(target: QuestionStatus) -> None:
    done = lifecycle.set_status(question(), answer(), T0)
    with pytest.raises(Conflict):
        lifecycle.set_status(done, StatusRequest(target, "x"), T0 + 1)


def test_block_then_unblock_or_answer() -> None:
    q = claimed(question(), "alice")
    blocked = lifecycle.set_status(q, StatusRequest(QuestionStatus.BLOCKED, "needs root"),
                                   T0 + 1)
    assert blocked.status == QuestionStatus.BLOCKED and "claim" not in blocked.metadata
    assert blocked.metadata["blocked"]["consumer"] == "alice"
    same = StatusRequest(QuestionStatus.BLOCKED, "needs root")
    assert lifecycle.set_status(blocked, same, T0 + 2) is blocked
    ready = lifecycle.set_status(blocked, StatusRequest(QuestionStatus.READY), T0 + 3)
    assert ready.status == QuestionStatus.READY and "blocked" not in ready.metadata
    assert lifecycle.set_status(ready, StatusRequest(QuestionStatus.READY), T0 + 4) is ready
    answered = lifecycle.set_status(blocked, answer(), T0 + 3)
    assert answered.status == QuestionStatus.ANSWERED


def test_nothing_moves_a_resolved_question() -> None:
    core = CuriosityCore()
    question(core)
    resolved = core.handle(sig(resolved=True, at=T0 + 1), T0 + 1)
    assert resolved is not None
    for req in (answer(), StatusRequest(QuestionStatus.READY)):
        with pytest.raises(Conflict, match="resolved by its monitor"):
            lifecycle.set_status(resolved, req, T0 + 2)


# -- the core's side ----------------------------------------------------------------------------
def test_answered_stays_answered_until_the_evidence_changes() -> None:
    core = CuriosityCore()
    q = question(core)
    core.put(lifecycle.set_status(q, answer(), T0 + 1), T0 + 1)
    assert core.handle(sig(at=T0 + 2), T0 + 2) is None  # same evidence: still answered
    assert core.questions[q.id].status == QuestionStatus.ANSWERED
    reopened = core.handle(sig(error="TypeError: new", at=T0 + 3), T0 + 3)
    assert reopened is not None and reopened.status == QuestionStatus.READY
    assert reopened.metadata["reopened"] == 1
    assert reopened.metadata["previous_answer"]["note"] == "fixed in abc123"
    assert "answer" not in reopened.metadata


def test_a_claim_survives_repeats_and_ends_with_the_monitors_resolution() -> None:
    core = CuriosityCore()
    q = core.put(claimed(question(core)), T0)
    core.handle(sig(at=T0 + 1), T0 + 1)
    assert core.questions[q.id].metadata["claim"]["consumer"] == "alice"
    assert core.questions[q.id].status == QuestionStatus.IN_PROGRESS
    resolved = core.handle(sig(resolved=True, at=T0 + 2), T0 + 2)
    assert resolved is not None and resolved.status == QuestionStatus.RESOLVED
    assert "claim" not in resolved.metadata and lifecycle.lease_until(resolved) is None
