"""Chaos entry normalisation and per-scenario healing statistics."""

from __future__ import annotations

import orjson
import pytest

from kloros_stream.analysis.chaos_stats import (
    ChaosEntry,
    ChaosStats,
    Transition,
    normalize_entry,
)


def stats(**kw: float) -> ChaosStats:
    args = {"max_scenarios": 100, "recovery_runs": 3, "recovery_rate": 0.67, **kw}
    return ChaosStats(**args)  # type: ignore[arg-type]


def run(s: ChaosStats, scenario: str, pattern: str) -> list[Transition | None]:
    """Feed results: 'F' failed, 'H' healed."""
    return [s.observe(ChaosEntry(scenario, c == "H", "err" if c == "F" else None)) for c in pattern]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"scenario": "s1", "healed": False, "error": "boom"}, ChaosEntry("s1", False, "boom")),
        ({"scenario": "s1", "healed": True}, ChaosEntry("s1", True)),
        (
            {
                "spec_id": "gpu_oom",
                "target": "dream",
                "mode": "kill",
                "outcome": {"healed": False, "reason": "timeout", "duration_s": 3},
            },
            ChaosEntry("gpu_oom", False, "timeout", "dream", "kill"),
        ),
        ({"scenario": "a", "spec_id": "b", "healed": True}, ChaosEntry("a", True)),
        ({"scenario": "", "spec_id": 7, "outcome": {"healed": True}}, ChaosEntry("7", True)),
        ({"scenario": "s", "healed": False, "outcome": {"healed": True}}, ChaosEntry("s", False)),
    ],
)
def test_normalize_entry(record: dict[str, object], expected: ChaosEntry) -> None:
    assert normalize_entry(record) == expected


@pytest.mark.parametrize(
    "record",
    [
        None,
        [1, 2],
        "text",
        {"scenario": "s"},  # no healed flag
        {"scenario": "s", "healed": "false"},  # not a boolean
        {"scenario": "s", "healed": 0},
        {"healed": False},  # no scenario
        {"scenario": "  ", "healed": False},
        {"scenario": True, "healed": False},
        {"spec_id": "x", "outcome": "healed"},
    ],
)
def test_entries_that_are_not_healing_results(record: object) -> None:
    assert normalize_entry(record) is None


def test_long_error_is_clipped() -> None:
    entry = normalize_entry({"scenario": "s", "healed": False, "error": "e" * 10_000})
    assert entry is not None and entry.error is not None and len(entry.error) == 500


def test_failure_opens_and_counts() -> None:
    s = stats()
    assert run(s, "db", "HFH") == [None, Transition.FAILED, None]
    got = s.get("db")
    assert got is not None
    assert (got.total, got.failures, got.open) == (3, 1, True)
    assert got.healing_rate == pytest.approx(2 / 3)
    facts = got.facts()
    assert facts["total"] == 3 and facts["failures"] == 1 and facts["last_error"] == "err"
    assert facts["healing_rate"] == 0.6667


def test_every_failure_is_reported_again() -> None:
    s = stats()
    assert run(s, "db", "FFF") == [Transition.FAILED] * 3
    assert s.get("db").failures == 3  # type: ignore[union-attr]


def test_recovery_needs_full_window_at_rate() -> None:
    s = stats(recovery_runs=3, recovery_rate=0.67)
    # After F: window [F]; H -> [F,H] not full; H -> [F,H,H] 2/3 >= 0.67? no (0.666..)
    assert run(s, "x", "FHH") == [Transition.FAILED, None, None]
    assert run(s, "x", "H") == [Transition.RECOVERED]  # [H,H,H]
    assert not s.get("x").open  # type: ignore[union-attr]
    assert run(s, "x", "H") == [None]  # already resolved: nothing more


def test_recovery_rate_and_reopen() -> None:
    s = stats(recovery_runs=4, recovery_rate=0.75)
    assert run(s, "x", "FHHH") == [Transition.FAILED, None, None, Transition.RECOVERED]
    assert run(s, "x", "F") == [Transition.FAILED]
    assert s.open_scenarios() == ["x"]


def test_recovery_runs_one_resolves_on_first_heal() -> None:
    s = stats(recovery_runs=1, recovery_rate=1.0)
    assert run(s, "x", "FH") == [Transition.FAILED, Transition.RECOVERED]


def test_healthy_scenarios_are_bounded_lru() -> None:
    s = stats(max_scenarios=3)
    for name in ("a", "b", "c"):
        run(s, name, "H")
    run(s, "a", "H")  # a is now the most recently seen
    run(s, "d", "H")
    assert len(s) == 3 and s.evicted == 1
    assert s.get("b") is None and s.get("a") is not None
    for i in range(1000):
        run(s, f"n{i}", "H")
    assert len(s) == 3


def test_open_scenarios_are_never_evicted() -> None:
    """Fault 2: more distinct failing scenarios than ``max_scenarios`` are all kept (they
    are the monitor's level); healthy ones make room, and a recovered one joins them."""
    s = stats(max_scenarios=3, recovery_runs=1, recovery_rate=1.0)
    for i in range(50):
        run(s, f"f{i}", "F")
    for i in range(10):
        run(s, f"h{i}", "H")
    assert len(s.open_scenarios()) == 50 and len(s) == 53
    run(s, "f0", "H")  # recovers: now healthy, the most recent one
    assert len(s) == 52 and s.get("f0") is not None and s.get("h7") is None
    t = stats(max_scenarios=3, recovery_runs=1, recovery_rate=1.0)
    t.load_json(orjson.loads(orjson.dumps(s.to_json())))
    assert sorted(t.open_scenarios()) == sorted(s.open_scenarios()) and len(t) == 52


def test_state_round_trip_through_json() -> None:
    s = stats(recovery_runs=3)
    run(s, "a", "FH")
    run(s, "b", "HHH")
    s.get("a").target = "svc"  # type: ignore[union-attr]
    data = orjson.loads(orjson.dumps(s.to_json()))
    t = stats(recovery_runs=3)
    assert t.load_json(data) == 2
    assert t.to_json() == s.to_json()
    # The restored state continues where it left off: window [F,H] + H + H -> [H,H,H].
    assert run(t, "a", "HH") == [None, Transition.RECOVERED]


def test_restore_with_smaller_bounds_and_bad_rows() -> None:
    s = stats(recovery_runs=5)
    for name in "abcde":
        run(s, name, "FFFFF")
    data = s.to_json()
    data["scenarios"].append(["bad", "x", 1, "", None, True, None, None])
    data["scenarios"].append("garbage")
    t = stats(max_scenarios=2, recovery_runs=2)
    t.load_json(data)
    assert [n for n in "abcde" if t.get(n)] == list("abcde")  # open: all kept
    assert len(t.get("e").recent) == 2  # type: ignore[union-attr]
    assert stats().load_json({"version": 99}) == 0
    assert stats().load_json("nonsense") == 0
