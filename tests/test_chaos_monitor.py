"""ChaosMonitor on a real history file with real inotify (tmp_path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from kloros_stream.checkpoint import read_only_store
from kloros_stream.monitors.chaos import ChaosMonitor
from tests.support.fakes import ListPublisher, make_context, running_monitor
from tests.support.inputs import append_jsonl, chaos_entry
from tests.support.scripted import wait_until

CONFIG = {
    "monitors": {"chaos": {"history_file": "chaos.jsonl", "recovery_runs": 3, "recovery_rate": 0.6}}
}


def running(
    tmp_path: Path, data: dict[str, Any] | None = None, publisher: ListPublisher | None = None
) -> contextlib.AbstractAsyncContextManager[tuple[ChaosMonitor, ListPublisher]]:
    return running_monitor(ChaosMonitor, tmp_path, data or CONFIG, publisher=publisher)


def gap_names(pub: ListPublisher) -> list[str]:
    return [s.gap_name for s in pub.gaps("healing_failure")]


async def test_failure_is_a_gap_with_scenario_stats(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    async with running(tmp_path) as (monitor, pub):
        append_jsonl(
            history, chaos_entry("db_restart", True), chaos_entry("db_restart", False, "timeout")
        )
        await pub.wait_for(lambda s: len(s) >= 1)
        sig = pub.gaps()[0]
        assert sig.gap_type == "healing_failure" and sig.gap_name == "db_restart"
        assert sig.ecosystem == "self_healing" and sig.monitor == "chaos"
        facts = sig.facts
        assert (facts["total"], facts["failures"], facts["healing_rate"]) == (2, 1, 0.5)
        assert facts["last_error"] == "timeout"
        assert monitor.ctx.status.details["open"] == 1


async def test_kloros_entries_and_file_created_after_start(tmp_path: Path) -> None:
    history = tmp_path / "later" / "chaos.jsonl"
    data = {"monitors": {"chaos": {"history_file": "later/chaos.jsonl"}}}
    async with running(tmp_path, data) as (_, pub):
        await asyncio.sleep(0.2)  # let the monitor start waiting for the missing file
        history.parent.mkdir()
        append_jsonl(
            history,
            {
                "spec_id": "gpu_oom",
                "target": "dream",
                "mode": "kill",
                "outcome": {"healed": False, "reason": "no restart"},
            },
        )
        await pub.wait_for(lambda s: len(s) >= 1)
        facts = pub.gaps()[0].facts
        assert pub.gaps()[0].gap_name == "gpu_oom"
        assert facts["target"] == "dream" and facts["last_error"] == "no restart"


async def test_recovery_resolves_and_a_new_failure_reopens(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    async with running(tmp_path) as (_, pub):
        append_jsonl(history, chaos_entry("net", False, "e1"))
        await pub.wait_for(lambda s: len(s) == 1)
        append_jsonl(history, chaos_entry("net", True))  # window [F,H]: not full
        append_jsonl(history, chaos_entry("net", True))  # [F,H,H] = 0.67 >= 0.6: recovered
        await pub.wait_for(lambda s: len(pub.resolutions()) == 1)
        res = pub.resolutions()[0]
        assert res.gap_name == "net" and res.facts["total"] == 3
        assert "heals again" in res.facts["gap_reason"]
        append_jsonl(history, chaos_entry("net", False, "e2"))
        await pub.wait_for(lambda s: len(pub.gaps()) == 2)
        assert pub.gaps()[-1].facts["failures"] == 2


async def test_failures_in_one_batch_coalesce_per_scenario(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    append_jsonl(
        history, *[chaos_entry("a", False, f"e{i}") for i in range(50)], chaos_entry("b", False)
    )
    async with running(tmp_path) as (monitor, pub):
        await pub.wait_for(lambda s: monitor.ctx.status.details.get("scenarios") == 2)
        # One read: each scenario announced once, with its final totals.
        assert sorted(gap_names(pub)) == ["a", "b"]
        a = next(s for s in pub.gaps() if s.gap_name == "a")
        assert a.facts["failures"] == 50 and a.facts["last_error"] == "e49"


async def test_bad_lines_are_skipped(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    garbage = os.urandom(2048).replace(b"\n", b"") + b"\n"
    huge = b'{"scenario": "big", "healed": false, "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}\n'
    async with running(tmp_path) as (monitor, pub):
        append_jsonl(history, raw=garbage + b"not json\n[1,2]\n" + huge + b'{"healed": false}\n')
        append_jsonl(history, chaos_entry("after", False))
        await pub.wait_for(lambda s: len(s) >= 1)
        assert gap_names(pub) == ["after"]
        tail = monitor.tailer.stats
        assert tail["skipped_long"] == 1 and tail["skipped_malformed"] >= 2
        assert monitor.ignored >= 1


async def test_restart_announces_nothing_and_still_resolves(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    async with running(tmp_path) as (_, pub):
        append_jsonl(history, chaos_entry("s1", False, "x"), chaos_entry("s2", True))
        await pub.wait_for(lambda s: len(s) == 1)
    pub2 = ListPublisher()
    async with running(tmp_path, publisher=pub2) as (monitor, _):
        append_jsonl(history, chaos_entry("s2", True))  # unrelated: s2 was never failing
        await pub2.wait_for(
            lambda s: monitor.stats.get("s2") is not None and monitor.stats.get("s2").total == 2
        )  # type: ignore[union-attr]
        assert pub2.signals == []  # nothing re-announced from before the restart
        stats = monitor.stats.get("s1")
        assert stats is not None and stats.open and stats.total == 1
        append_jsonl(history, chaos_entry("s1", True), chaos_entry("s1", True))
        await pub2.wait_for(lambda s: len(pub2.resolutions()) == 1)
        assert pub2.gaps() == []


async def test_rotation_keeps_counting(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    async with running(tmp_path) as (monitor, pub):
        append_jsonl(history, chaos_entry("r", False))
        await pub.wait_for(lambda s: len(s) == 1)
        history.rename(tmp_path / "chaos.jsonl.1")
        append_jsonl(history, chaos_entry("r", False))
        await pub.wait_for(lambda s: len(s) == 2)
        assert pub.gaps()[-1].facts["total"] == 2
        assert monitor.tailer.stats["rotations"] >= 1


async def test_scenarios_are_bounded(tmp_path: Path) -> None:
    data = {"monitors": {"chaos": {"history_file": "chaos.jsonl", "max_scenarios": 5}}}
    history = tmp_path / "chaos.jsonl"
    append_jsonl(history, *[chaos_entry(f"s{i}", True) for i in range(200)])
    async with running(tmp_path, data) as (monitor, pub):
        await pub.wait_for(lambda s: monitor.ctx.status.details.get("evicted") == 195)
        assert monitor.ctx.status.details["scenarios"] == 5


async def test_one_shot_scan_reports_open_scenarios_once(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    append_jsonl(
        history,
        chaos_entry("a", False),
        chaos_entry("a", False),
        chaos_entry("b", False),
        chaos_entry("b", True),
        chaos_entry("b", True),
        chaos_entry("c", True),
    )
    ctx, pub = make_context("chaos", tmp_path, CONFIG, one_shot=True)
    ctx.checkpoints = read_only_store()  # as the scan command does
    await asyncio.wait_for(ChaosMonitor(ctx).run(), 10)
    assert sorted(gap_names(pub)) == ["a"]  # b recovered ([F,H,H]); c never failed
    assert pub.gaps()[0].facts["failures"] == 2
    assert not (tmp_path / "var" / "state").exists()  # scan writes no state


async def test_backlog_is_published_once_caught_up(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    scenarios = [f"s{k}" for k in range(10)]
    lines = [chaos_entry(scenarios[i % 10], i % 50 == 0, f"e{i}") for i in range(40_000)]
    append_jsonl(history, *lines)  # ~2.5 MB: about 40 tailer batches, each touching every scenario
    async with running(tmp_path) as (monitor, pub):
        await wait_until(
            lambda: sum(s.total for s in map(monitor.stats.get, scenarios) if s) == 40_000
        )
        await pub.wait_for(lambda s: len({g.gap_name for g in pub.gaps()}) == 10)
        assert len(pub.signals) < 10 * 8  # not one per failure (39,200) or per batch (~200)
        last = {g.gap_name: g.facts for g in pub.gaps()}
        assert all(last[n]["total"] == 4000 for n in scenarios)
        append_jsonl(history, chaos_entry("live", False))
        await pub.wait_for(lambda s: pub.gaps()[-1].gap_name == "live")


async def test_state_and_offset_are_one_atomic_checkpoint(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    async with running(tmp_path) as (monitor, pub):
        append_jsonl(history, chaos_entry("a", False), raw=b"garbage\n")
        await pub.wait_for(lambda s: len(s) == 1)
        state_file = monitor.ctx.checkpoints.path("stats")
        await wait_until(lambda: state_file.exists() and b'"offset"' in state_file.read_bytes())
    saved = orjson.loads(state_file.read_bytes())
    assert saved["tail"]["offset"] == history.stat().st_size
    assert saved["stats"]["scenarios"][0][:3] == ["a", 1, 1]
    assert sorted(p.name for p in state_file.parent.iterdir()) == ["stats.json"]
