"""Reconciliation of a monitor's level with the questions: the pure plan, and a real
in-process service whose bus is far too small for a monitor's burst."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kloros_stream.core.store import QuestionEntry
from kloros_stream.monitors.base import GapKey, Monitor, MonitorContext
from kloros_stream.reconcile import plan
from kloros_stream.service import Service
from tests.support.scripted import service_config, wait_until


def entry(gap_type: str, name: str, status: str = "ready") -> QuestionEntry:
    return QuestionEntry(id=f"{gap_type}-{name}", status=status, priority=1.0, occurrences=1,
                         created_at="", updated_at="", last_seen="", evidence_hash="",
                         gap_type=gap_type, gap_name=name, monitor="m")


def test_plan_reannounces_missing_and_resolves_what_the_level_lacks() -> None:
    level = {("t", "open-and-asked"), ("t", "missing"), ("t", "bad\udcffname")}
    entries = [entry("t", "open-and-asked"), entry("t", "gone"), entry("event", "once"),
               entry("t", "bad\\xffname")]
    todo = plan(level, entries, event_gap_types=frozenset({"event"}))
    assert todo.reannounce == [("t", "missing")]  # the escaped name matches its question
    assert [e.gap_name for e in todo.resolve] == ["gone"]  # events are never resolved


def test_plan_knows_answered_and_held_questions_and_resolves_them_when_gone() -> None:
    """A consumer's status is no reason to announce the gap again; a gap gone away
    resolves its question whatever a consumer set (the monitor's word wins)."""
    entries = [entry("t", "answered", "answered"), entry("t", "held", "in_progress"),
               entry("t", "blocked", "blocked"), entry("t", "done", "answered")]
    todo = plan({("t", "answered"), ("t", "held"), ("t", "blocked")}, entries)
    assert todo.reannounce == []
    assert [e.gap_name for e in todo.resolve] == ["done"]


def test_plan_with_nothing_to_do() -> None:
    todo = plan({("t", "a")}, [entry("t", "a")])
    assert todo.reannounce == [] and todo.resolve == []


class LevelMonitor(Monitor):
    """Opens ``count`` gaps in one burst (no pacing: most are dropped by a tiny bus), then
    says its level is ready; later closes some of them without announcing it."""

    name = "chaos"
    ecosystem = "testing"
    count = 200

    def __init__(self, ctx: MonitorContext) -> None:
        super().__init__(ctx)
        self.open: set[GapKey] = set()

    async def run(self) -> None:
        for i in range(self.count):
            self.open.add(("healing_failure", f"s{i}"))
            self._gap(f"s{i}")
        self.ctx.level_ready()
        await asyncio.Event().wait()

    def _gap(self, name: str) -> None:
        self.ctx.gap(gap_type="healing_failure", gap_name=name, gap_category="resilience",
                     gap_reason="fails", ecosystem=self.ecosystem)

    def level(self) -> set[GapKey]:
        return set(self.open)

    def reannounce(self, keys: Iterable[GapKey]) -> int:
        keys = list(keys)
        for _, name in keys:
            self._gap(name)
        return len(keys)


async def test_a_burst_dropped_by_the_bus_is_repaired_from_the_level(tmp_path: Path) -> None:
    config = service_config(tmp_path, {"bus": {"maxsize": 8}})
    monitors: list[LevelMonitor] = []

    def make(ctx: MonitorContext) -> LevelMonitor:
        monitors.append(LevelMonitor(ctx))
        return monitors[-1]

    svc = Service(config, factories={"chaos": make})
    task = asyncio.create_task(svc.run())
    try:
        def open_names() -> set[str]:
            return {e.gap_name for e in svc.core.open_entries("chaos")}

        await wait_until(lambda: svc.consumer_running, what="service start", task=task)

        await wait_until(lambda: len(open_names()) == 200, what="all 200 open", task=task)
        assert svc.bus.dropped["chaos"] >= 150  # the burst was mostly dropped
        dropped = svc.bus.total_dropped
        totals: dict[str, Any] = svc.reconciler.totals
        assert totals["reannounced"] >= 150
        assert svc.bus.total_dropped == dropped  # the repair itself was paced: no drop
        assert svc.bus.total_published == (svc.bus.total_dropped + svc.bus.depth
                                           + sum(svc.bus.delivered.values()))
        # edges lost another way (the monitor forgot to announce): the next reconcile
        # resolves what its level no longer has
        monitors[-1].open -= {("healing_failure", f"s{i}") for i in range(50)}
        svc.reconciler.request("chaos", "test")
        await wait_until(lambda: len(open_names()) == 150, what="50 resolved", task=task)
        assert open_names() == {f"s{i}" for i in range(50, 200)}
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 20)
