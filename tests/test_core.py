"""CuriosityCore: stable ids, evidence hashes, priority, dedup with deferred counters,
resolution and reopening, suppression, and rebuilding from the feed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.core.identity import evidence_hash, gap_key, priority, question_id
from kloros_stream.models import CAPABILITY_GAP_RESOLVED, CuriosityQuestion, Signal

T0 = 1_700_000_000.0
TEST_NAME = "tests/test_voice.py::test_load"
# sha256("test_failure\0tests/test_voice.py::test_load")[:16]: would fail with a salted
# hash(), a clock or a per-process random component.
EXPECTED_TEST_ID = "test_failure-1482a73460799cb9"
EXPECTED_EXCEPTION_ID = "exception-b2168b1c70722b0b"


def sig(gap_type: str = "test_failure", gap_name: str = TEST_NAME, *, at: float = T0,
        resolved: bool = False, monitor: str = "test", **facts: Any) -> Signal:
    return Signal(
        signal=CAPABILITY_GAP_RESOLVED if resolved else "CAPABILITY_GAP",
        ecosystem="testing", monitor=monitor, observed_at=at,
        facts={"gap_type": gap_type, "gap_name": gap_name, "gap_category": "quality",
               "gap_reason": facts.pop("gap_reason", f"{gap_name} failed"), **facts},
    )


def created(core: CuriosityCore, s: Signal, now: float = T0) -> CuriosityQuestion:
    q = core.handle(s, now)
    assert q is not None
    return q


# -- identity ------------------------------------------------------------------------------
def test_question_id_is_a_fixed_function_of_the_gap() -> None:
    assert question_id("test_failure", TEST_NAME) == EXPECTED_TEST_ID
    assert created(CuriosityCore(), sig()).id == EXPECTED_TEST_ID
    # Neither the clock nor the observation time take part.
    assert created(CuriosityCore(), sig(at=T0 + 999), now=T0 + 12345).id == EXPECTED_TEST_ID


def test_fingerprint_identifies_an_exception_whatever_its_message() -> None:
    core = CuriosityCore()
    a = created(core, sig("exception", "KeyError: 'job 17'", fingerprint="9f2c1ab0"))
    assert a.id == EXPECTED_EXCEPTION_ID
    assert gap_key({"gap_name": "x", "fingerprint": "9f2c1ab0"}) == "9f2c1ab0"
    again = core.handle(sig("exception", "KeyError: 'job 18'", fingerprint="9f2c1ab0",
                            at=T0 + 5), T0 + 5)
    assert again is None  # same bug: counters only, the evidence does not churn
    assert len(core.questions) == 1
    assert core.questions[a.id].metadata["occurrences"] == 2


def test_ids_are_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from kloros_stream.core.curiosity import CuriosityCore\n"
        "from kloros_stream.models import Signal\n"
        "import json, sys\n"
        "c = CuriosityCore()\n"
        "q = c.handle(Signal(ecosystem='e', monitor='m', facts=json.loads(sys.argv[1])), 1.0)\n"
        "print('RESULT', q.id, q.evidence_hash)\n"
    )
    facts = {"gap_type": "test_failure", "gap_name": TEST_NAME, "gap_category": "quality",
             "gap_reason": "r"}
    expected = created(CuriosityCore(), sig(gap_reason="r"))
    for seed in ("1", "4242"):
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(facts)], capture_output=True, text=True,
            check=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        result = next(line for line in out.splitlines() if line.startswith("RESULT "))
        assert result.split()[1:] == [EXPECTED_TEST_ID, expected.evidence_hash]


def test_evidence_hash_is_deterministic_and_order_sensitive() -> None:
    assert evidence_hash(["a", "b"]) == "0473ef2dc0d324ab659d3580c1134e9d"
    assert evidence_hash(["a", "b"]) == evidence_hash(["a", "b"])
    assert evidence_hash(["b", "a"]) != evidence_hash(["a", "b"])
    assert evidence_hash(["ab"]) != evidence_hash(["a", "b"])
    q = created(CuriosityCore(), sig())
    assert q.evidence_hash == evidence_hash(q.evidence)


def test_priority_is_value_per_cost_and_grows_with_occurrences() -> None:
    assert priority(0.9, 0.1) > priority(0.9, 0.3) > priority(0.5, 0.5)
    assert priority(0.9, 0.0) == priority(0.9, 0.05)  # no division by zero
    counts = [priority(0.5, 0.5, n) for n in (1, 2, 10, 100, 1000)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_ranked_orders_by_priority_then_id() -> None:
    core = CuriosityCore()
    for s in (sig("stale_doc", "a.md"), sig("syntax_error", "x.py"),
              sig("missing_tool", "ffmpeg"), sig("hardware_change", "GPU-0"),
              sig("hardware_change", "GPU-1")):
        created(core, s)
    ranked = core.ranked(include_resolved=True)
    keys = [(-q.priority, q.id) for q in ranked]
    assert keys == sorted(keys)
    assert ranked[0].metadata["gap_type"] == "syntax_error"  # 0.9 / 0.1
    assert ranked[-1].metadata["gap_type"] == "stale_doc"  # 0.4 / 0.3


def test_question_has_every_contract_field() -> None:
    q = created(CuriosityCore(), sig(at=T0 - 2), now=T0)
    data = q.model_dump(mode="json")
    for key in ("id", "hypothesis", "question", "evidence", "evidence_hash", "action_class",
                "autonomy", "value_estimate", "cost", "priority", "status", "created_at",
                "updated_at", "capability_key", "metadata"):
        assert key in data, key
    for key in ("gap_type", "gap_name", "gap_category", "ecosystem", "monitor",
                "occurrences", "first_seen", "last_seen"):
        assert key in data["metadata"], key
    assert data["created_at"] == "2023-11-14T22:13:20.000+00:00"
    assert data["metadata"]["first_seen"] == "2023-11-14T22:13:18.000+00:00"
    assert data["status"] == "ready"


# -- dedup and deferred counters -----------------------------------------------------------
def test_repeated_gap_updates_counters_without_a_line() -> None:
    core = CuriosityCore(counter_flush_s=60)
    first = created(core, sig(at=T0))
    assert core.handle(sig(at=T0 + 10), T0 + 10) is None
    assert core.handle(sig(at=T0 + 20), T0 + 20) is None
    q = core.questions[first.id]
    assert len(core.questions) == 1
    assert q.metadata["occurrences"] == 3
    assert q.metadata["first_seen"] == first.metadata["first_seen"]
    assert q.metadata["last_seen"] == "2023-11-14T22:13:40.000+00:00"
    assert q.created_at == first.created_at
    assert q.priority > first.priority
    assert core.pending_count == 1


def test_changed_evidence_writes_a_line_at_once() -> None:
    core = CuriosityCore()
    first = created(core, sig(error="AssertionError: 1 != 2"))
    q = core.handle(sig(error="TypeError: bad operand", at=T0 + 1), T0 + 1)
    assert q is not None and q.id == first.id
    assert q.evidence_hash != first.evidence_hash
    assert any("TypeError" in e for e in q.evidence)
    assert q.metadata["occurrences"] == 2
    assert q.created_at == first.created_at and q.updated_at != first.updated_at
    assert core.pending_count == 0


def test_counters_reach_the_feed_at_most_once_per_interval() -> None:
    core = CuriosityCore(counter_flush_s=60)
    q = created(core, sig(at=T0), now=T0)
    assert core.next_due() is None
    core.handle(sig(at=T0 + 1), T0 + 1)
    assert core.next_due() == T0 + 60
    assert core.due_updates(T0 + 59.9) == []
    [update] = core.due_updates(T0 + 60)
    assert update.id == q.id and update.metadata["occurrences"] == 2
    assert update.updated_at == "2023-11-14T22:14:20.000+00:00"
    assert core.due_updates(T0 + 61) == []  # nothing new: nothing to write
    core.handle(sig(at=T0 + 62), T0 + 62)
    core.handle(sig(at=T0 + 63), T0 + 63)
    assert core.next_due() == T0 + 120
    assert core.due_updates(T0 + 119) == []
    [update] = core.due_updates(T0 + 120)
    assert update.metadata["occurrences"] == 4
    assert core.pending_count == 0


def test_force_writes_pending_counters_now() -> None:
    core = CuriosityCore(counter_flush_s=60)
    created(core, sig())
    created(core, sig("missing_tool", "ffmpeg"))
    core.handle(sig(at=T0 + 1), T0 + 1)
    assert [q.metadata["gap_type"] for q in core.due_updates(T0 + 2, force=True)] == [
        "test_failure"]
    assert core.due_updates(T0 + 3, force=True) == []


def test_an_immediate_line_resets_the_counter_interval() -> None:
    core = CuriosityCore(counter_flush_s=60)
    created(core, sig(at=T0))
    core.handle(sig(at=T0 + 30), T0 + 30)
    assert core.handle(sig(error="new", at=T0 + 40), T0 + 40) is not None
    assert core.pending_count == 0  # the immediate line carried the counters
    core.handle(sig(error="new", at=T0 + 70), T0 + 70)
    assert core.due_updates(T0 + 90) == []
    assert len(core.due_updates(T0 + 100)) == 1


# -- resolution ----------------------------------------------------------------------------
def test_resolution_marks_the_question_resolved() -> None:
    core = CuriosityCore()
    first = created(core, sig())
    q = core.handle(sig(resolved=True, at=T0 + 5, gap_reason="the test passes again"), T0 + 5)
    assert q is not None and q.id == first.id
    assert q.status == "resolved" and not q.is_open
    assert q.metadata["resolution"] == "the test passes again"
    assert q.metadata["resolved_at"] == "2023-11-14T22:13:25.000+00:00"
    assert core.resolved["test_failure"] == 1
    assert core.open_questions() == []
    assert core.ranked(include_resolved=True) == [q]
    # Resolving again, or resolving a gap never seen, writes nothing.
    assert core.handle(sig(resolved=True, at=T0 + 6), T0 + 6) is None
    assert core.handle(sig("missing_tool", "jq", resolved=True), T0 + 6) is None
    assert len(core.questions) == 1


def test_resolution_carries_pending_counters() -> None:
    core = CuriosityCore()
    created(core, sig())
    core.handle(sig(at=T0 + 1), T0 + 1)
    q = core.handle(sig(resolved=True, at=T0 + 2), T0 + 2)
    assert q is not None and q.metadata["occurrences"] == 2
    assert core.pending_count == 0


def test_a_resolved_gap_that_returns_reopens_at_once() -> None:
    core = CuriosityCore()
    first = created(core, sig())
    created(core, sig(resolved=True, at=T0 + 1), T0 + 1)
    q = core.handle(sig(at=T0 + 2), T0 + 2)
    assert q is not None and q.id == first.id
    assert q.status == "ready" and q.is_open
    assert q.metadata["reopened"] == 1
    assert q.metadata["occurrences"] == 2
    assert q.created_at == first.created_at
    created(core, sig(resolved=True, at=T0 + 3), T0 + 3)
    assert created(core, sig(at=T0 + 4), T0 + 4).metadata["reopened"] == 2


# -- suppression ---------------------------------------------------------------------------
def test_suppress_globs_match_capability_key_or_gap_name() -> None:
    core = CuriosityCore(suppress=["integration.legacy_*", "tests/flaky/*"])
    assert core.handle(sig("orphaned_queue", "legacy_voice_queue"), T0) is None  # cap key
    assert core.handle(sig("test_failure", "tests/flaky/test_net.py::t"), T0) is None  # name
    assert core.suppressed == 2
    assert core.questions == {}
    assert core.handle(sig("orphaned_queue", "voice_queue"), T0) is not None
    for _ in range(370):  # the old system's 370 duplicates for one disabled queue
        core.handle(sig("orphaned_queue", "legacy_voice_queue"), T0)
    assert len(core.questions) == 1
    assert core.suppressed == 372


def test_suppress_is_a_glob_not_a_substring() -> None:
    core = CuriosityCore(suppress=["ffmpeg"])
    assert core.handle(sig("missing_tool", "ffmpeg"), T0) is None
    assert core.handle(sig("missing_tool", "ffmpeg-static"), T0) is not None
    assert core.is_suppressed("ffmpeg", "tool.ffmpeg")
    assert not core.is_suppressed("FFMPEG", "tool.FFMPEG")  # case-sensitive


# -- unknown gap types and bad input --------------------------------------------------------
def test_unknown_gap_type_is_never_dropped() -> None:
    core = CuriosityCore()
    q = created(core, sig("brand_new_kind", "thing"))
    assert q.metadata["gap_type"] == "brand_new_kind"
    assert q.action_class == "investigate"
    assert core.created["brand_new_kind"] == 1


# -- rebuilding from the feed --------------------------------------------------------------
def test_load_rebuilds_and_dedup_continues_across_a_restart() -> None:
    before = CuriosityCore()
    q = created(before, sig())
    before.handle(sig(at=T0 + 1), T0 + 1)
    [flushed] = before.due_updates(T0 + 2, force=True)
    feed_view = {q.id: flushed.model_dump(mode="json")}

    after = CuriosityCore(counter_flush_s=60)
    assert after.load(feed_view.values(), T0 + 100) == 1
    assert after.handle(sig(at=T0 + 101), T0 + 101) is None  # no new question, no line
    again = after.questions[q.id]
    assert again.metadata["occurrences"] == 3
    assert again.created_at == q.created_at
    # Loaded questions count as written at load time: no early counter line.
    assert after.due_updates(T0 + 150) == []
    assert len(after.due_updates(T0 + 160)) == 1


def test_load_skips_invalid_questions() -> None:
    core = CuriosityCore()
    good = created(CuriosityCore(), sig()).model_dump(mode="json")
    assert core.load([{"id": "broken"}, good, {"id": "x", "priority": "high"}], T0) == 1
    assert list(core.questions) == [good["id"]]


def test_load_keeps_resolved_questions_resolved() -> None:
    src = CuriosityCore()
    created(src, sig())
    resolved = created(src, sig(resolved=True, at=T0 + 1), T0 + 1)
    core = CuriosityCore()
    core.load([resolved.model_dump(mode="json")], T0 + 2)
    assert core.open_questions() == []
    assert core.handle(sig(at=T0 + 3), T0 + 3) is not None  # reopens at once
