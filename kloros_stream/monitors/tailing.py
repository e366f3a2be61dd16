"""Helpers for monitors that follow a tailed file (chaos, metric_quality) or must not save a
checkpoint before their signals left the bus (test).

Pacing and durability: while the tailer is catching up on a backlog, changes are collected
(:class:`PendingChanges`: one gap per name, with its latest facts) and published when it is
caught up, idle, every ``FLUSH_EVERY_S``, or once ``PENDING_MAX`` names wait; a live entry
is published at once. A flush publishes in parts of at most a quarter of the bus, each
after the bus has room (``ctx.room()``): while the consumer catches up the tailer reads
nothing, so a flood waits on disk instead of being dropped. Then it waits until the
consumer wrote the signals to the feed (``ctx.delivered()``, the bus's acknowledgement),
then saves
the monitor's state together with the tailer's offset in one atomic write
(:class:`EmbeddedCheckpoint`). A restart, kill -9 included, resumes from the last flush:
nothing is lost, nothing is counted twice, nothing announced before is announced again as
new (signals published after the last flush are published again: the core deduplicates).
:func:`follow_and_flush` is that loop; :class:`TailingMonitor` is a monitor built on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from ..checkpoint import CheckpointStore
from ..sources.tailer import READ_CHUNK_BYTES, FileTailer, TailBatch
from .base import C, Monitor, MonitorContext

BACKLOG_BYTES = READ_CHUNK_BYTES
"""At least this much unread after a batch: a backlog, publish later."""
IDLE_FLUSH_S = 0.05
"""A backlog batch not followed by another within this long: publish what is pending."""
FLUSH_EVERY_S = 2.0
"""During a long backlog, publish and checkpoint at least this often."""
PENDING_MAX = 4096
"""At most this many names wait for a flush (a burst of distinct gaps is published in
parts, memory stays bounded)."""
TAILER_SAVE_INTERVAL_S = 3600.0
"""The tailer's own periodic save, kept out of the way: flushes save its offset."""


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
    ctx: MonitorContext,
    account: Callable[[TailBatch], None],
    publish: Callable[[], Awaitable[None]],
    save: Callable[[], None],
    pending: Callable[[], int] = lambda: 0,
    caught_up: Callable[[], None] = lambda: None,
) -> None:
    """Follow ``tailer``: ``account`` each batch; publish and save when due.

    Due: after a batch with little left to read (live data: at once), when no batch
    followed a backlog batch within ``IDLE_FLUSH_S``, every ``FLUSH_EVERY_S``, and when
    ``pending()`` reaches ``PENDING_MAX``. ``caught_up`` is called after each flush that
    left nothing unread. A flush publishes (paced by the bus's room),
    waits until the consumer wrote the signals to the feed, then saves: ``save`` writes the
    monitor's state with the tailer's offset (one atomic write, :class:`EmbeddedCheckpoint`).
    The offset is the last accounted batch's as long as the tailer is parked (after a
    batch, or idle with no batch delivered); a flush that finds a batch delivered while it
    waited publishes without saving (the next flush saves).
    """
    last_flush = time.monotonic()
    behind = False
    idle_seen = False

    async def flush(step: asyncio.Future[TailBatch] | None) -> None:
        """``step``: the tailer's next batch being awaited (None: parked after a batch)."""
        nonlocal last_flush
        await publish()
        await ctx.delivered()
        if step is None or not step.done():
            save()
        last_flush = time.monotonic()

    async with contextlib.aclosing(tailer.batches()) as batches:
        while True:
            step = asyncio.ensure_future(anext(batches))
            batch: TailBatch | None = None
            try:
                if behind or not idle_seen:
                    done, _ = await asyncio.wait({step}, timeout=IDLE_FLUSH_S)
                    if not done and behind:
                        await flush(step)
                    elif not done:  # nothing to read at the start: caught up
                        idle_seen = True
                        caught_up()
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
            if (not behind or pending() >= PENDING_MAX
                    or time.monotonic() - last_flush >= FLUSH_EVERY_S):
                await flush(None)
                if not behind:
                    caught_up()


def _unread(tailer: FileTailer, offset: int) -> int:
    try:
        return os.stat(tailer.path).st_size - offset
    except OSError:
        return 0


