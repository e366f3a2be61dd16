"""What a monitor has announced, and how that bookkeeping is checkpointed.

* :class:`GapLedger`: the open gaps of a monitor; publishes a gap only when it opens or its
  facts change, a resolution when it closes, and after a restart re-announces nothing that
  is unchanged and resolves what went away meanwhile (capability_discovery, exploration,
  knowledge_discovery).
* :class:`Debouncer`: coalesced checkpoint writes in a worker thread, for monitors that
  keep their own announced state (integration, module_discovery).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import orjson

from .base import MonitorContext

SAVE_DELAY_S = 0.2
"""Delay before the open-gap checkpoint is written (coalesces bursts of changes)."""

GapKey = tuple[str, str]
"""``(gap_type, gap_name)``."""


@dataclass(frozen=True, slots=True)
class Announced:
    """What the last published signal of an open gap said: its category (repeated in its
    resolution) and the digest of its category, reason and non-volatile facts."""

    category: str
    digest: str


def gap_digest(
    gap_category: str, gap_reason: str, facts: dict[str, Any], volatile: Collection[str] = ()
) -> str:
    """Stable across processes (sorted keys, no salted hash): compared after a restart."""
    kept = {k: v for k, v in facts.items() if k not in volatile}
    return hashlib.sha256(
        orjson.dumps([gap_category, gap_reason, kept], option=orjson.OPT_SORT_KEYS, default=str)
    ).hexdigest()


class GapLedger:
    """The open gaps of one monitor: publishes a gap when it opens or its facts change and
    a resolution when it closes.

    The checkpoint ``open_gaps`` keeps, per open gap, its category and digest
    (``{"open": [[gap_type, gap_name, category, digest], ...]}``). After a restart those
    gaps are ``previous``: a :meth:`set` with the same digest adopts one silently (it was
    announced and nothing changed: a restart announces nothing again), a different digest
    publishes the change, :meth:`clear` resolves it with its category, and
    :meth:`reconcile` resolves the ones the initial scan did not find again. An entry of
    the older ``[gap_type, gap_name]`` form has no digest: its next :meth:`set` publishes.
    """

    CHECKPOINT = "open_gaps"

    def __init__(self, ctx: MonitorContext, ecosystem: str) -> None:
        self.ctx = ctx
        self.ecosystem = ecosystem
        self.open: dict[GapKey, Announced] = {}
        self.published: dict[GapKey, dict[str, Any]] = {}
        """What :meth:`set` published (or would have) per open gap: re-announced from
        here when reconciliation finds its question missing."""
        self.previous: dict[GapKey, Announced] = self._load()
        self._dirty = False
        self._flushing: asyncio.Task[None] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[GapKey, Announced]:
        saved = self.ctx.checkpoints.load(self.CHECKPOINT)
        rows = saved.get("open") if isinstance(saved, dict) else None
        out: dict[GapKey, Announced] = {}
        for row in rows if isinstance(rows, list) else ():
            if isinstance(row, list) and len(row) in (2, 4):
                category, digest = (str(row[2]), str(row[3])) if len(row) == 4 else ("", "")
                out[(str(row[0]), str(row[1]))] = Announced(category, digest)
            else:
                self.ctx.log.warning("gap_checkpoint_row_invalid", row=repr(row)[:200])
        return out

    def is_open(self, gap_type: str, gap_name: str) -> bool:
        return (gap_type, gap_name) in self.open

    def names(self, gap_type: str) -> set[str]:
        return {name for t, name in self.open if t == gap_type}

    def set(
        self,
        gap_type: str,
        gap_name: str,
        *,
        gap_category: str,
        gap_reason: str,
        observed_at: float | None = None,
        volatile: Collection[str] = (),
        **facts: Any,
    ) -> bool:
        """Open (or update) a gap; publishes only if it is new or its facts changed.

        ``volatile``: names of facts that are readings of the moment (utilisation, say):
        published, but a change in them alone is no reason to publish again.
        """
        digest = gap_digest(gap_category, gap_reason, facts, volatile)
        key = (gap_type, gap_name)
        self.published[key] = {"gap_category": gap_category, "gap_reason": gap_reason, **facts}
        announced = self.open.get(key)
        if announced is None and key in self.previous:
            announced = self.open[key] = self.previous.pop(key)  # open before the restart
        if announced is not None and announced.digest == digest:
            return False
        self.open[key] = Announced(gap_category, digest)
        self._dirty = True
        self.ctx.gap(
            gap_type=gap_type,
            gap_name=gap_name,
            gap_category=gap_category,
            gap_reason=gap_reason,
            ecosystem=self.ecosystem,
            observed_at=observed_at,
            **facts,
        )
        return True

    def clear(
        self,
        gap_type: str,
        gap_name: str,
        *,
        gap_reason: str,
        observed_at: float | None = None,
        **facts: Any,
    ) -> bool:
        """Resolve a gap if it is open (or was open before the restart); the resolution
        carries the category the gap was announced with."""
        key = (gap_type, gap_name)
        self.published.pop(key, None)
        announced = self.open.pop(key, None)
        before = self.previous.pop(key, None)
        announced = announced or before
        if announced is None:
            return False
        self._dirty = True
        self.ctx.resolve(
            gap_type=gap_type,
            gap_name=gap_name,
            ecosystem=self.ecosystem,
            gap_category=announced.category,
            gap_reason=gap_reason,
            observed_at=observed_at,
            **facts,
        )
        return True

    def keep(self, gap_type: str) -> None:
        """Carry the previous run's open gaps of ``gap_type`` over unchanged (this run
        cannot judge them yet); a later :meth:`set` publishes only a change, :meth:`clear`
        resolves."""
        for key in [k for k in self.previous if k[0] == gap_type]:
            self.open.setdefault(key, self.previous.pop(key))

    def reconcile(self, gap_reason: str = "no longer present after a restart") -> None:
        """After the initial scan: resolve what was open before and was not found again."""
        for gap_type, gap_name in sorted(self.previous):
            self.clear(gap_type, gap_name, gap_reason=gap_reason)
        self.previous.clear()
        self.save()
        self.ctx.level_ready()

    def level(self) -> set[GapKey]:
        """The gaps open now (those carried over by :meth:`keep` included)."""
        return set(self.open) | set(self.previous)

    def reannounce(self, keys: Iterable[GapKey]) -> int:
        """Publish these open gaps again with the facts they were last set with (a gap
        carried over unjudged has none yet: its next :meth:`set` publishes)."""
        count = 0
        for gap_type, gap_name in keys:
            facts = self.published.get((gap_type, gap_name))
            if facts is None:
                continue
            self.ctx.gap(gap_type=gap_type, gap_name=gap_name, ecosystem=self.ecosystem,
                         **facts)
            count += 1
        return count

    def save(self) -> None:
        """Persist soon: the checkpoint (an fsynced file) is written in a thread at most
        every :data:`SAVE_DELAY_S`, off the path from an event to its signal."""
        if not self._dirty or self.ctx.one_shot or self._flushing is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flushing = loop.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(SAVE_DELAY_S)
            while self._dirty:
                # the gaps recorded as announced must have left the bus for the feed first
                await self.ctx.delivered()
                self._dirty = False
                await asyncio.to_thread(self._write, self._snapshot())
        finally:
            self._flushing = None

    def _snapshot(self) -> dict[str, Any]:
        """Open gaps, and those of the previous run not judged yet (still announced)."""
        gaps = {**self.previous, **self.open}
        return {"open": [[t, n, a.category, a.digest] for (t, n), a in sorted(gaps.items())]}

    def flush(self) -> None:
        """Persist now (at shutdown)."""
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        if self._dirty and not self.ctx.one_shot:
            self._dirty = False
            self._write(self._snapshot())

    def _write(self, data: dict[str, Any]) -> None:
        with self._lock:  # a cancelled flush's thread may still be writing
            self.ctx.checkpoints.save(self.CHECKPOINT, data)


class Debouncer:
    """Coalesced checkpoint writes: after :meth:`mark`, at most one write per ``delay``.

    ``snapshot`` runs in the loop (it must be cheap and return data nobody mutates later);
    with ``delivered`` (the monitor's :meth:`~.base.MonitorContext.delivered`), the write
    waits until every signal published before the snapshot is in the feed (the bus's
    acknowledgement), so a checkpoint never claims a gap the feed does not hold. ``write``
    runs in a worker thread, serialised, and a write never replaces a newer one.
    :meth:`flush` writes at once, synchronously (on exit).
    """

    def __init__(
        self,
        delay: float,
        snapshot: Callable[[], Any],
        write: Callable[[Any], None],
        log: Any = None,
        delivered: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.delay = delay
        self.snapshot = snapshot
        self.write = write
        self.log = log
        self.delivered = delivered
        self.dirty = False
        self._handle: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self._written = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def mark(self) -> None:
        self.dirty = True
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if not self.dirty:
            return
        self.dirty = False
        self._seq += 1
        task = asyncio.ensure_future(self._save(self._seq, self.snapshot()))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self.log is not None:
            self.log.error("checkpoint_write_failed", error=str(task.exception()))

    async def _save(self, seq: int, data: Any) -> None:
        if self.delivered is not None:
            await self.delivered()  # the snapshot's signals are in the feed first
        await anyio.to_thread.run_sync(self._write, seq, data)

    def _write(self, seq: int, data: Any) -> None:
        with self._lock:
            if seq > self._written:
                self.write(data)
                self._written = seq

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.dirty:
            self.dirty = False
            self._seq += 1
            self._write(self._seq, self.snapshot())
