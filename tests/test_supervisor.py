"""Supervision with scripted monitors in-process: restart with capped backoff and jitter,
the breaker, ``unavailable`` without a crash loop, and isolation between monitors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from kloros_stream.config import SupervisorConfig
from kloros_stream.feed import read_feed
from kloros_stream.monitors.base import MonitorContext, MonitorStatus
from kloros_stream.supervisor import BackoffPolicy, Supervised
from tests.support.fakes import ListPublisher, make_context
from tests.support.scripted import (
    TINY_SUPERVISOR,
    Script,
    gap,
    running_service,
    service_config,
    wait_until,
)


def policy(**overrides: Any) -> BackoffPolicy:
    return BackoffPolicy.from_config(SupervisorConfig(**{**TINY_SUPERVISOR, **overrides}))


def supervise(tmp_path: Path, script: Script, pol: BackoffPolicy,
              name: str = "chaos") -> tuple[Supervised, MonitorContext, ListPublisher]:
    ctx, pub = make_context(name, tmp_path)
    make = script.factory()
    sup = Supervised(name, lambda: make(ctx), ctx.status, pol)
    return sup, ctx, pub


# -- the backoff policy --------------------------------------------------------------------
def test_backoff_doubles_and_is_capped() -> None:
    p = BackoffPolicy(0.5, 30.0, 60.0, 5, 60.0, 300.0)
    middle = [p.delay(n, rng=lambda: 0.5) for n in range(1, 10)]
    assert middle == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_jitter_stays_within_a_quarter() -> None:
    p = BackoffPolicy(1.0, 30.0, 60.0, 5, 60.0, 300.0)
    assert p.delay(3, rng=lambda: 0.0) == pytest.approx(3.0)
    assert p.delay(3, rng=lambda: 1.0) == pytest.approx(5.0)
    samples = {p.delay(3) for _ in range(200)}
    assert len(samples) > 1  # jitter: monitors that crashed together spread out
    assert all(3.0 <= s <= 5.0 for s in samples)


def test_policy_comes_from_the_config() -> None:
    p = BackoffPolicy.from_config(SupervisorConfig(backoff_initial_s=0.1, backoff_max_s=2,
                                                   breaker_restarts=2))
    assert (p.initial_s, p.max_s, p.breaker_restarts) == (0.1, 2.0, 2)


# -- restart and breaker -------------------------------------------------------------------
async def test_crash_restarts_with_growing_backoff(tmp_path: Path) -> None:
    script = Script(crash_times=3, gaps=[gap("tick", "started")])
    sup, ctx, pub = supervise(tmp_path, script, policy(breaker_restarts=5))
    with capture_logs() as logs:
        sup.start()
        try:
            await wait_until(lambda: script.running == 1, what="running after three crashes")
            assert ctx.status.state == "running"
            assert ctx.status.restarts == 3
            assert script.runs == 4
            assert ctx.status.last_error == "RuntimeError: scripted crash #3"
            assert len(pub.gaps()) == 4  # each run published its initial scan
        finally:
            await sup.stop()
    crashed = [e for e in logs if e["event"] == "monitor_crashed"]
    assert len(crashed) == 3
    assert all("Traceback" in e["traceback"] and "scripted crash" in e["traceback"]
               for e in crashed)
    restarting = [e for e in logs if e["event"] == "monitor_restarting"]
    assert [e["attempt"] for e in restarting] == [1, 2, 3]
    for e in restarting:  # 0.01 s doubling, capped at 0.05 s, +/-25 %
        base = min(0.05, 0.01 * 2 ** (e["attempt"] - 1))
        assert 0.75 * base - 0.001 <= e["delay_s"] <= 1.25 * base + 0.001


async def test_backoff_resets_after_a_stable_run(tmp_path: Path) -> None:
    script = Script(crash_times=3, crash_after_s=0.05)
    sup, _, _ = supervise(tmp_path, script, policy(stable_after_s=0.01,
                                                     breaker_restarts=10))
    with capture_logs() as logs:
        sup.start()
        try:
            await wait_until(lambda: script.running == 1)
        finally:
            await sup.stop()
    attempts = [e["attempt"] for e in logs if e["event"] == "monitor_restarting"]
    assert attempts == [1, 1, 1]  # each run outlived stable_after_s


async def test_breaker_opens_after_too_many_crashes(tmp_path: Path) -> None:
    script = Script(crash_forever=True)
    sup, ctx, _ = supervise(tmp_path, script, policy(breaker_restarts=3))
    with capture_logs() as logs:
        sup.start()
        try:
            await wait_until(lambda: ctx.status.state == "failed", what="breaker open")
        finally:
            await sup.stop()
    assert ctx.status.restarts == 3
    assert script.runs == 4
    assert ctx.status.last_error is not None
    assert "4 crashes within 60s" in ctx.status.last_error
    assert "scripted crash #4" in ctx.status.last_error
    assert [e["event"] for e in logs].count("monitor_failed") == 1
    breaker = ctx.status.as_json()["breaker"]
    assert breaker["retries"] == 0 and breaker["next_retry_in_s"] == 60.0


async def test_an_open_breaker_retries_half_open_with_capped_backoff_then_closes(
        tmp_path: Path) -> None:
    """Fault 5: a monitor that crashed past the breaker (a disk full for a while) is tried
    again after a long, doubling, capped delay; once a try runs stably the breaker closes
    and the state is ``running`` again, with no manual restart."""
    script = Script(crash_times=6)
    sup, ctx, _ = supervise(tmp_path, script, policy(
        breaker_restarts=1, breaker_retry_s=0.05, breaker_retry_max_s=0.08,
        stable_after_s=0.3))
    with capture_logs() as logs:
        sup.start()
        try:
            await wait_until(lambda: script.running == 1, what="running after the retries")
            assert ctx.status.state == "running"
            await wait_until(lambda: ctx.status.breaker is None, what="breaker closed")
        finally:
            await sup.stop()
    events = [e for e in logs if e["event"] in ("monitor_failed", "monitor_half_open")]
    delays = [e["half_open_in_s"] for e in events if e["event"] == "monitor_failed"]
    assert delays == [0.05, 0.08, 0.08, 0.08, 0.08]  # doubling, capped
    assert [e["event"] for e in logs].count("monitor_breaker_closed") == 1
    assert script.runs == 7


async def test_crashes_outside_the_window_do_not_open_the_breaker(tmp_path: Path) -> None:
    script = Script(crash_times=6, crash_after_s=0.03)
    sup, ctx, _ = supervise(tmp_path, script, policy(breaker_restarts=2,
                                                     breaker_window_s=0.02))
    sup.start()
    try:
        await wait_until(lambda: script.running == 1, what="running after six slow crashes")
        assert ctx.status.restarts == 6
    finally:
        await sup.stop()


async def test_stop_cancels_a_monitor_during_its_backoff(tmp_path: Path) -> None:
    script = Script(crash_forever=True)
    sup, ctx, _ = supervise(tmp_path, script, policy(backoff_initial_s=60,
                                                     backoff_max_s=60))
    task = sup.start()
    await wait_until(lambda: ctx.status.state == "restarting")
    await asyncio.wait_for(sup.stop(), 10)
    assert task.cancelled()


# -- unavailable ---------------------------------------------------------------------------
async def test_unavailable_is_not_a_crash_loop(tmp_path: Path) -> None:
    script = Script(unavailable="no journald on this host")
    sup, ctx, _ = supervise(tmp_path, script, policy(unavailable_retry_s=60))
    sup.start()
    try:
        await wait_until(lambda: ctx.status.state == "unavailable")
        assert ctx.status.last_error == "no journald on this host"
        for _ in range(50):  # plenty of chances for a crash loop to show
            await asyncio.sleep(0.01)
        assert script.runs == 1
        assert ctx.status.restarts == 0
        assert ctx.status.state == "unavailable"
    finally:
        await sup.stop()


async def test_unavailable_retries_never_trip_the_breaker(tmp_path: Path) -> None:
    script = Script(unavailable="nvidia-smi not found")
    sup, ctx, _ = supervise(tmp_path, script, policy(unavailable_retry_s=0.01,
                                                     breaker_restarts=2))
    sup.start()
    try:
        await wait_until(lambda: script.runs >= 10, what="ten availability checks")
        assert ctx.status.state == "unavailable"
        assert ctx.status.restarts == 0
        script.unavailable = None  # the source appears
        await wait_until(lambda: script.running == 1)
        assert ctx.status.state == "running"
    finally:
        await sup.stop()


# -- isolation through the service ---------------------------------------------------------
async def test_one_monitors_crash_never_affects_another(tmp_path: Path) -> None:
    cfg = service_config(tmp_path, {"feed": {"counter_flush_s": 0.05}})
    crasher = Script(crash_forever=True, gaps=[gap("exception", "boom")])
    ticker = Script(tick_s=0.01, tick_gap_type="tick")
    unavailable = Script(unavailable="journal not readable")
    async with running_service(
        cfg, {"exception": crasher, "test": ticker, "exploration": unavailable}
    ) as svc:
        await wait_until(lambda: svc.statuses["exception"].state == "failed",
                         what="the crasher's breaker")
        published = svc.bus.published["test"]
        await wait_until(lambda: svc.bus.published["test"] >= published + 10,
                         what="the ticker still publishing")
        assert svc.statuses["test"].state == "running"
        assert svc.statuses["test"].restarts == 0
        assert svc.statuses["test"].last_event_at is not None
        assert svc.statuses["exploration"].state == "unavailable"
        assert svc.consumer_running
        report, code = svc.health()
        assert code == 503
        assert report["status"] == "degraded"
        assert "exception:" in report["reason"] and "crashes within" in report["reason"]
        assert "test" not in report["reason"]


async def test_a_monitor_that_ignores_stop_does_not_stall_shutdown(tmp_path: Path) -> None:
    cfg = service_config(tmp_path)
    stubborn = Script(stall_on_cancel_s=4.0)
    other = Script()
    async with running_service(cfg, {"test": stubborn, "chaos": other}) as svc:
        await wait_until(lambda: stubborn.running == 1 and other.running == 1)
        other.push(gap("healing_failure", "late"))
        await wait_until(lambda: svc.bus.total_published == 1)
    # running_service returned: shutdown completed although one monitor ignored it,
    # and the other monitor's signal reached the feed.
    latest = read_feed(svc.feed.path).questions  # the store is closed: read the feed
    assert [q["metadata"]["gap_name"] for q in latest.values()] == ["late"]
    assert svc.feed.path.read_bytes().count(b"\n") == 1


def test_status_json_has_the_contract_fields() -> None:
    status = MonitorStatus()
    assert {"state", "restarts", "last_error", "last_event_at"} <= set(status.as_json())
