"""The durable question store: the JSONL feed (the one durable record) and its index.

- ``put`` buffers the question's line in the feed (its entry is known at once);
  ``flush`` writes the lines (one ``write``) and then indexes them (``settle``: kept
  apart so the service records the signal -> line latency before the index work),
  ``commit`` commits the index together with the feed position it now describes. A
  crash before the commit leaves the index behind the feed: the next start reads only the
  lines after its position.
- ``open`` never reads the feed's history: it takes the newest index that matches the
  feed (inode, size, CRC of the bytes before its position) and reads what follows; with
  no matching index it rebuilds one from the whole feed (committed in chunks, so an
  interrupted rebuild resumes).
- Memory holds no questions: ranking, dedup and paging are index queries, a full
  question is one ``pread`` of its line.
- Compaction runs when the lines that are no longer any live question's latest (garbage)
  are more than half the file (and the file is past ``compact_bytes``), in a thread; the
  loop only copies what was appended meanwhile and renames (temp, fsync, rename).
- Resolved questions older than the retention leave the views and, at compaction, move
  to the archive file beside the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

from ..checkpoint import fsync_dir
from ..core.store import QuestionEntry, Selection, entry_of, entry_of_question, question_json
from ..feed import TAIL_BYTES, QuestionFeed
from ..models import CuriosityQuestion
from .compaction import CompactionAborted, rewrite
from .files import (
    archive_path,
    compacting_feed,
    compacting_index,
    index_generations,
    index_path,
    open_matching,
    remove_db,
    tail_crc,
)
from .index import IndexInvalid, QuestionIndex

log = structlog.get_logger("kloros_stream.store")

COMMIT_EVERY_LINES = 20_000
COMMIT_ROWS = 512
COMPACTION_RETRY_S = 60.0
WAL_CHECKPOINT_BYTES = 4 << 20


@dataclass
class Recovery:
    generation: int
    rebuilt: str | None
    """Why the index was rebuilt from the whole feed (None: an index was reused)."""
    lines_read: int
    invalid_lines: int
    torn_bytes: int
    questions: int
    expired: int
    seconds: float


class FeedStore:
    """A :class:`~kloros_stream.core.store.QuestionStore` over the feed and its index."""

    def __init__(self, feed: QuestionFeed, *, retention_s: float | None = 30 * 86400.0
                 ) -> None:
        self.feed = feed
        self.retention_s = retention_s
        self.archive_path = archive_path(feed.path)
        self._index: QuestionIndex | None = None
        self.generation = 0
        self._inode = 0
        self._rfd = -1
        self._unflushed: dict[int, bytes] = {}
        """Lines not yet written, by offset."""
        self._unindexed: dict[str, QuestionEntry] = {}
        """Entries of lines put but not yet indexed (written or not)."""
        self._garbage = 0
        self._stop = threading.Event()
        self.compacting = False
        self._compaction_failed_at = float("-inf")
        self.archived = 0

    @property
    def index(self) -> QuestionIndex:
        if self._index is None:
            raise RuntimeError("the question store is not open")
        return self._index

    # -- start -----------------------------------------------------------------------------
    def open(self, now: float) -> Recovery:
        started = time.perf_counter()
        path = self.feed.path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            compacting_feed(path).unlink()
        remove_db(compacting_index(path))
        contents = self.feed.open(read=False)
        index, generation, reasons = open_matching(path, TAIL_BYTES)
        for _, stale in index_generations(path):
            if index is None or stale != index.path:
                remove_db(stale)
        rebuilt = None
        if index is None:
            generation += 1
            index = QuestionIndex(index_path(path, generation))
            if path.stat().st_size:
                rebuilt = "; ".join(reasons) or "no index"
                log.warning("feed_index_rebuilding", path=str(path), reason=rebuilt)
        self._index, self.generation = index, generation
        self._inode = self.feed.inode
        lines, invalid = self._catch_up(index, path, int(index.meta["feed_end"]),
                                        validate=True)
        expired = self.expire(now)
        self.commit()
        self._rfd = os.open(path, os.O_RDONLY)
        return Recovery(generation, rebuilt, lines, invalid, contents.torn_bytes,
                        sum(index.counts().values()), expired, time.perf_counter() - started)

    def _catch_up(self, index: QuestionIndex, path: Path, start: int, *, validate: bool
                  ) -> tuple[int, int]:
        """Index the lines of ``path`` from ``start``; returns (lines, invalid lines)."""
        lines = invalid = 0
        inode = os.stat(path).st_ino
        with path.open("rb") as fh:
            fh.seek(start)
            offset = start
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break
                entry = self._entry_of_line(raw, offset, validate)
                if entry is None:
                    invalid += raw.strip() != b""
                    index.add_garbage(len(raw))
                else:
                    index.upsert(entry)
                offset += len(raw)
                lines += 1
                if lines % COMMIT_EVERY_LINES == 0:
                    crc = tail_crc(os.pread(fh.fileno(), min(offset, TAIL_BYTES),
                                            max(0, offset - TAIL_BYTES)))
                    index.commit(feed_end=str(offset), feed_inode=str(inode),
                                 tail_crc=str(crc))
                    index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return lines, invalid

    def _entry_of_line(self, raw: bytes, offset: int, validate: bool) -> QuestionEntry | None:
        if not raw.strip():
            return None
        try:
            data = orjson.loads(raw)
            if validate:
                return entry_of_question(CuriosityQuestion.model_validate(data), offset,
                                         len(raw))
            return entry_of(data, offset, len(raw))
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.error("feed_line_invalid", path=str(self.feed.path), offset=offset,
                      error=str(err)[:200], sample=raw[:80].decode("utf-8", "replace"))
            return None

    # -- the QuestionStore interface -----------------------------------------------------
    def entry(self, qid: str) -> QuestionEntry | None:
        return self._unindexed.get(qid) or self.index.get(qid)

    def read(self, qid: str) -> CuriosityQuestion | None:
        entry = self.entry(qid)
        raw = None if entry is None else self.read_json(entry)
        if raw is None:
            return None
        try:
            return CuriosityQuestion.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValueError) as err:
            log.error("feed_question_invalid", id=qid, error=str(err)[:200])
            return None

    def read_json(self, entry: QuestionEntry) -> bytes | None:
        line = self._unflushed.get(entry.offset)
        if line is None:
            line = os.pread(self._rfd, entry.length, entry.offset)
        if len(line) != entry.length or not line.endswith(b"\n"):
            log.error("feed_line_unreadable", id=entry.id, offset=entry.offset,
                      length=entry.length, got=len(line))
            return None
        return line[:-1]

    def put(self, q: CuriosityQuestion) -> None:
        line = question_json(q) + b"\n"
        offset = self.feed.end
        self.feed.append_line(line)
        self._unflushed[offset] = line
        superseded = self._unindexed.get(q.id)
        if superseded is not None:  # two lines for one id in one batch: the first is garbage
            self._garbage += superseded.length
        self._unindexed[q.id] = entry_of_question(q, offset, len(line))

    def select(self, sel: Selection) -> list[QuestionEntry]:
        self.settle()
        return self.index.select(sel)

    def counts(self) -> Counter[tuple[str, bool]]:
        if self._index is None:
            return Counter()
        self.settle()
        return self._index.counts()

    def ids(self) -> Iterator[str]:
        self.settle()
        return iter(self.index.ids())

    # -- writing ---------------------------------------------------------------------------
    def flush(self, *, settle: bool = True) -> int:
        """Write the buffered lines (raises OSError with the lines kept, see the feed), then
        index them unless ``settle`` is False (the caller then calls :meth:`settle`)."""
        written = self.feed.flush()
        if self.feed.end == self.feed.size:
            self._unflushed.clear()
            if settle:
                self.settle()
        return written

    def settle(self) -> None:
        """Index the lines put since the last call, in the open index transaction (it is
        committed only once they are written: see :meth:`commit`)."""
        if self._unindexed:
            for entry in self._unindexed.values():
                self.index.upsert(entry)
            self._unindexed.clear()
            self.index.add_garbage(self._garbage)
            self._garbage = 0
            if self.index.txn_rows >= COMMIT_ROWS:  # a burst: keep the transaction small
                self.commit()

    def commit(self) -> None:
        """Commit the index with the feed position it describes (once the lines are
        written; while a write keeps failing the index waits with them)."""
        if self.feed.end != self.feed.size:
            return
        self.settle()
        if not self.index.in_txn:
            return
        self.index.commit(feed_end=str(self.feed.size), feed_inode=str(self._inode),
                          tail_crc=str(tail_crc(self.feed.tail)))

    def expire(self, now: float) -> int:
        """Resolved questions past the retention leave the views; returns how many."""
        if not self.retention_s:
            return 0
        n = self.index.expire(now - self.retention_s)
        if n:
            log.info("questions_retired", count=n, retention_s=self.retention_s)
        return n

    @property
    def garbage_bytes(self) -> int:
        return self.index.garbage

    @property
    def needs_compaction(self) -> bool:
        size = self.feed.size
        return (not self.compacting and size > self.feed.compact_bytes
                and self.index.garbage * 2 > size
                and time.monotonic() - self._compaction_failed_at > COMPACTION_RETRY_S)

    async def checkpoint(self) -> None:
        """Checkpoint the index's WAL from a thread once it has grown."""
        wal = Path(f"{self.index.path}-wal")
        with contextlib.suppress(OSError):
            if wal.stat().st_size > WAL_CHECKPOINT_BYTES:
                await asyncio.to_thread(_checkpoint_wal, self.index.path)

    def close(self) -> None:
        try:
            self.feed.close()
            if self._index is not None:
                self.commit()
        finally:
            if self._index is not None:
                self._index.close()
                self._index = None
            if self._rfd >= 0:
                os.close(self._rfd)
                self._rfd = -1

    # -- compaction -------------------------------------------------------------------------
    async def compact(self) -> bool:
        """Rewrite the feed to the live questions' latest lines; True if it was replaced."""
        if self.compacting:
            return False
        self.compacting = True
        path = self.feed.path
        new_feed, new_index = compacting_feed(path), compacting_index(path)
        remove_db(new_index)
        try:
            self.flush()
            self.commit()
            before = self.feed.size
            done = await asyncio.to_thread(rewrite, path, self.index.path, new_feed, new_index,
                                           self.archive_path, self._stop)
            self._swap(new_feed, new_index, done.snapshot_end, done.size)
        except (OSError, CompactionAborted, IndexInvalid) as err:
            self._compaction_failed_at = time.monotonic()
            log.error("feed_compaction_failed", path=str(path), error=str(err))
            with contextlib.suppress(FileNotFoundError):
                new_feed.unlink()
            remove_db(new_index)
            return False
        finally:
            self.compacting = False
        self.archived += done.archived
        self.feed.compactions += 1
        log.info("feed_compacted", path=str(path), bytes_before=before,
                 bytes_after=self.feed.size, questions=done.kept, archived=done.archived,
                 archive=str(self.archive_path) if done.archived else None)
        return True

    def _swap(self, new_feed: Path, new_index: Path, snapshot_end: int, size: int) -> None:
        """On the loop: append what was written during the rewrite, then rename both."""
        self.flush()
        self.commit()
        path = self.feed.path
        end = self.feed.size
        appended = os.pread(self._rfd, end - snapshot_end, snapshot_end)
        with new_feed.open("ab") as out:
            out.write(appended)
            out.flush()
            os.fsync(out.fileno())
        index = QuestionIndex(new_index)
        try:
            self._catch_up(index, new_feed, size, validate=False)
            st = os.stat(new_feed)
            with new_feed.open("rb") as fh:
                tail = os.pread(fh.fileno(), TAIL_BYTES, max(0, st.st_size - TAIL_BYTES))
            index.commit(feed_end=str(st.st_size), feed_inode=str(st.st_ino),
                         tail_crc=str(tail_crc(tail)))
            index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            index.close()
        generation = self.generation + 1
        final = index_path(path, generation)
        os.replace(new_index, final)
        os.replace(new_feed, path)
        fsync_dir(path.parent)
        old = self.index
        self._index = QuestionIndex(final)
        self.generation = generation
        old.close()
        remove_db(old.path)
        self.feed.reopen()
        self._inode = self.feed.inode
        os.close(self._rfd)
        self._rfd = os.open(path, os.O_RDONLY)

    def abort_compaction(self) -> None:
        """Stopping: a running rewrite gives up (its temp files are removed)."""
        self._stop.set()


def _checkpoint_wal(path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        db.close()
