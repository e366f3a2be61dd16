"""Experiment records in other shapes reach the rules through a real service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.service import ServiceProcess, questions_of, write_config

RECORDS = [
    {
        "experiment": "exp-a",
        "results": {"c1": {"acc": 0.7, "loss": 0.3}, "c2": {"acc": 0.7, "loss": 0.3}},
    },
    {
        "run": {
            "name": "exp-b",
            "instances": {"c1": {"acc": 0.5, "f1": 0.1}, "c2": {"acc": 0.6, "f1": 0.2}},
        }
    },
]


@pytest.mark.e2e
def test_e2e_nested_and_renamed_experiment_records(tmp_path: Path) -> None:
    experiments = tmp_path / "var" / "experiments.jsonl"
    experiments.parent.mkdir(parents=True)
    experiments.write_text("")
    config = write_config(
        tmp_path, {"monitors": {"metric_quality": {"experiments_file": str(experiments)}}}
    )
    with ServiceProcess(config) as svc:
        with experiments.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in RECORDS))
        qs = svc.wait_feed(lambda qs: len(questions_of(qs, "suspicious_metrics")) >= 1)
        identical = {q["metadata"]["gap_name"]: q for q in questions_of(qs, "suspicious_metrics")}
        assert "identical_metrics" in identical
        facts = identical["identical_metrics"]["metadata"]["facts"]
        assert "exp-a" in json.dumps(facts)
        counts = svc.health()["monitors"]["metric_quality"]["details"]["experiments"]
        assert counts["evaluated"] == 2 and counts["ignored"] == 0
