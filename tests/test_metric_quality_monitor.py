"""MetricQualityMonitor on a real experiments file with real inotify (tmp_path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from kloros_stream.analysis.metric_rules import RESOLVE_AFTER_CLEAN
from kloros_stream.checkpoint import read_only_store
from kloros_stream.monitors.metric_quality import MetricQualityMonitor
from tests.support.fakes import ListPublisher, make_context, running_monitor
from tests.support.service import ServiceProcess, write_config
from tests.test_chaos_monitor import assert_no_duplicates

CONFIG = {"monitors": {"metric_quality": {"experiments_file": "exp.jsonl"}}}


def identical(exp_id: str) -> dict[str, Any]:
    same = {"accuracy": 0.731, "latency_ms": 88.2}
    return {"experiment_id": exp_id, "candidates": {"a": dict(same), "b": dict(same)}}


def healthy(exp_id: str) -> dict[str, Any]:
    return {
        "experiment_id": exp_id,
        "candidates": {
            "a": {"accuracy": 0.731, "latency_ms": 88.2},
            "b": {"accuracy": 0.702, "latency_ms": 91.7},
        },
    }


def kloros(qid: str) -> dict[str, Any]:
    metrics = {"pass_rate": 1.0, "avg_latency_p50_ms": 150.0, "avg_exact_match_mean": 0.95}
    return {
        "ts": "2025-10-30T10:00:00Z",
        "intent": {
            "data": {
                "question_id": qid,
                "experiment_result": {
                    "status": "complete",
                    "mode": "tournament",
                    "artifacts": {
                        "tournament": {
                            "results": {
                                "aggregated_by_instance": {"i1": metrics, "i2": dict(metrics)}
                            }
                        }
                    },
                },
            }
        },
    }


def append(path: Path, *records: Any, raw: bytes = b"") -> None:
    with path.open("ab") as fh:
        fh.write(raw + b"".join(orjson.dumps(r) + b"\n" for r in records))


def running(
    tmp_path: Path, publisher: ListPublisher | None = None
) -> contextlib.AbstractAsyncContextManager[tuple[MetricQualityMonitor, ListPublisher]]:
    return running_monitor(MetricQualityMonitor, tmp_path, CONFIG, publisher=publisher)


async def test_identical_metrics_gap_then_resolved(tmp_path: Path) -> None:
    path = tmp_path / "exp.jsonl"
    async with running(tmp_path) as (monitor, pub):
        append(path, healthy("e0"), identical("e1"))
        await pub.wait_for(lambda s: len(s) == 1)
        sig = pub.gaps()[0]
        assert (sig.gap_type, sig.gap_name) == ("suspicious_metrics", "identical_metrics")
        assert sig.ecosystem == "metacognition" and sig.monitor == "metric_quality"
        assert sig.facts["experiment_id"] == "e1"
        assert sig.facts["values"] == {"accuracy": 0.731, "latency_ms": 88.2}
        assert sig.facts["candidates"] == 2 and sig.facts["examples"] == ["e1"]
        append(path, *[healthy(f"h{i}") for i in range(RESOLVE_AFTER_CLEAN)])
        await pub.wait_for(lambda s: len(pub.resolutions()) == 1)
        assert pub.resolutions()[0].gap_name == "identical_metrics"
        assert monitor.ctx.status.details["experiments"]["evaluated"] == 2 + RESOLVE_AFTER_CLEAN


async def test_kloros_record_flags_every_matching_reason(tmp_path: Path) -> None:
    path = tmp_path / "exp.jsonl"
    async with running(tmp_path) as (_, pub):
        append(path, kloros("discover.module.audio"))
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
        append(path, {"experiment_id": "x", "status": "failed", "candidates": {}}, raw=junk)
        append(path, identical("after"))
        await pub.wait_for(lambda s: len(s) == 1)
        assert pub.gaps()[0].facts["experiment_id"] == "after"
        assert monitor.counts["ignored"] >= 2


async def test_restart_keeps_open_reasons_and_resolves_later(tmp_path: Path) -> None:
    path = tmp_path / "exp.jsonl"
    async with running(tmp_path) as (_, pub):
        append(path, identical("e1"))
        await pub.wait_for(lambda s: len(s) == 1)
    pub2 = ListPublisher()
    async with running(tmp_path, publisher=pub2) as (monitor, _):
        append(path, *[healthy(f"h{i}") for i in range(RESOLVE_AFTER_CLEAN)])
        await pub2.wait_for(lambda s: len(s) == 1)
        assert pub2.resolutions()[0].gap_name == "identical_metrics"
        assert pub2.resolutions()[0].facts["experiment_id"] == "e1"
        assert monitor.counts["evaluated"] == RESOLVE_AFTER_CLEAN  # e1 was not read again


async def test_one_shot_scan(tmp_path: Path) -> None:
    path = tmp_path / "exp.jsonl"
    append(path, identical("e1"), identical("e2"), healthy("h"))
    ctx, pub = make_context("metric_quality", tmp_path, CONFIG, one_shot=True)
    ctx.checkpoints = read_only_store()
    await asyncio.wait_for(MetricQualityMonitor(ctx).run(), 10)
    assert [s.gap_name for s in pub.signals] == ["identical_metrics"]
    assert pub.signals[0].facts["examples"] == ["e1", "e2"]
    assert pub.signals[0].facts["affected_experiments"] == 2


# -- end to end: a real `kloros-stream run` subprocess ---------------------------------------


@pytest.mark.e2e
def test_e2e_metric_quality_kill9_then_restart(tmp_path: Path) -> None:
    path = tmp_path / "var" / "exp.jsonl"
    path.parent.mkdir()
    config = write_config(
        tmp_path, {"monitors": {"metric_quality": {"experiments_file": "var/exp.jsonl"}}}
    )
    svc = ServiceProcess(config).start()
    try:
        append(path, identical("e1"))
        svc.wait_feed(lambda qs: len(qs) == 1)
        append(path, *[healthy(f"h{i}") for i in range(200)], kloros("k1"))
        svc.kill()
    finally:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.kill()
    with ServiceProcess(config) as svc2:
        qs = svc2.wait_feed(lambda qs: len(qs) == 3, timeout=30)
        assert {q["metadata"]["gap_name"] for q in qs} == {
            "identical_metrics",
            "placeholder_values",
            "perfect_pass_single_latency",
        }
        # identical_metrics was resolved by the healthy run, then flagged again by k1.
        by_name = {q["metadata"]["gap_name"]: q for q in qs}
        assert by_name["identical_metrics"]["status"] == "ready"
        append(path, *[healthy(f"z{i}") for i in range(RESOLVE_AFTER_CLEAN)])
        svc2.wait_feed(lambda qs: all(q["status"] == "resolved" for q in qs) and len(qs) == 3)
    assert_no_duplicates(svc2.feed_path)
