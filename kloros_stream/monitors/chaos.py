"""The chaos monitor: follows the chaos history JSONL and reports scenarios that fail to heal.

Every entry that did not heal (``healed == false``, or KLoROS's ``outcome.healed``) makes
its scenario a ``healing_failure`` gap, published again with fresh totals on each failure;
once the scenario heals again (``recovery_rate`` over its last ``recovery_runs`` runs) the
gap is resolved. Statistics live in :class:`~kloros_stream.analysis.chaos_stats.ChaosStats`
(bounded by ``max_scenarios``).

Pacing and durability (shared with the metric-quality monitor): while the tailer is
catching up on a backlog, changes are collected (one gap per scenario, with its latest
totals) and published when it is caught up, idle, or every ``FLUSH_EVERY_S``; a live entry
is published at once. A flush publishes, waits until the bus handed the signals on, then
saves the statistics together with the tailer's offset in one atomic write
(:class:`EmbeddedCheckpoint`). A restart, kill -9 included, resumes from the last flush:
nothing is lost, nothing is counted twice, nothing announced before is announced again as
new (signals published after the last flush are published again: the core deduplicates).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

from ..analysis.chaos_stats import ChaosStats, Transition, normalize_entry
from ..checkpoint import CheckpointStore
from ..config import ChaosMonitorConfig
from ..sources.tailer import READ_CHUNK_BYTES, FileTailer, TailBatch
from .base import Monitor

STATE_CHECKPOINT = "stats"
TAIL_CHECKPOINT = "history"
GAP_TYPE = "healing_failure"
BACKLOG_BYTES = READ_CHUNK_BYTES
"""At least this much unread after a batch: a backlog, publish later."""
IDLE_FLUSH_S = 0.05
"""A backlog batch not followed by another within this long: publish what is pending."""
FLUSH_EVERY_S = 2.0
"""During a long backlog, publish and checkpoint at least this often."""
TAILER_SAVE_INTERVAL_S = 3600.0
"""The tailer's own periodic save, kept out of the way: flushes save its offset."""


class ChaosMonitor(Monitor):
    """Follows ``[monitors.chaos] history_file``."""

    name: ClassVar[str] = "chaos"
    ecosystem: ClassVar[str] = "self_healing"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        cfg = ctx.section
        assert isinstance(cfg, ChaosMonitorConfig)
        self.stats = ChaosStats(
            max_scenarios=cfg.max_scenarios,
            recovery_runs=cfg.recovery_runs,
            recovery_rate=cfg.recovery_rate,
        )
        self.ignored = 0
        self.pending = PendingChanges()
        saved = ctx.checkpoints.load(STATE_CHECKPOINT)
        saved = saved if isinstance(saved, dict) else {}
        restored = self.stats.load_json(saved.get("stats"))
        self.log.info(
            "chaos_state_loaded", scenarios=restored, open=len(self.stats.open_scenarios())
        )
        self.tail_store = EmbeddedCheckpoint(ctx.checkpoints, saved.get("tail"))
        self.tailer = FileTailer(
            cfg.history_file,
            self.tail_store,
            name=TAIL_CHECKPOINT,
            max_line_bytes=ctx.config.service.max_line_bytes,
            parse_json=True,
            checkpoint_interval_s=TAILER_SAVE_INTERVAL_S,
        )
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
        """The scan command: read the whole history, then the gaps open now, once each."""
        async with contextlib.aclosing(self.tailer.batches(follow=False)) as batches:
            async for batch in batches:
                self._account(batch)
        self.pending.drain()
        for scenario in self.stats.open_scenarios():
            self._publish(True, scenario, None)
        self._update_details()

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

    def _publish_pending(self) -> None:
        for opened, scenario, observed_at in self.pending.drain():
            self._publish(opened, scenario, observed_at)
        self._update_details()

    def _save(self) -> None:
        """Statistics and the tailer's offset, in one atomic write."""
        self.tailer.save_checkpoint()
        if self._dirty or self.tail_store.changed:
            state = {"stats": self.stats.to_json(), "tail": self.tail_store.data}
            self.ctx.checkpoints.save(STATE_CHECKPOINT, state)
            self._dirty = self.tail_store.changed = False

    def _publish(self, opened: bool, scenario: str, observed_at: float | None) -> None:
        stats = self.stats.get(scenario)
        if stats is None:  # evicted meanwhile
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


# -- shared by the tailing monitors (chaos, metric_quality) ---------------------------------


