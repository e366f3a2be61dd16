"""The chaos monitor: follows the chaos history JSONL and reports scenarios that fail to heal.

Every entry that did not heal (``healed == false``, or KLoROS's ``outcome.healed``) makes
its scenario a ``healing_failure`` gap, published again with fresh totals on each failure;
once the scenario heals again (``recovery_rate`` over its last ``recovery_runs`` runs) the
gap is resolved. Statistics live in :class:`~kloros_stream.analysis.chaos_stats.ChaosStats`
(bounded by ``max_scenarios``).

Pacing and durability as for every tailing monitor (:mod:`.tailing`): while the tailer is
catching up on a backlog, changes are collected (one gap per scenario, with its latest
totals) and published once caught up; the statistics are saved after the bus handed the
signals on, together with the tailer's offset in one atomic write, so a restart (kill -9
included) loses nothing and counts nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from ..analysis.chaos_stats import ChaosStats, Transition, normalize_entry
from ..config import ChaosMonitorConfig
from ..sources.tailer import TailBatch
from .tailing import TailingMonitor

GAP_TYPE = "healing_failure"


class ChaosMonitor(TailingMonitor[ChaosMonitorConfig]):
    """Follows ``[monitors.chaos] history_file``."""

    name: ClassVar[str] = "chaos"
    ecosystem: ClassVar[str] = "self_healing"
    config_model = ChaosMonitorConfig
    state_checkpoint: ClassVar[str] = "stats"
    tail_checkpoint: ClassVar[str] = "history"
    level_gap_type: ClassVar[str | None] = GAP_TYPE

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        cfg = self.cfg
        self.stats = ChaosStats(
            max_scenarios=cfg.max_scenarios,
            recovery_runs=cfg.recovery_runs,
            recovery_rate=cfg.recovery_rate,
        )
        self.ignored = 0
        saved = ctx.checkpoints.load(self.state_checkpoint)
        saved = saved if isinstance(saved, dict) else {}
        restored = self.stats.load_json(saved.get("stats"))
        self.log.info(
            "chaos_state_loaded", scenarios=restored, open=len(self.stats.open_scenarios())
        )
        self._open_tail(cfg.history_file, saved.get("tail"))

    def _account(self, batch: TailBatch) -> None:
        """Fold a batch into the statistics; queue its transitions."""
        self.ctx.touch(batch.observed_at)
        for record in batch.records:
            entry = normalize_entry(record)
            if entry is None:
                self.ignored += 1
                continue
            self._dirty = True
            transition = self.stats.observe(entry)
            if transition is not None:
                self.pending.add(transition is Transition.FAILED, entry.scenario, batch.observed_at)

    def _open_names(self) -> Iterable[str]:
        return self.stats.open_scenarios()

    def _state(self) -> dict[str, Any]:
        return {"stats": self.stats.to_json(), "tail": self.tail_store.data}

    def _publish(self, opened: bool, scenario: str, observed_at: float | None) -> None:
        stats = self.stats.get(scenario)
        if stats is None:  # healthy and evicted meanwhile: its resolution still goes out
            if not opened:
                self.ctx.resolve(gap_type=GAP_TYPE, gap_name=scenario, gap_category="resilience",
                                 gap_reason="heals again", ecosystem=self.ecosystem,
                                 observed_at=observed_at)
            return
        facts = stats.facts()
        if opened:
            self.ctx.gap(
                gap_type=GAP_TYPE,
                gap_name=scenario,
                gap_category="resilience",
                gap_reason="self-healing did not recover this chaos scenario",
                ecosystem=self.ecosystem,
                observed_at=observed_at,
                **facts,
            )
        else:
            self.ctx.resolve(
                gap_type=GAP_TYPE,
                gap_name=scenario,
                gap_category="resilience",
                gap_reason=(
                    f"heals again: {stats.recent_rate:.0%} of the last {len(stats.recent)} runs"
                ),
                ecosystem=self.ecosystem,
                observed_at=observed_at,
                **facts,
            )

    def _update_details(self) -> None:
        self.ctx.status.details.update(
            scenarios=len(self.stats),
            open=len(self.stats.open_scenarios()),
            evicted=self.stats.evicted,
            ignored_records=self.ignored,
            tail=dict(self.tailer.stats),
        )
