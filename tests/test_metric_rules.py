"""Suspicious-metric rules, record shapes and the per-reason open/resolved tracker."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from kloros_stream.analysis.metric_rules import (
    IDENTICAL_METRICS,
    PERFECT_PASS_SINGLE_LATENCY,
    PLACEHOLDER,
    RESOLVE_AFTER_CLEAN,
    Change,
    Experiment,
    Finding,
    SuspicionTracker,
    evaluate,
    parse_experiment,
)


def exp(**candidates: dict[str, float]) -> Experiment:
    return Experiment("e1", candidates)


def reasons(e: Experiment) -> list[str]:
    return [f.reason for f in evaluate(e)]


def kloros_record(aggregated: Any, status: str = "complete", qid: str = "q-7") -> dict[str, Any]:
    return {
        "ts": "2025-10-30T10:00:00Z",
        "intent": {
            "data": {
                "question_id": qid,
                "experiment_result": {
                    "status": status,
                    "mode": "tournament",
                    "total_candidates": 2,
                    "artifacts": {
                        "tournament": {"results": {"aggregated_by_instance": aggregated}}
                    },
                },
            }
        },
    }


def test_parse_native_dict_and_list_shapes() -> None:
    rec = {"experiment_id": "exp-1", "candidates": {"a": {"acc": 0.7, "name": "x", "ok": True}}}
    assert parse_experiment(rec) == Experiment("exp-1", {"a": {"acc": 0.7}})
    rec2 = {
        "id": 12,
        "status": "completed",
        "candidates": [{"id": "a", "metrics": {"acc": 1}}, {"metrics": {"acc": 2}}, "junk"],
    }
    assert parse_experiment(rec2) == Experiment("12", {"a": {"acc": 1.0}, "1": {"acc": 2.0}})


def test_parse_kloros_orchestrator_shape() -> None:
    agg = {"i1": {"pass_rate": 1.0, "avg_latency_p50_ms": 150.0}, "i2": {"pass_rate": 0.5}}
    got = parse_experiment(kloros_record(agg))
    assert got == Experiment(
        "q-7", {"i1": {"pass_rate": 1.0, "avg_latency_p50_ms": 150.0}, "i2": {"pass_rate": 0.5}}
    )


@pytest.mark.parametrize(
    "record",
    [
        None,
        "line",
        {"experiment_id": "x"},
        {"experiment_id": "x", "candidates": {}},
        {"experiment_id": "x", "candidates": {"a": {"label": "text"}}},
        {"candidates": {"a": {"m": 1}}},
        {"experiment_id": "x", "status": "running", "candidates": {"a": {"m": 1}}},
        kloros_record({"a": {"m": 1}}, status="failed"),
        kloros_record("nope"),
        {"intent": {"data": {"question_id": "q"}}},
    ],
)
def test_unevaluable_records(record: Any) -> None:
    assert parse_experiment(record) is None


def test_identical_metrics() -> None:
    e = exp(
        a={"acc": 0.73, "lat": 12.5}, b={"acc": 0.73, "lat": 12.5}, c={"lat": 12.5, "acc": 0.73}
    )
    findings = evaluate(e)
    assert findings[0] == Finding(
        IDENTICAL_METRICS, "all 3 candidates report identical metrics", {"acc": 0.73, "lat": 12.5}
    )
    assert reasons(exp(a={"acc": 0.73}, b={"acc": 0.74})) == []
    assert reasons(exp(a={"acc": 0.73})) == []  # one candidate compares nothing


def test_placeholder_values_majority() -> None:
    e = exp(a={"x": 0.95, "y": 150.0, "z": 12.3}, b={"x": 0.5, "y": 512.0, "z": 7.7})
    assert reasons(e) == [PLACEHOLDER]
    assert evaluate(e)[0].values == [0.5, 0.95, 150.0, 512.0]
    half = exp(a={"x": 0.95, "y": 3.3}, b={"x": 1.7, "y": 999.0})  # 2 of 4: not most
    assert reasons(half) == []
    assert reasons(exp(a={"x": 0.0, "y": -1.0})) == []  # too few values to judge
    assert reasons(exp(a={"x": 0.0, "y": -1.0, "z": 999})) == [PLACEHOLDER]


def test_perfect_pass_with_single_latency() -> None:
    e = exp(
        a={"pass_rate": 1.0, "latency_ms": 87.0, "q": 3.1},
        b={"pass_rate": 1.0, "latency_ms": 87.0, "q": 4.2},
    )
    assert reasons(e) == [PERFECT_PASS_SINGLE_LATENCY]
    assert evaluate(e)[0].values == {"latency_ms": 87.0}
    varied = exp(a={"pass_rate": 1.0, "latency_ms": 87.0}, b={"pass_rate": 1.0, "latency_ms": 91.0})
    assert reasons(varied) == []
    imperfect = exp(
        a={"pass_rate": 0.9, "latency_ms": 87.0, "q": 3.1},
        b={"pass_rate": 1.0, "latency_ms": 87.0, "q": 4.2},
    )
    assert reasons(imperfect) == []
    no_latency = exp(a={"test_pass_rate": 1.0, "q": 3.1}, b={"test_pass_rate": 1.0, "q": 4.2})
    assert reasons(no_latency) == []


def test_kloros_fake_tournament_matches_several_rules() -> None:
    same = {"pass_rate": 1.0, "avg_latency_p50_ms": 150.0, "avg_exact_match_mean": 0.95}
    e = parse_experiment(kloros_record({"i1": dict(same), "i2": dict(same)}))
    assert e is not None
    assert reasons(e) == [IDENTICAL_METRICS, PLACEHOLDER, PERFECT_PASS_SINGLE_LATENCY]


def test_healthy_experiment_is_clean() -> None:
    e = exp(
        a={"pass_rate": 0.82, "latency_ms": 131.4, "mem_mb": 611.2},
        b={"pass_rate": 0.88, "latency_ms": 127.9, "mem_mb": 598.0},
    )
    assert evaluate(e) == []


def test_tracker_flags_and_resolves_after_clean_streak() -> None:
    t = SuspicionTracker()
    f = [Finding(IDENTICAL_METRICS, "d", {})]
    assert t.observe("e1", f) == [(Change.FLAGGED, IDENTICAL_METRICS)]
    assert t.observe("e2", f) == [(Change.FLAGGED, IDENTICAL_METRICS)]
    assert t.open_reasons() == [IDENTICAL_METRICS]
    for i in range(RESOLVE_AFTER_CLEAN - 1):
        assert t.observe(f"c{i}", []) == []
    assert t.observe("last", []) == [(Change.CLEARED, IDENTICAL_METRICS)]
    assert t.open_reasons() == []
    assert t.observe("more", []) == []
    state = t.reasons[IDENTICAL_METRICS]
    assert state.count == 2 and state.examples == ["e1", "e2"]


def test_tracker_streak_resets_and_examples_are_bounded() -> None:
    t = SuspicionTracker(resolve_after=2)
    f = [Finding(PLACEHOLDER, "d", [])]
    t.observe("a", f)
    t.observe("clean", [])
    assert t.observe("b", f) == [(Change.FLAGGED, PLACEHOLDER)]
    assert t.observe("clean", []) == []  # streak restarted at b
    for i in range(20):
        t.observe(f"x{i}", f)
    assert t.reasons[PLACEHOLDER].examples == [f"x{i}" for i in range(15, 20)]


def test_tracker_round_trip() -> None:
    t = SuspicionTracker(resolve_after=2)
    t.observe("a", [Finding(PLACEHOLDER, "d", [])])
    t.observe("b", [])
    u = SuspicionTracker(resolve_after=2)
    u.load_json(orjson.loads(orjson.dumps(t.to_json())))
    assert u.to_json() == t.to_json()
    assert u.observe("c", []) == [(Change.CLEARED, PLACEHOLDER)]
    v = SuspicionTracker()
    v.load_json({"x": "bad", "y": {"count": "nan?"}, "z": {"open": True, "count": 1}})
    assert v.open_reasons() == ["z"]
    v.load_json(["not", "a", "dict"])


@pytest.mark.parametrize(
    ("record", "exp_id"),
    [
        ({"experiment": "e1", "aggregated_by_instance": {"a": {"m": 1}}}, "e1"),
        ({"name": "e2", "instances": {"a": {"m": 1}}}, "e2"),
        ({"question_id": "q3", "results": {"a": {"m": 1}, "b": {"m": 2}}}, "q3"),
        ({"experiment": {"id": "e4", "status": "done?"}, "candidates": {"a": {"m": 1}}}, "e4"),
        ({"run": {"experiment_id": "e5", "results": {"aggregated_by_instance":
                                                     {"a": {"m": 1}}}}}, "e5"),
        ({"id": "top", "payload": {"name": "inner", "instances": [{"id": "a", "metrics":
                                                                   {"m": 1}}]}}, "top"),
    ],
)
def test_more_record_shapes(record: dict[str, Any], exp_id: str) -> None:
    got = parse_experiment(record)
    assert got is not None and got.experiment_id == exp_id and got.candidates["a"] == {"m": 1.0}


def test_a_nested_status_that_is_not_complete_stops_evaluation() -> None:
    record = {"id": "x", "run": {"status": "running", "results": {"a": {"m": 1}}}}
    assert parse_experiment(record) is None