class EmbeddedCheckpoint(CheckpointStore):
    """A tailer's checkpoint kept inside its monitor's state file.

    The tailer loads and saves through this object; the monitor writes ``data`` together
    with its own state in one atomic write, so the offset and the state derived from the
    lines before it never disagree, whenever the process dies.
    """

    def __init__(self, outer: CheckpointStore, saved: Any) -> None:
        super().__init__(outer.directory, writable=outer.writable)
        self.data: dict[str, Any] | None = saved if isinstance(saved, dict) else None
        self.changed = False

    def load(self, name: str) -> Any | None:
        return self.data if self.writable else None

    def save(self, name: str, data: Any) -> None:
        self.data = data
        self.changed = True


class PendingChanges:
    """Gaps and resolutions waiting to be published: at most two signals per name.

    Per name, in order of first change: its latest gap if it had one in this window (the
    facts are read at flush time), then a resolution if its last change resolved it. So a
    scenario flapping through a backlog costs two signals, not one per flip.
    """

    def __init__(self) -> None:
        self._names: dict[str, list[float | None]] = {}
        """name -> [observed_at of its latest gap or None, of its resolution or None]."""

    def __len__(self) -> int:
        return len(self._names)

    def add(self, opened: bool, name: str, observed_at: float) -> None:
        slot = self._names.setdefault(name, [None, None])
        if opened:
            slot[0], slot[1] = observed_at, None
        else:
            slot[1] = observed_at

    def drain(self) -> list[tuple[bool, str, float]]:
        out: list[tuple[bool, str, float]] = []
        for name, (gap_at, resolved_at) in self._names.items():
            if gap_at is not None:
                out.append((True, name, gap_at))
            if resolved_at is not None:
                out.append((False, name, resolved_at))
        self._names.clear()
        return out


async def follow_and_flush(
    tailer: FileTailer,
    publisher: Any,
    account: Callable[[TailBatch], None],
    publish: Callable[[], None],
    save: Callable[[], None],
) -> None:
    """Follow ``tailer``: ``account`` each batch; publish and save when due.

    Due: after a batch with little left to read (live data: at once), when no batch
    followed a backlog batch within ``IDLE_FLUSH_S``, and every ``FLUSH_EVERY_S``. A flush
    publishes, waits until the bus handed the signals on, then saves: ``save`` writes the
    monitor's state with the tailer's offset (one atomic write, :class:`EmbeddedCheckpoint`).
    The offset is the last accounted batch's as long as the tailer is parked (after a
    batch, or idle with no batch delivered); a flush that finds a batch delivered while it
    waited publishes without saving (the next flush saves).
    """
    last_flush = time.monotonic()
    behind = False

    async def flush(step: asyncio.Future[TailBatch] | None) -> None:
        """``step``: the tailer's next batch being awaited (None: parked after a batch)."""
        nonlocal last_flush
        publish()
        await wait_delivered(publisher)
        if step is None or not step.done():
            save()
        last_flush = time.monotonic()

    async with contextlib.aclosing(tailer.batches()) as batches:
        while True:
            step = asyncio.ensure_future(anext(batches))
            batch: TailBatch | None = None
            try:
                if behind:
                    done, _ = await asyncio.wait({step}, timeout=IDLE_FLUSH_S)
                    if not done:
                        await flush(step)
                batch = await step
            except StopAsyncIteration:
                return
            finally:
                if not step.done():
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await step
                elif batch is None and not step.cancelled() and step.exception() is None:
                    account(step.result())  # delivered as we were stopped: keep it
            account(batch)
            behind = _unread(tailer, batch.offset) >= BACKLOG_BYTES
            if not behind or time.monotonic() - last_flush >= FLUSH_EVERY_S:
                await flush(None)


def _unread(tailer: FileTailer, offset: int) -> int:
    try:
        return os.stat(tailer.path).st_size - offset
    except OSError:
        return 0


async def wait_delivered(publisher: Any, timeout_s: float = 2.0) -> None:
    """Wait (bounded) until the bus has handed the published signals to its consumer.

    Monitors save checkpoints after this, so a kill -9 right after a checkpoint cannot lose
    a signal still sitting in the bus. A publisher without ``depth`` (a test sink) passes.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    await asyncio.sleep(0)
    while getattr(publisher, "depth", 0) > 0 and loop.time() < deadline:
        await asyncio.sleep(0.001)
