"""A read-only view of the feed for the ``questions`` command: through the index when one
matches the feed (plus the lines written after its position), else the whole feed.

It never writes: not the feed, not the index (opened ``mode=ro``), so it is safe beside a
running service.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import orjson
import structlog

from ..core.curiosity import CuriosityCore
from ..core.store import QuestionEntry, Selection, entry_of
from ..feed import TAIL_BYTES, read_feed
from .files import open_matching
from .index import QuestionIndex

log = structlog.get_logger("kloros_stream.store")


class FeedView:
    """Ranked questions of a feed, read-only."""

    def __init__(self, feed: Path) -> None:
        self.feed = feed
        self.index: QuestionIndex | None = None
        self._fd = -1
        self._recent: dict[str, tuple[QuestionEntry, bytes]] = {}
        self._core: CuriosityCore | None = None
        try:
            self.index, _, _ = open_matching(feed, TAIL_BYTES, readonly=True)
        except sqlite3.Error as err:
            log.warning("feed_index_unusable", path=str(feed), error=str(err))
        if self.index is None:
            self._read_whole_feed()
            return
        self._fd = os.open(feed, os.O_RDONLY)
        self._read_recent(int(self.index.meta["feed_end"]))

    def _read_whole_feed(self) -> None:
        self._core = CuriosityCore()
        self._core.load(read_feed(self.feed).questions.values(), 0.0)

    def _read_recent(self, start: int) -> None:
        """Lines appended after the index's position (a service mid-batch, a crash)."""
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size - start, start)
        offset = start
        for raw in data.splitlines(keepends=True):
            if not raw.endswith(b"\n"):
                break
            try:
                entry = entry_of(orjson.loads(raw), offset, len(raw))
            except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
                entry = None
            if entry is not None:
                self._recent[entry.id] = (entry, raw[:-1])
            offset += len(raw)

    def select(self, sel: Selection) -> list[QuestionEntry]:
        if self._core is not None:
            return self._core.select(sel)
        assert self.index is not None
        limit = None if sel.limit is None else sel.limit + len(self._recent)
        try:
            rows = self.index.select(replace(sel, limit=limit))
        except sqlite3.Error as err:  # an index from another version, say
            log.warning("feed_index_unusable", path=str(self.feed), error=str(err))
            self._read_whole_feed()
            return self.select(sel)
        found = [e for e in rows if e.id not in self._recent]
        found += [e for e, _ in self._recent.values() if sel.matches(e)]
        found.sort(key=lambda e: e.rank)
        return found if sel.limit is None else found[: sel.limit]

    def json(self, entry: QuestionEntry) -> bytes | None:
        if self._core is not None:
            return self._core.json(entry)
        recent = self._recent.get(entry.id)
        if recent is not None:
            return recent[1]
        line = os.pread(self._fd, entry.length, entry.offset)
        return line[:-1] if len(line) == entry.length and line.endswith(b"\n") else None

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
        if self._fd >= 0:
            os.close(self._fd)
