"""cluster/merge.py: question records in the bucket and one signal's effect on them."""

from __future__ import annotations

import orjson
import pytest

from kloros_stream.cluster.merge import (
    APPLIED_KEEP,
    BadRecord,
    Record,
    adopt,
    apply,
    decode_record,
    encode_record,
    key_of,
    merge_hosts,
)
from kloros_stream.cluster.wire import MSG_ID_HEADER, decode, encode
from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.models import CAPABILITY_GAP_RESOLVED, QuestionStatus, Signal

NOW = 1_700_000_100.0


def _incoming(host: str, at: float, name: str = "pkg/t.py::t", resolved: bool = False,
              reason: str = "failed") -> object:
    sig = Signal(ecosystem="tests", monitor="test", observed_at=at, ts=at,
                 signal=CAPABILITY_GAP_RESOLVED if resolved else "CAPABILITY_GAP",
                 facts={"gap_type": "test_failure", "gap_name": name,
                        "gap_category": "quality", "gap_reason": reason})
    out = encode(host, 1, sig)
    return decode(out.subject, out.payload, {MSG_ID_HEADER: out.msg_id})


def test_the_same_gap_on_three_hosts_is_one_question_that_names_them() -> None:
    record = None
    for i, host in enumerate(["a", "b", "c", "a"]):
        record = apply(record, _incoming(host, 1_700_000_000.0 + i), (), NOW)
        assert record is not None
    q = record.question
    assert q.id == key_of(_incoming("z", 1.0))
    assert q.metadata["occurrences"] == 4
    assert {h: v["occurrences"] for h, v in q.metadata["hosts"].items()} == {
        "a": 2, "b": 1, "c": 1}
    assert q.metadata["hosts"]["a"]["last_seen"].startswith("2023-11-14T22:13:23")
    assert len(record.applied) == 4


def test_a_redelivered_message_changes_nothing() -> None:
    msg = _incoming("a", 1_700_000_000.0)
    record = apply(None, msg, (), NOW)
    assert record is not None
    assert apply(record, msg, (), NOW) is None
    again = decode_record(encode_record(record))
    assert apply(again, msg, (), NOW) is None


def test_the_applied_memory_is_bounded() -> None:
    record = None
    for i in range(APPLIED_KEEP + 5):
        record = apply(record, _incoming("a", 1_700_000_000.0 + i), (), NOW)
    assert record is not None and len(record.applied) == APPLIED_KEEP


def test_suppressed_gaps_and_unknown_resolutions_write_nothing() -> None:
    assert apply(None, _incoming("a", 1.0), ("pkg/*",), NOW) is None
    assert apply(None, _incoming("a", 1.0, resolved=True), (), NOW) is None


def test_a_resolution_keeps_the_hosts_and_a_recurrence_reopens() -> None:
    record = apply(None, _incoming("a", 1_700_000_000.0), (), NOW)
    resolved = apply(record, _incoming("b", 1_700_000_001.0, resolved=True, reason="ok"), (),
                     NOW)
    assert resolved is not None
    assert resolved.question.status == QuestionStatus.RESOLVED
    assert list(resolved.question.metadata["hosts"]) == ["a"]
    back = apply(resolved, _incoming("b", 1_700_000_002.0), (), NOW)
    assert back is not None and back.question.status == QuestionStatus.READY
    assert set(back.question.metadata["hosts"]) == {"a", "b"}


def test_malformed_stored_hosts_are_dropped_not_trusted() -> None:
    hosts = merge_hosts({"a": {"occurrences": 2, "last_seen": "2024"}, "b": "junk",
                         "c": {"occurrences": "x", "last_seen": "2024"}}, "a", "2025")
    assert hosts == {"a": {"occurrences": 3, "last_seen": "2025"}}
    assert merge_hosts(["junk"], "d", "2025") == {"d": {"occurrences": 1, "last_seen": "2025"}}
    assert merge_hosts({"a": {"occurrences": 1, "last_seen": "2026"}}, "a", "2025")[
        "a"]["last_seen"] == "2026"


@pytest.mark.parametrize("data", [b"nope", b"[]", b'{"q": {"id": 1}}',
                                  b'{"q": null}', b'{"applied": []}'])
def test_bad_records_are_refused(data: bytes) -> None:
    with pytest.raises(BadRecord):
        decode_record(data)


def test_bad_applied_lists_are_refused() -> None:
    record = apply(None, _incoming("a", 1.0), (), NOW)
    assert record is not None
    raw = orjson.loads(encode_record(record))
    raw["applied"] = [1, 2]
    with pytest.raises(BadRecord):
        decode_record(orjson.dumps(raw))


def test_adopt_writes_new_and_changed_questions_now_and_counters_later() -> None:
    core = CuriosityCore(counter_flush_s=60)
    first = apply(None, _incoming("a", 1_700_000_000.0), (), NOW)
    assert first is not None
    assert adopt(core, first.question, NOW) == first.question
    assert adopt(core, first.question, NOW) is None  # the same revision again
    second = apply(first, _incoming("b", 1_700_000_001.0), (), NOW)
    assert second is not None
    assert adopt(core, second.question, NOW) is None
    assert core.pending_count == 1
    assert core.questions[first.question.id].metadata["occurrences"] == 2
    due = core.due_updates(NOW + 61)
    assert [q.metadata["occurrences"] for q in due] == [2]
    gone = apply(second, _incoming("a", 1_700_000_002.0, resolved=True), (), NOW)
    assert gone is not None
    assert adopt(core, gone.question, NOW) == gone.question


def test_records_round_trip() -> None:
    record = apply(None, _incoming("a", 1.0), (), NOW)
    assert record is not None
    assert decode_record(encode_record(record)) == Record(record.question, record.applied)
