"""KLoROS's shapes (sinks/kloros.py) against KLoROS's own definitions (tests/support/kloros.py,
written from HomoYouDidnt/kloros at commit 09c094d7fe5c4f60ee9aacde57f8093c491c1789)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.core.store import question_json
from kloros_stream.models import ActionClass, CuriosityQuestion, QuestionStatus, Signal
from kloros_stream.sinks.files import kloros_feed_sink
from kloros_stream.sinks.kloros import (
    KLOROS_COMMIT,
    KLOROS_QUESTION_FIELDS,
    KLOROS_STATUSES,
    investigate_facts,
    kloros_priority,
    kloros_question,
    sent_key,
    value_ratio,
)
from tests.support import kloros as theirs

T0 = 1_700_000_000.0


def question(gap_type: str, name: str, **facts: object) -> CuriosityQuestion:
    q = CuriosityCore().handle(Signal(
        ecosystem="testing", monitor="test", observed_at=T0,
        facts={"gap_type": gap_type, "gap_name": name, "gap_category": "testing",
               "gap_reason": f"{gap_type} {name}", **facts}), T0)
    assert q is not None
    return q


def test_the_definitions_match_kloros() -> None:
    assert KLOROS_COMMIT == theirs.KLOROS_COMMIT
    assert tuple(theirs.CuriosityQuestion.__dataclass_fields__) == KLOROS_QUESTION_FIELDS
    assert {s.value for s in theirs.QuestionStatus} == KLOROS_STATUSES
    assert {a.value for a in theirs.ActionClass} == {a.value for a in ActionClass}
    # Our open statuses are all statuses KLoROS knows; "resolved" is ours alone.
    assert {QuestionStatus.READY, QuestionStatus.IN_PROGRESS, QuestionStatus.BLOCKED} <= {
        QuestionStatus(s) for s in KLOROS_STATUSES}
    assert QuestionStatus.RESOLVED.value not in KLOROS_STATUSES


def test_a_question_keeps_exactly_kloros_fields() -> None:
    q = question("orphaned_queue", "jobs", producers=["a.py"])
    data = kloros_question(q.model_dump(mode="json"))
    assert data is not None
    assert tuple(data) == KLOROS_QUESTION_FIELDS  # no priority, no updated_at
    built = theirs.CuriosityQuestion(**{
        **data, "action_class": theirs.ActionClass(data["action_class"]),
        "status": theirs.QuestionStatus(data["status"])})
    assert built.id == q.id and built.evidence == q.evidence
    resolved = q.model_copy(update={"status": QuestionStatus.RESOLVED})
    assert kloros_question(resolved.model_dump(mode="json")) is None
    blocked = kloros_question(
        q.model_copy(update={"status": QuestionStatus.BLOCKED}).model_dump(mode="json"))
    assert blocked is not None and blocked["status"] == "blocked"


def test_investigate_facts_follow_emit_questions_to_bus() -> None:
    q = question("orphaned_queue", "jobs")
    facts = investigate_facts(q)
    assert list(facts) == ["question_id", "question", "hypothesis", "evidence",
                           "capability_key", "action_class", "value_estimate",
                           "cost_estimate", "priority"]
    assert facts["question_id"] == q.id and facts["cost_estimate"] == q.cost
    assert facts["action_class"] == "propose_fix" and facts["priority"] == "high"
    assert [kloros_priority(a) for a in ("investigate", "find_substitute",
                                         "explain_and_soft_fallback", "experiment")] == [
        "normal", "normal", "low", "normal"]


def test_value_ratio_divides_by_at_least_a_hundredth() -> None:
    q = question("orphaned_queue", "jobs")
    assert value_ratio(q) == pytest.approx(0.95 / 0.2)
    assert value_ratio(q.model_copy(update={"cost": 0.0})) == pytest.approx(95.0)


def test_sent_key_changes_with_evidence_and_reopening() -> None:
    q = question("orphaned_queue", "jobs")
    other = q.model_copy(update={"evidence_hash": "x"})
    reopened = q.model_copy(update={"metadata": {**q.metadata, "reopened": 1}})
    assert len({sent_key(q), sent_key(other), sent_key(reopened)}) == 3
    assert sent_key(q) == sent_key(q.model_copy(update={"priority": 99.0}))


def test_the_file_loads_with_kloros_readers(tmp_path: Path) -> None:
    path = tmp_path / "curiosity_feed.json"
    high = question("orphaned_queue", "jobs", producers=["a.py"])
    low = question("unknown_kind", "thing")
    huge = question("new_module", "m", size=1 << 70)  # beyond orjson's ints: stdlib fallback
    resolved = question("missing_tool", "jq").model_copy(
        update={"status": QuestionStatus.RESOLVED})
    sink = kloros_feed_sink(path)
    sink.write([question_json(q) for q in (high, low, huge, resolved)], T0)
    loaded = theirs.load_questions(path)
    assert [q.id for q in loaded] == [high.id, low.id, huge.id]
    assert loaded[0].action_class is theirs.ActionClass.PROPOSE_FIX
    assert loaded[2].metadata["facts"]["size"] == 1 << 70
    seen = theirs.process_feed(path)
    assert seen["count"] == seen["questions_total"] == 3
    assert [i["question_id"] for i in seen["intents"]] == [high.id, huge.id]
    assert seen["low_value"] == [low.id]
    assert sink.counters == {"writes": 1, "questions_written": 3, "questions_skipped": 1}
