"""ChaosMonitor on a real history file with real inotify (tmp_path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from kloros_stream.checkpoint import read_only_store
from kloros_stream.monitors.chaos import ChaosMonitor
from tests.support.fakes import ListPublisher, make_context, running_monitor
from tests.support.scripted import wait_until
from tests.support.service import ServiceProcess, write_config

CONFIG = {
    "monitors": {"chaos": {"history_file": "chaos.jsonl", "recovery_runs": 3, "recovery_rate": 0.6}}
}


def append(path: Path, *entries: Any, raw: bytes = b"") -> None:
    with path.open("ab") as fh:
        fh.write(raw + b"".join(orjson.dumps(e) + b"\n" for e in entries))


def entry(scenario: str, healed: bool, error: str | None = None) -> dict[str, Any]:
    return {"scenario": scenario, "healed": healed, "error": error}


def running(
    tmp_path: Path, data: dict[str, Any] | None = None, publisher: ListPublisher | None = None
) -> contextlib.AbstractAsyncContextManager[tuple[ChaosMonitor, ListPublisher]]:
    return running_monitor(ChaosMonitor, tmp_path, data or CONFIG, publisher=publisher)


def gap_names(pub: ListPublisher) -> list[str]:
    return [s.gap_name for s in pub.gaps("healing_failure")]


async def test_failure_is_a_gap_with_scenario_stats(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    async with running(tmp_path) as (monitor, pub):
        append(history, entry("db_restart", True), entry("db_restart", False, "timeout"))
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
        append(
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
        append(history, entry("net", False, "e1"))
        await pub.wait_for(lambda s: len(s) == 1)
        append(history, entry("net", True))  # window [F,H]: not full
        append(history, entry("net", True))  # [F,H,H] = 0.67 >= 0.6: recovered
        await pub.wait_for(lambda s: len(pub.resolutions()) == 1)
        res = pub.resolutions()[0]
        assert res.gap_name == "net" and res.facts["total"] == 3
        assert "heals again" in res.facts["gap_reason"]
        append(history, entry("net", False, "e2"))
        await pub.wait_for(lambda s: len(pub.gaps()) == 2)
        assert pub.gaps()[-1].facts["failures"] == 2


async def test_failures_in_one_batch_coalesce_per_scenario(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    append(history, *[entry("a", False, f"e{i}") for i in range(50)], entry("b", False))
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
        append(history, raw=garbage + b"not json\n[1,2]\n" + huge + b'{"healed": false}\n')
        append(history, entry("after", False))
        await pub.wait_for(lambda s: len(s) >= 1)
        assert gap_names(pub) == ["after"]
        tail = monitor.tailer.stats
        assert tail["skipped_long"] == 1 and tail["skipped_malformed"] >= 2
        assert monitor.ignored >= 1


async def test_restart_announces_nothing_and_still_resolves(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    async with running(tmp_path) as (_, pub):
        append(history, entry("s1", False, "x"), entry("s2", True))
        await pub.wait_for(lambda s: len(s) == 1)
    pub2 = ListPublisher()
    async with running(tmp_path, publisher=pub2) as (monitor, _):
        append(history, entry("s2", True))  # unrelated: s2 was never failing
        await pub2.wait_for(
            lambda s: monitor.stats.get("s2") is not None and monitor.stats.get("s2").total == 2
        )  # type: ignore[union-attr]
        assert pub2.signals == []  # nothing re-announced from before the restart
        stats = monitor.stats.get("s1")
        assert stats is not None and stats.open and stats.total == 1
        append(history, entry("s1", True), entry("s1", True))
        await pub2.wait_for(lambda s: len(pub2.resolutions()) == 1)
        assert pub2.gaps() == []


async def test_rotation_keeps_counting(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    async with running(tmp_path) as (monitor, pub):
        append(history, entry("r", False))
        await pub.wait_for(lambda s: len(s) == 1)
        history.rename(tmp_path / "chaos.jsonl.1")
        append(history, entry("r", False))
        await pub.wait_for(lambda s: len(s) == 2)
        assert pub.gaps()[-1].facts["total"] == 2
        assert monitor.tailer.stats["rotations"] >= 1


async def test_scenarios_are_bounded(tmp_path: Path) -> None:
    data = {"monitors": {"chaos": {"history_file": "chaos.jsonl", "max_scenarios": 5}}}
    history = tmp_path / "chaos.jsonl"
    append(history, *[entry(f"s{i}", True) for i in range(200)])
    async with running(tmp_path, data) as (monitor, pub):
        await pub.wait_for(lambda s: monitor.ctx.status.details.get("evicted") == 195)
        assert monitor.ctx.status.details["scenarios"] == 5


async def test_one_shot_scan_reports_open_scenarios_once(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    append(
        history,
        entry("a", False),
        entry("a", False),
        entry("b", False),
        entry("b", True),
        entry("b", True),
        entry("c", True),
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
    lines = [entry(scenarios[i % 10], i % 50 == 0, f"e{i}") for i in range(40_000)]
    append(history, *lines)  # ~2.5 MB: about 40 tailer batches, each touching every scenario
    async with running(tmp_path) as (monitor, pub):
        await wait_until(
            lambda: sum(s.total for s in map(monitor.stats.get, scenarios) if s) == 40_000
        )
        await pub.wait_for(lambda s: len({g.gap_name for g in pub.gaps()}) == 10)
        assert len(pub.signals) < 10 * 8  # not one per failure (39,200) or per batch (~200)
        last = {g.gap_name: g.facts for g in pub.gaps()}
        assert all(last[n]["total"] == 4000 for n in scenarios)
        append(history, entry("live", False))
        await pub.wait_for(lambda s: pub.gaps()[-1].gap_name == "live")


async def test_state_and_offset_are_one_atomic_checkpoint(tmp_path: Path) -> None:
    history = tmp_path / "chaos.jsonl"
    async with running(tmp_path) as (monitor, pub):
        append(history, entry("a", False), raw=b"garbage\n")
        await pub.wait_for(lambda s: len(s) == 1)
        state_file = monitor.ctx.checkpoints.path("stats")
        await wait_until(lambda: state_file.exists() and b'"offset"' in state_file.read_bytes())
    saved = orjson.loads(state_file.read_bytes())
    assert saved["tail"]["offset"] == history.stat().st_size
    assert saved["stats"]["scenarios"][0][:3] == ["a", 1, 1]
    assert sorted(p.name for p in state_file.parent.iterdir()) == ["stats.json"]


# -- end to end: a real `kloros-stream run` subprocess ---------------------------------------


def feed_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def assert_no_duplicates(feed: Path) -> None:
    """Every gap has one id, and each id was created once (restarts included)."""
    created: dict[str, set[str]] = {}
    ids: dict[tuple[str, str], set[str]] = {}
    for q in feed_lines(feed):
        created.setdefault(q["id"], set()).add(q["created_at"])
        ids.setdefault((q["metadata"]["gap_type"], q["metadata"]["gap_name"]), set()).add(q["id"])
    assert all(len(v) == 1 for v in created.values()), created
    assert all(len(v) == 1 for v in ids.values()), ids


def wait_file_contains(path: Path, needle: bytes, timeout: float = 10.0) -> None:
    """Wait until ``path`` (a checkpoint) mentions ``needle``."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if needle in path.read_bytes():
                return
        assert time.monotonic() < deadline, f"{path} never mentioned {needle!r}"
        time.sleep(0.01)


