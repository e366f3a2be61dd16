"""The metric quality monitor through a real ``kloros-stream run``: kill -9 with records
unread, then a restart reads them once and resolves later."""

from __future__ import annotations

from pathlib import Path

import pytest

from kloros_stream.analysis.metric_rules import RESOLVE_AFTER_CLEAN
from tests.support.inputs import (
    append_jsonl,
    healthy_experiment,
    identical_experiment,
    kloros_experiment,
)
from tests.support.service import ServiceProcess, assert_no_duplicates, write_config


@pytest.mark.e2e
def test_e2e_metric_quality_kill9_then_restart(tmp_path: Path) -> None:
    path = tmp_path / "var" / "exp.jsonl"
    path.parent.mkdir()
    config = write_config(
        tmp_path, {"monitors": {"metric_quality": {"experiments_file": "var/exp.jsonl"}}}
    )
    svc = ServiceProcess(config).start()
    try:
        append_jsonl(path, identical_experiment("e1"))
        svc.wait_feed(lambda qs: len(qs) == 1)
        append_jsonl(
            path, *[healthy_experiment(f"h{i}") for i in range(200)], kloros_experiment("k1")
        )
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
        append_jsonl(path, *[healthy_experiment(f"z{i}") for i in range(RESOLVE_AFTER_CLEAN)])
        svc2.wait_feed(lambda qs: all(q["status"] == "resolved" for q in qs) and len(qs) == 3)
    assert_no_duplicates(svc2.feed_path)
