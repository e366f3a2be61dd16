"""MetricQualityMonitor on a real experiments file with real inotify (tmp_path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from kloros_stream.analysis.metric_rules import RESOLVE_AFTER_CLEAN
from kloros_stream.checkpoint import read_only_store
from kloros_stream.monitors.metric_quality import MetricQualityMonitor
from tests.support.fakes import ListPublisher, make_context, running_monitor
from tests.support.inputs import (
    append_jsonl,
    healthy_experiment,
    identical_experiment,
    kloros_experiment,
)

CONFIG = {"monitors": {"metric_quality": {"experiments_file": "exp.jsonl"}}}


def running(
    tmp_path: Path, publisher: ListPublisher | None = None
) -> contextlib.AbstractAsyncContextManager[tuple[MetricQualityMonitor, ListPublisher]]:
    return running_monitor(MetricQualityMonitor, tmp_path, CONFIG, publisher=publisher)


async def test_identical_metrics_gap_then_resolved(tmp_path: Path) -> None:
    path = tmp_path / "exp.jsonl"
    async with running(tmp_path) as (monitor, pub):
        append_jsonl(path, healthy_experiment("e0"), identical_experiment("e1"))
        await pub.wait_for(lambda s: len(s) == 1)
        sig = pub.gaps()[0]
        assert (sig.gap_type, sig.gap_name) == ("suspicious_metrics", "identical_metrics")
        assert sig.ecosystem == "metacognition" and sig.monitor == "metric_quality"
        assert sig.facts["experiment_id"] == "e1"
        assert sig.facts["values"] == {"accuracy": 0.731, "latency_ms": 88.2}
        assert sig.facts["candidates"] == 2 and sig.facts["examples"] == ["e1"]
        append_jsonl(path, *[healthy_experiment(f"h{i}") for i in range(RESOLVE_AFTER_CLEAN)])
        await pub.wait_for(lambda s: len(pub.resolutions()) == 1)
        assert pub.resolutions()[0].gap_name == "identical_metrics"
        assert monitor.ctx.status.details["experiments"]["evaluated"] == 2 + RESOLVE_AFTER_CLEAN


async def test_kloros_record_flags_every_matching_reason(tmp_path: Path) -> None:
    path = tmp_path / "exp.jsonl"
    async with running(tmp_path) as (_, pub):
        append_jsonl(path, kloros_experiment("discover.module.audio"))
        await pub.wait_for(lambda s: len(s) == 3)
        assert sorted(s.gap_name for s in pub.gaps()) == [
            "identical_metrics",
            "perfect_pass_single_latency",
            "placeholder_values",
        ]
        assert {s.facts["experiment_id"] for s in pub.gaps()} == {"discover.module.audio"}


async def test_garbage_and_unevaluable_records_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "exp.jsonl"
    junk = os.urandom(1024).replace(b"\n", b"") + b'\nnot json\n{"status": "running"}\n'
    async with running(tmp_path) as (monitor, pub):
        append_jsonl(path, {"experiment_id": "x", "status": "failed", "candidates": {}}, raw=junk)
        append_jsonl(path, identical_experiment("after"))
        await pub.wait_for(lambda s: len(s) == 1)
        assert pub.gaps()[0].facts["experiment_id"] == "after"
        assert monitor.counts["ignored"] >= 2


async def test_restart_keeps_open_reasons_and_resolves_later(tmp_path: Path) -> None:
    path = tmp_path / "exp.jsonl"
    async with running(tmp_path) as (_, pub):
        append_jsonl(path, identical_experiment("e1"))
        await pub.wait_for(lambda s: len(s) == 1)
    pub2 = ListPublisher()
    async with running(tmp_path, publisher=pub2) as (monitor, _):
        append_jsonl(path, *[healthy_experiment(f"h{i}") for i in range(RESOLVE_AFTER_CLEAN)])
        await pub2.wait_for(lambda s: len(s) == 1)
        assert pub2.resolutions()[0].gap_name == "identical_metrics"
        assert pub2.resolutions()[0].facts["experiment_id"] == "e1"
        assert monitor.counts["evaluated"] == RESOLVE_AFTER_CLEAN  # e1 was not read again


async def test_one_shot_scan(tmp_path: Path) -> None:
    path = tmp_path / "exp.jsonl"
    append_jsonl(
        path, identical_experiment("e1"), identical_experiment("e2"), healthy_experiment("h")
    )
    ctx, pub = make_context("metric_quality", tmp_path, CONFIG, one_shot=True)
    ctx.checkpoints = read_only_store()
    await asyncio.wait_for(MetricQualityMonitor(ctx).run(), 10)
    assert [s.gap_name for s in pub.signals] == ["identical_metrics"]
    assert pub.signals[0].facts["examples"] == ["e1", "e2"]
    assert pub.signals[0].facts["affected_experiments"] == 2
