"""cluster/wire.py: subjects, message ids, host naming and the validation of what arrives."""

from __future__ import annotations

import orjson
import pytest

from kloros_stream.cluster.wire import (
    MSG_ID_HEADER,
    Rejected,
    decode,
    encode,
    localise,
    message_id,
    signal_json,
    subject,
    token,
)
from kloros_stream.models import Signal


def _sig(gap_type: str = "test_failure", name: str = "t::x", **extra: object) -> Signal:
    return Signal(ecosystem="tests", monitor="test", observed_at=1700000000.5, ts=1700000000.5,
                  facts={"gap_type": gap_type, "gap_name": name, "gap_category": "quality",
                         "gap_reason": "failed", **extra})


def test_tokens_and_subjects_keep_to_one_safe_token_each() -> None:
    assert token("gpu-node-7") == "gpu-node-7"
    assert token("node.example.org") == "node_example_org"
    assert token("a b*>c") == "a_b__c"
    assert token("") == "_"
    assert len(token("x" * 300)) == 64
    assert subject("node.example.org", "test") == "kloros.gap.node_example_org.test"
    assert subject("h", "") == "kloros.gap.h.unknown"


def test_the_message_id_follows_the_content_and_the_host() -> None:
    a, b = _sig(), _sig()
    assert message_id("h1", signal_json(a)) == message_id("h1", signal_json(b))
    assert message_id("h1", signal_json(a)) != message_id("h2", signal_json(a))
    later = _sig().model_copy(update={"observed_at": 1700000001.0})
    assert message_id("h1", signal_json(later)) != message_id("h1", signal_json(a))
    assert len(message_id("h1", signal_json(a))) == 32


def test_host_specific_gaps_carry_the_host_in_their_name_once() -> None:
    tool = localise(_sig("missing_tool", "nvcc"), "gpu7")
    assert tool.facts["gap_name"] == "gpu7:nvcc" and tool.facts["host"] == "gpu7"
    assert localise(tool, "gpu7").facts["gap_name"] == "gpu7:nvcc"
    for gap_type in ("idle_accelerator", "hardware_change"):
        assert localise(_sig(gap_type, "GPU-1"), "n1").facts["gap_name"] == "n1:GPU-1"
    shared = _sig("exception", "ValueError in f")
    assert localise(shared, "n1") is shared


def test_an_encoded_signal_decodes_to_the_same_signal() -> None:
    out = encode("node.1", 42, _sig())
    got = decode(out.subject, out.payload, {MSG_ID_HEADER: out.msg_id})
    assert (got.host, got.seq, got.msg_id) == ("node.1", 42, out.msg_id)
    assert got.signal == _sig()


def _envelope(**changes: object) -> bytes:
    data = orjson.loads(encode("h", 1, _sig()).payload)
    data.update(changes)
    return orjson.dumps(data)


@pytest.mark.parametrize(("subj", "payload", "headers", "reason"), [
    ("other.subject.h.test", None, None, "foreign_subject"),
    ("kloros.gap.h", None, None, "foreign_subject"),
    ("kloros.gap.h.test", b"{not json", None, "not_json"),
    ("kloros.gap.h.test", b"[1, 2]", None, "bad_envelope"),
    ("kloros.gap.h.test", _envelope(v=2), None, "bad_envelope"),
    ("kloros.gap.h.test", _envelope(host=""), None, "bad_envelope"),
    ("kloros.gap.h.test", _envelope(seq=-1), None, "bad_envelope"),
    ("kloros.gap.h.test", _envelope(seq=True), None, "bad_envelope"),
    ("kloros.gap.h.test", _envelope(signal="x"), None, "bad_envelope"),
    ("kloros.gap.other.test", None, None, "host_mismatch"),
    ("kloros.gap.h.test", _envelope(signal={"ecosystem": "e", "facts": {}}), None,
     "bad_signal"),
    ("kloros.gap.h.test", None, {MSG_ID_HEADER: "0" * 32}, "bad_msg_id"),
    ("kloros.gap.h.test", None, {}, "bad_msg_id"),
    ("kloros.gap.h.test", b"x" * 2_000_000, None, "too_large"),
])
def test_malformed_or_foreign_messages_are_rejected_with_a_reason(
        subj: str, payload: bytes | None, headers: dict[str, str] | None, reason: str) -> None:
    good = encode("h", 1, _sig())
    if payload is None:
        payload = good.payload
    if headers is None:
        headers = {MSG_ID_HEADER: good.msg_id}
    with pytest.raises(Rejected) as err:
        decode(subj, payload, headers)
    assert err.value.reason == reason
