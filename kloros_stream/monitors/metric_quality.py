"""The metric-quality monitor: follows the experiments JSONL and flags suspicious metrics.

Each experiment record (shapes and rules in :mod:`kloros_stream.analysis.metric_rules`) is
evaluated; every rule it matches is a ``suspicious_metrics`` gap named by the rule's
reason (``identical_metrics``, ``placeholder_values``, ``perfect_pass_single_latency``),
with the experiment id and the values seen. A reason that stays clean for
``RESOLVE_AFTER_CLEAN`` evaluated experiments is resolved.

Pacing and durability as for every tailing monitor (:mod:`.tailing`): changes found in a
backlog are published once caught up; the per-reason state is saved after the bus handed
the signals on, together with the tailer's offset in one atomic write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, ClassVar

from ..analysis.metric_rules import Change, Finding, SuspicionTracker, evaluate, parse_experiment
from ..config import MetricQualityConfig
from ..sources.tailer import TailBatch
from .tailing import TailingMonitor

GAP_TYPE = "suspicious_metrics"


class MetricQualityMonitor(TailingMonitor[MetricQualityConfig]):
    """Follows ``[monitors.metric_quality] experiments_file``."""

    name: ClassVar[str] = "metric_quality"
    ecosystem: ClassVar[str] = "metacognition"
    config_model = MetricQualityConfig
    state_checkpoint: ClassVar[str] = "reasons"
    level_gap_type: ClassVar[str | None] = GAP_TYPE
    tail_checkpoint: ClassVar[str] = "experiments"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        cfg = self.cfg
        self.tracker = SuspicionTracker()
        self.latest: dict[str, tuple[str, Finding, int]] = {}
        """Per reason: the last matching experiment id, finding and candidate count."""
        self.counts = {"evaluated": 0, "flagged": 0, "ignored": 0}
        saved = self._load_state()
        self._open_tail(cfg.experiments_file, saved.get("tail"))

    def _account(self, batch: TailBatch) -> None:
        """Evaluate a batch's experiments; queue the changes they cause."""
        self.ctx.touch(batch.observed_at)
        for record in batch.records:
            experiment = parse_experiment(record)
            if experiment is None:
                self.counts["ignored"] += 1
                continue
            self._dirty = True
            findings = evaluate(experiment)
            self.counts["evaluated"] += 1
            self.counts["flagged"] += bool(findings)
            for finding in findings:
                self.latest[finding.reason] = (
                    experiment.experiment_id,
                    finding,
                    len(experiment.candidates),
                )
            for change, reason in self.tracker.observe(experiment.experiment_id, findings):
                self.pending.add(change is Change.FLAGGED, reason, batch.observed_at)

    def _open_names(self) -> Iterable[str]:
        return self.tracker.open_reasons()

    def _publish(self, flagged: bool, reason: str, observed_at: float | None) -> None:
        state = self.tracker.reasons.get(reason)
        facts: dict[str, Any] = {
            "affected_experiments": state.count if state else 0,
            "examples": list(state.examples) if state else [],
        }
        latest = self.latest.get(reason)
        if latest is not None:
            exp_id, finding, candidates = latest
            facts |= {
                "experiment_id": exp_id,
                "values": finding.values,
                "detail": finding.detail,
                "candidates": candidates,
            }
        elif state and state.examples:
            facts["experiment_id"] = state.examples[-1]
        if flagged:
            self.ctx.gap(
                gap_type=GAP_TYPE,
                gap_name=reason,
                gap_category="metric_quality",
                # stable per rule: the per-experiment detail is in the facts, so another
                # flagged experiment updates counters instead of rewriting the question
                gap_reason=f"experiment metrics match the {reason} rule",
                ecosystem=self.ecosystem,
                observed_at=observed_at,
                **facts,
            )
        else:
            self.ctx.resolve(
                gap_type=GAP_TYPE,
                gap_name=reason,
                gap_category="metric_quality",
                gap_reason=f"the last {self.tracker.resolve_after} experiments look genuine",
                ecosystem=self.ecosystem,
                observed_at=observed_at,
                **facts,
            )

    def _load_state(self) -> dict[str, Any]:
        """Restore the per-reason state; the saved data (its ``tail`` is the tailer's)."""
        data = self.ctx.checkpoints.load(self.state_checkpoint)
        data = data if isinstance(data, dict) else {}
        self.tracker.load_json(data.get("reasons"))
        latest = data.get("latest")
        for reason, raw in (latest if isinstance(latest, dict) else {}).items():
            with contextlib.suppress(TypeError, ValueError, KeyError):
                finding = Finding(str(reason), str(raw["detail"]), raw["values"])
                self.latest[str(reason)] = (
                    str(raw["experiment_id"]),
                    finding,
                    int(raw["candidates"]),
                )
        self.log.info("metric_quality_state_loaded", open=self.tracker.open_reasons())
        return data

    def _state(self) -> dict[str, Any]:
        return {
            "tail": self.tail_store.data,
            "reasons": self.tracker.to_json(),
            "latest": {
                reason: {
                    "experiment_id": e,
                    "detail": f.detail,
                    "values": f.values,
                    "candidates": c,
                }
                for reason, (e, f, c) in self.latest.items()
            },
        }

    def _update_details(self) -> None:
        self.ctx.status.details.update(
            experiments=dict(self.counts),
            open_reasons=self.tracker.open_reasons(),
            tail=dict(self.tailer.stats),
        )
