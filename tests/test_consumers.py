"""The consumer desk over a real core and a real feed file: ranking, one line per
transition, replay after a restart, lease expiry by the reaper."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import structlog.testing

from kloros_stream.consumers import ConsumerDesk
from kloros_stream.core import lifecycle
from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.core.lifecycle import (
    ClaimRequest,
    Conflict,
    LeaseRequest,
    NotFound,
    StatusRequest,
)
from kloros_stream.feed import QuestionFeed, read_feed
from kloros_stream.models import QuestionStatus
from kloros_stream.store import FeedStore
from tests.support.questions import T0, sig
from tests.support.scripted import wait_until


def desk_over(path: Path) -> tuple[ConsumerDesk, CuriosityCore, FeedStore]:
    store = FeedStore(QuestionFeed(path, compact_bytes=1 << 30))
    store.open(T0)
    core = CuriosityCore(store=store)
    core.recovered(T0)
    return ConsumerDesk(core, store), core, store


def seeded(path: Path, names: list[str]) -> tuple[ConsumerDesk, CuriosityCore, FeedStore]:
    desk, core, store = desk_over(path)
    for i, name in enumerate(names):
        q = core.handle(sig(name, gap_type="exception" if i % 2 else "test_failure"), T0)
        assert q is not None
    store.flush()
    return desk, core, store


def test_claims_go_highest_priority_first_then_none(tmp_path: Path) -> None:
    desk, core, _ = seeded(tmp_path / "feed.jsonl", ["a", "b", "c"])
    expected = sorted(core.questions.values(), key=lambda q: (-q.priority, q.id))
    got = [desk.claim(ClaimRequest("bot"), T0 + 1) for _ in range(3)]
    assert [q.id for q in got if q] == [q.id for q in expected]
    assert desk.claim(ClaimRequest("bot"), T0 + 1) is None
    assert (desk.claims, desk.empty_claims) == (3, 1)


def test_claim_filters_by_gap_type(tmp_path: Path) -> None:
    desk, _, _ = seeded(tmp_path / "feed.jsonl", ["a", "b", "c"])
    q = desk.claim(ClaimRequest("bot", gap_types=frozenset({"exception"})), T0 + 1)
    assert q is not None and q.metadata["gap_type"] == "exception"
    assert desk.claim(ClaimRequest("bot", gap_types=frozenset({"exception"})), T0 + 1) is None


def test_every_transition_is_one_line_and_replays_to_the_same_state(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    desk, core, store = seeded(path, ["a", "b", "c"])
    feed = store.feed
    lines = feed.lines_written
    a = desk.claim(ClaimRequest("alice", 60), T0 + 1)
    b = desk.claim(ClaimRequest("bob", 60), T0 + 1)
    assert a is not None and b is not None
    desk.set_status(a.id, StatusRequest(QuestionStatus.ANSWERED, "done"), T0 + 2)
    desk.set_status(a.id, StatusRequest(QuestionStatus.ANSWERED, "done"), T0 + 3)  # again
    desk.set_status(b.id, StatusRequest(QuestionStatus.BLOCKED, "needs root", "bob"), T0 + 2)
    assert feed.lines_written == lines + 4
    state = {q.id: q.model_dump(mode="json") for q in core.questions.values()}
    store.close()  # no fsync-on-close trick needed: each line was written at once
    assert {i: d for i, d in read_feed(path).questions.items()} == state


def test_unknown_ids_and_foreign_leases(tmp_path: Path) -> None:
    desk, _, store = seeded(tmp_path / "feed.jsonl", ["a"])
    feed = store.feed
    with pytest.raises(NotFound):
        desk.set_status("nope", StatusRequest(QuestionStatus.READY), T0)
    with pytest.raises(NotFound):
        desk.extend("nope", LeaseRequest("x"), T0)
    q = desk.claim(ClaimRequest("alice", 60), T0)
    assert q is not None
    lines = feed.lines_written
    with pytest.raises(Conflict):
        desk.extend(q.id, LeaseRequest("bob", 60), T0 + 1)
    assert feed.lines_written == lines  # a refused request writes nothing


def test_expire_due_puts_lapsed_claims_back(tmp_path: Path) -> None:
    desk, core, _ = seeded(tmp_path / "feed.jsonl", ["a", "b"])
    first = desk.claim(ClaimRequest("alice", 10), T0)
    second = desk.claim(ClaimRequest("bob", 100), T0)
    assert first is not None and second is not None
    desk.extend(first.id, LeaseRequest("alice", 50), T0 + 5)  # now until T0 + 55
    assert desk.expire_due(T0 + 20) == []
    expired = desk.expire_due(T0 + 60)
    assert [q.id for q in expired] == [first.id]
    assert core.questions[first.id].metadata["lease_expired"] == 1
    assert desk.lease_expired == 1
    again = desk.claim(ClaimRequest("carol", 10), T0 + 61)
    assert again is not None and again.id == first.id and again.metadata["claims"] == 2


async def test_the_reaper_wakes_at_the_lease_deadline(tmp_path: Path) -> None:
    desk, core, _ = seeded(tmp_path / "feed.jsonl", ["a"])
    desk.start()
    try:
        q = desk.claim(ClaimRequest("alice", 1))
        assert q is not None
        await wait_until(lambda: core.questions[q.id].status == QuestionStatus.READY,
                         what="lease expiry")
        assert core.questions[q.id].metadata["lease_expired"] == 1
    finally:
        await desk.stop()


async def test_leases_read_back_from_the_feed_are_reaped(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    desk, _, store = seeded(path, ["a"])
    q = desk.claim(ClaimRequest("alice", 1), time.time())
    assert q is not None
    store.close()
    desk2, core2, _ = desk_over(path)
    assert core2.questions[q.id].status == QuestionStatus.IN_PROGRESS
    assert lifecycle.holder(core2.questions[q.id]) == "alice"
    desk2.start()
    try:
        await wait_until(lambda: core2.questions[q.id].status == QuestionStatus.READY,
                         what="lease expiry after restart")
    finally:
        await desk2.stop()


def test_every_transition_logs_one_readable_event(tmp_path: Path) -> None:
    """Opened, changed, claimed, answered, reopened, released, resolved: one log event each,
    with the id, the gap and the priority."""
    with structlog.testing.capture_logs() as logs:
        desk, core, _ = seeded(tmp_path / "feed.jsonl", ["t::a"])
        qid = next(iter(core.questions))
        core.handle(sig("t::a", error="ValueError"), T0 + 1)  # new evidence
        desk.claim(ClaimRequest("bot"), T0 + 2)
        desk.set_status(qid, StatusRequest(QuestionStatus.ANSWERED, "fixed in abc123", "bot"),
                        T0 + 3)
        core.handle(sig("t::a", error="KeyError"), T0 + 4)  # evidence changed: reopened
        desk.claim(ClaimRequest("bot"), T0 + 5)
        desk.set_status(qid, StatusRequest(QuestionStatus.READY, "", "bot"), T0 + 6)
        core.handle(sig("t::a", resolved=True), T0 + 7)
    events = [e for e in logs if e["event"].startswith("question_")]
    assert [e["event"] for e in events] == [
        "question_opened", "question_changed", "question_claimed", "question_answered",
        "question_reopened", "question_claimed", "question_released", "question_resolved"]
    for e in events:
        assert e["id"] == qid and e["gap_type"] == "test_failure" and e["gap_name"] == "t::a"
        assert isinstance(e["priority"], float)
    assert events[2]["consumer"] == "bot" and events[3]["status"] == "answered"
    assert events[-1]["was"] == "ready"