async def publish_paced(ctx: MonitorContext, items: list[Any],
                        publish_one: Callable[[Any], None]) -> None:
    """Publish ``items`` in parts of at most a quarter of the bus, each once the bus is at
    most half full: a burst is never dropped for want of room (backpressure)."""
    part = max(1, getattr(ctx.publisher, "maxsize", len(items) or 1) // 4)
    for start in range(0, len(items), part):
        await ctx.room()
        for item in items[start:start + part]:
            publish_one(item)


class TailingMonitor(Monitor[C]):
    """A monitor that folds the JSON records of one followed file into state of its own.

    Subclasses name their checkpoints (``state_checkpoint`` holds the state and, under
    ``tail``, the tailer's offset; ``tail_checkpoint`` is the tailer's name), call
    :meth:`_open_tail` in ``__init__`` once their state is loaded, and implement
    :meth:`_account` (fold a batch in; mark ``_dirty``, queue changes in ``pending``),
    :meth:`_publish`, :meth:`_open_names`, :meth:`_state` and :meth:`_update_details`.
    ``run`` follows the file (:func:`follow_and_flush`); a one-shot scan reads it whole and
    publishes what is open then, once each.
    """

    state_checkpoint: ClassVar[str]
    tail_checkpoint: ClassVar[str]
    level_gap_type: ClassVar[str | None] = None
    """The gap type of :meth:`_open_names` (its level, reconciled with the feed)."""
    tail_store: EmbeddedCheckpoint
    tailer: FileTailer

    def __init__(self, ctx: MonitorContext) -> None:
        super().__init__(ctx)
        self.pending = PendingChanges()
        self._dirty = False
        self._level_known = False

    def _open_tail(self, path: Path, saved_tail: Any) -> None:
        """Set up the tailer of ``path``, resuming from ``saved_tail`` (the state's ``tail``)."""
        self.tail_store = EmbeddedCheckpoint(self.ctx.checkpoints, saved_tail)
        self.tailer = FileTailer(
            path,
            self.tail_store,
            name=self.tail_checkpoint,
            max_line_bytes=self.ctx.config.service.max_line_bytes,
            parse_json=True,
            checkpoint_interval_s=TAILER_SAVE_INTERVAL_S,
        )

    async def run(self) -> None:
        if self.ctx.one_shot:
            await self._scan()
            return
        if not os.path.exists(self.tailer.path):
            self._level_ready()  # nothing to catch up on: the checkpointed state is the level
        try:
            await follow_and_flush(self.tailer, self.ctx, self._account, self._flush_pending,
                                   self._save, lambda: len(self.pending), self._level_ready)
        finally:
            self._publish_pending()  # a stop: publish and save what is pending
            self._save()

    async def _scan(self) -> None:
        """The scan command: read the whole file, then what is open now, once each."""
        async with contextlib.aclosing(self.tailer.batches(follow=False)) as batches:
            async for batch in batches:
                self._account(batch)
        self.pending.drain()
        for name in self._open_names():
            self._publish(True, name, None)
        self._update_details()

    def _publish_pending(self) -> None:
        for opened, name, observed_at in self.pending.drain():
            self._publish(opened, name, observed_at)
        self._update_details()

    def _level_ready(self) -> None:
        if not self._level_known:
            self._level_known = True
            self.ctx.level_ready()

    def level(self) -> set[tuple[str, str]] | None:
        if self.level_gap_type is None or not self._level_known:
            return None
        return {(self.level_gap_type, name) for name in self._open_names()}

    def reannounce(self, keys: Iterable[tuple[str, str]]) -> int:
        names = [name for _, name in keys]
        for name in names:
            self._publish(True, name, None)
        return len(names)

    async def _flush_pending(self) -> None:
        await publish_paced(self.ctx, self.pending.drain(), lambda c: self._publish(*c))
        self._update_details()

    def _save(self) -> None:
        """The state and the tailer's offset, in one atomic write."""
        self.tailer.save_checkpoint()
        if self._dirty or self.tail_store.changed:
            self.ctx.checkpoints.save(self.state_checkpoint, self._state())
            self._dirty = self.tail_store.changed = False

    @abstractmethod
    def _account(self, batch: TailBatch) -> None:
        """Fold a batch into the state; queue its changes in ``pending``."""

    @abstractmethod
    def _publish(self, opened: bool, name: str, observed_at: float | None) -> None:
        """Publish the gap ``name`` (``opened``) or its resolution, with current facts."""

    @abstractmethod
    def _open_names(self) -> Iterable[str]:
        """The gaps open now (published by a one-shot scan)."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """The state to checkpoint, including ``tail``: ``self.tail_store.data``."""

    @abstractmethod
    def _update_details(self) -> None:
        """Refresh this monitor's ``/health`` details."""
