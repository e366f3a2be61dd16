"""File sinks: the snapshot, the KLoROS feed file and the signal history.

- ``snapshot`` (``[feed] snapshot_path``): ``{"questions": [open...], "generated_at",
  "count"}`` with our full question lines (``priority``, ``updated_at`` included).
- ``kloros_feed`` (``[feed] kloros_path``): the same document with exactly KLoROS's
  ``CuriosityQuestion`` fields and statuses (:mod:`.kloros`), for KLoROS's own readers
  (``CuriosityQuestion(**q)``, ``process_curiosity_feed()``). KLoROS's own writer of that
  file (``CuriosityCore.write_feed_json``) must be off: see the README.
- ``history`` (``[history] path``): every signal taken off the bus as one JSON line
  (:class:`.history.SignalHistory`, rotation and consolidation in a worker thread).

Both question files are written atomically (temp file, fsync, rename) at start and then
from housekeeping, only after something was written to the feed since the last rewrite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_bytes
from ..core.identity import iso
from ..models import Signal
from .base import QuestionView, Sink, log
from .history import SignalHistory
from .kloros import feed_document, kloros_item

HISTORY_CLOSE_TIMEOUT_S = 2.0


def _ours(raw: bytes) -> bytes | None:
    return raw


class QuestionFileSink(Sink):
    """An atomically replaced JSON document of the open questions."""

    def __init__(self, name: str, path: Path,
                 project: Callable[[bytes], bytes | None]) -> None:
        super().__init__()
        self.name = name
        self.path = path
        self.project = project
        self.dirty = False
        """Set by each feed write; the file is rewritten from housekeeping."""

    def on_feed_written(self) -> None:
        self.dirty = True

    def refresh(self, view: QuestionView, now: float) -> None:
        if self.dirty:
            self.write(view(), now)

    async def start(self, view: QuestionView) -> None:
        """Written at once, so readers find the recovered questions after a restart."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write(view(), time.time())

    async def stop(self) -> None:
        """The service calls :meth:`refresh` once more before stopping its sinks."""

    def write(self, open_questions: list[bytes], now: float) -> None:
        items: list[bytes] = []
        for raw in open_questions:
            item = self.project(raw)
            if item is None:
                self.count("questions_skipped")
            else:
                items.append(item)
        atomic_write_bytes(self.path, feed_document(items, iso(now)))
        self.dirty = False
        self.count("writes")
        self.count("questions_written", len(items))

    def details(self) -> dict[str, Any]:
        return {"path": str(self.path)}


def snapshot_sink(path: Path) -> QuestionFileSink:
    return QuestionFileSink("snapshot", path, _ours)


def kloros_feed_sink(path: Path) -> QuestionFileSink:
    return QuestionFileSink("kloros_feed", path, kloros_item)


class HistorySink(Sink):
    """Every signal the consumer took off the bus, appended to the history log."""

    name = "history"

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__()
        self.path = path
        self.log = SignalHistory(path, max_bytes)

    def on_signals(self, batch: Sequence[Signal]) -> None:
        for sig in batch:
            try:
                line = sig.model_dump_json().encode()
            except ValueError:  # one unserialisable signal never costs its batch
                self.count("signals_rejected")
                log.exception("history_signal_rejected", monitor=sig.monitor)
                continue
            self.log.append(line)
            self.count("signals")
        self.log.flush()

    async def stop(self) -> None:
        await asyncio.to_thread(self.log.close, HISTORY_CLOSE_TIMEOUT_S)

    def details(self) -> dict[str, Any]:
        return {"path": str(self.path), **self.log.stats}

