"""Compaction's heavy half, run in a thread: copy each question's latest live line from the
feed into a new file and index it; retained-past lines go to the archive.

It reads a snapshot of the index (a SQLite read transaction: the rows and the feed
position ``feed_end`` they describe) while the service keeps appending to the feed and
indexing; the service then copies what was appended after ``feed_end`` and swaps the
files (:meth:`kloros_stream.store.FeedStore.compact`).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from ..checkpoint import fsync_dir
from .index import COLUMNS, QuestionIndex, _row_entry

BATCH = 4096


class CompactionAborted(Exception):
    """The service is stopping, or the index and the feed disagree."""


@dataclass
class Rewritten:
    snapshot_end: int
    """The feed position the copied rows described; what follows is copied by the loop."""
    size: int
    """Bytes of the new feed so far."""
    kept: int
    archived: int


def rewrite(feed: Path, index: Path, new_feed: Path, new_index: Path, archive: Path,
            stop: threading.Event) -> Rewritten:
    """Write ``new_feed`` (every live question's latest line) and ``new_index`` over it;
    append the retained-past questions' lines to ``archive`` (fsynced before returning)."""
    src = sqlite3.connect(index, isolation_level=None)
    out = new_feed.open("wb")
    dst = QuestionIndex(new_index)
    fd = os.open(feed, os.O_RDONLY)
    try:
        src.execute("BEGIN")  # one snapshot: the rows and the feed position agree
        row = src.execute("SELECT value FROM meta WHERE key = 'feed_end'").fetchone()
        snapshot_end = int(row[0]) if row else 0
        archived: list[bytes] = []
        batch = []
        size = kept = 0
        rows = itertools.chain(  # live ones ranked, as the views list them; then the retired
            src.execute(f"SELECT {COLUMNS} FROM q WHERE live = 1 ORDER BY priority DESC, id"),
            src.execute(f"SELECT {COLUMNS} FROM q WHERE live = 0"))
        for row in rows:
            if stop.is_set():
                raise CompactionAborted("stopping")
            e = _row_entry(row)
            line = os.pread(fd, e.length, e.offset)
            if len(line) != e.length or not line.endswith(b"\n"):
                raise CompactionAborted(f"index row {e.id} does not match the feed")
            if not e.live:
                archived.append(line)
                continue
            out.write(line)
            batch.append(replace(e, offset=size))
            size += e.length
            kept += 1
            if len(batch) >= BATCH:
                dst.insert_new(batch)
                batch.clear()
        src.execute("COMMIT")
        dst.insert_new(batch)
        dst.commit()
        out.flush()
        os.fsync(out.fileno())
        if archived:
            with archive.open("ab") as fh:
                fh.write(b"".join(archived))
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(archive.parent)
        return Rewritten(snapshot_end, size, kept, len(archived))
    finally:
        os.close(fd)
        out.close()
        dst.close()
        src.close()