@pytest.mark.e2e
def test_e2e_chaos_kill9_mid_stream_then_restart(tmp_path: Path) -> None:
    history = tmp_path / "var" / "chaos.jsonl"
    history.parent.mkdir()
    config = write_config(
        tmp_path,
        {
            "monitors": {
                "chaos": {
                    "history_file": "var/chaos.jsonl",
                    "recovery_runs": 2,
                    "recovery_rate": 1.0,
                }
            }
        },
    )
    total = 150

    def writer() -> None:
        for i in range(total):
            append(history, entry(f"burst{i:03d}", False, f"error {i}"))
            time.sleep(0.002)

    svc = ServiceProcess(config).start()
    thread = threading.Thread(target=writer)
    try:
        append(history, entry("db_failover", False, "replica lagging"))
        svc.wait_feed(lambda qs: any(q["metadata"]["gap_name"] == "db_failover" for q in qs))
        wait_file_contains(tmp_path / "var" / "state" / "chaos" / "stats.json", b"db_failover")
        thread.start()
        svc.wait_feed(lambda qs: len(qs) >= 20)
        svc.kill()  # mid-stream: the writer keeps appending while the service is down
    finally:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.kill()
    with ServiceProcess(config) as svc2:
        thread.join(timeout=30)
        qs = svc2.wait_feed(lambda qs: len(qs) == total + 1, timeout=30)
        assert {q["metadata"]["gap_name"] for q in qs} == {"db_failover"} | {
            f"burst{i:03d}" for i in range(total)
        }
        assert all(q["metadata"]["gap_type"] == "healing_failure" for q in qs)
        # Exactly-once statistics: the replay after kill -9 counted no entry twice.
        assert all(q["metadata"]["facts"]["total"] == 1 for q in qs), [
            (q["metadata"]["gap_name"], q["metadata"]["facts"]["total"])
            for q in qs
            if q["metadata"]["facts"]["total"] != 1
        ]
        append(history, entry("db_failover", True), entry("db_failover", True))
        svc2.wait_feed(
            lambda qs: any(
                q["metadata"]["gap_name"] == "db_failover" and q["status"] == "resolved" for q in qs
            )
        )
        status, body = svc2.get("/questions?status=all&top=1000")
        assert status == 200
        db = next(q for q in orjson.loads(body) if q["metadata"]["gap_name"] == "db_failover")
        assert db["metadata"]["occurrences"] == 1  # not re-announced by either restart
        assert "heals again" in db["metadata"]["resolution"]
    assert_no_duplicates(svc2.feed_path)
