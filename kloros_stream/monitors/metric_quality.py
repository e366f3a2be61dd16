"""The metric-quality monitor: follows the experiments JSONL and flags suspicious metrics.

Each experiment record (shapes and rules in :mod:`kloros_stream.analysis.metric_rules`) is
evaluated; every rule it matches is a ``suspicious_metrics`` gap named by the rule's
reason (``identical_metrics``, ``placeholder_values``, ``perfect_pass_single_latency``),
with the experiment id and the values seen. A reason that stays clean for
``RESOLVE_AFTER_CLEAN`` evaluated experiments is resolved.

Pacing and durability as in the chaos monitor (:func:`~.chaos.follow_and_flush`): changes
found in a backlog are published once caught up; the per-reason state is saved after the
bus handed the signals on, together with the tailer's offset in one atomic write.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from ..analysis.metric_rules import Change, Finding, SuspicionTracker, evaluate, parse_experiment
from ..config import MetricQualityConfig
from ..sources.tailer import FileTailer, TailBatch
from .base import Monitor
from .chaos import (
    TAILER_SAVE_INTERVAL_S,
    EmbeddedCheckpoint,
    PendingChanges,
    follow_and_flush,
)

STATE_CHECKPOINT = "reasons"
TAIL_CHECKPOINT = "experiments"
GAP_TYPE = "suspicious_metrics"


class MetricQualityMonitor(Monitor):
    """Follows ``[monitors.metric_quality] experiments_file``."""

    name: ClassVar[str] = "metric_quality"
    ecosystem: ClassVar[str] = "metacognition"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        cfg = ctx.section
        assert isinstance(cfg, MetricQualityConfig)
        self.tracker = SuspicionTracker()
        self.latest: dict[str, tuple[str, Finding, int]] = {}
        """Per reason: the last matching experiment id, finding and candidate count."""
        self.counts = {"evaluated": 0, "flagged": 0, "ignored": 0}
        saved = self._load_state()
        self.tail_store = EmbeddedCheckpoint(ctx.checkpoints, saved.get("tail"))
        self.tailer = FileTailer(
            cfg.experiments_file,
            self.tail_store,
            name=TAIL_CHECKPOINT,
            max_line_bytes=ctx.config.service.max_line_bytes,
            parse_json=True,
            checkpoint_interval_s=TAILER_SAVE_INTERVAL_S,
        )
        self.pending = PendingChanges()
        self._dirty = False

    async def run(self) -> None:
        if self.ctx.one_shot:
            await self._scan()
            return
        try:
            await follow_and_flush(
                self.tailer, self.ctx.publisher, self._account, self._publish_pending, self._save
            )
        finally:
            self._publish_pending()  # a stop: publish and save what is pending
            self._save()

    async def _scan(self) -> None:
        """The scan command: read the whole file, then the reasons open now, once each."""
        async with contextlib.aclosing(self.tailer.batches(follow=False)) as batches:
            async for batch in batches:
                self._account(batch)
        self.pending.drain()
        for reason in self.tracker.open_reasons():
            self._publish(Change.FLAGGED, reason, None)
        self._update_details()

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

    def _publish_pending(self) -> None:
        for flagged, reason, observed_at in self.pending.drain():
            self._publish(Change.FLAGGED if flagged else Change.CLEARED, reason, observed_at)
        self._update_details()

    def _publish(self, change: Change, reason: str, observed_at: float | None) -> None:
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
        if change is Change.FLAGGED:
            self.ctx.gap(
                gap_type=GAP_TYPE,
                gap_name=reason,
                gap_category="metric_quality",
                gap_reason=facts.get("detail") or f"experiment metrics match rule {reason}",
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
        data = self.ctx.checkpoints.load(STATE_CHECKPOINT)
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

    def _save(self) -> None:
        """Reason state and the tailer's offset, in one atomic write."""
        self.tailer.save_checkpoint()
        if self._dirty or self.tail_store.changed:
            self.ctx.checkpoints.save(STATE_CHECKPOINT, self._state())
            self._dirty = self.tail_store.changed = False

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
