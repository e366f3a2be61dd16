"""Where the store's files live, beside the feed, and how an index is matched to a feed.

For a feed ``var/curiosity_feed.jsonl``:

- ``var/curiosity_feed.index-<generation>.sqlite`` the index (a new generation per
  compaction, so a reader of the old one is never paired with the new one's WAL);
- ``var/curiosity_feed.archive.jsonl`` resolved questions past the retention;
- ``var/.curiosity_feed.jsonl.compacting`` and ``var/.curiosity_feed.index.compacting.sqlite``
  while a compaction runs (removed at start if a crash left them).
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from pathlib import Path

from .index import IndexInvalid, QuestionIndex

SIDE_FILES = ("", "-wal", "-shm", "-journal")


def index_path(feed: Path, generation: int) -> Path:
    return feed.with_name(f"{feed.stem}.index-{generation}.sqlite")


def archive_path(feed: Path) -> Path:
    return feed.with_name(f"{feed.stem}.archive{feed.suffix}")


def compacting_feed(feed: Path) -> Path:
    return feed.with_name(f".{feed.name}.compacting")


def compacting_index(feed: Path) -> Path:
    return feed.with_name(f".{feed.stem}.index.compacting.sqlite")


def index_generations(feed: Path) -> list[tuple[int, Path]]:
    """Index files beside ``feed``, newest generation first."""
    pattern = re.compile(re.escape(feed.stem) + r"\.index-(\d+)\.sqlite")
    found = []
    with contextlib.suppress(FileNotFoundError):
        for p in feed.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def remove_db(path: Path) -> None:
    """Remove a SQLite file with its WAL, shared-memory and journal files."""
    for suffix in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def tail_crc(data: bytes) -> int:
    return zlib.crc32(data)


def mismatch(index: QuestionIndex, feed: Path, tail_bytes: int) -> str | None:
    """Why ``index`` does not describe (a prefix of) ``feed``; None when it does."""
    try:
        end = int(index.meta["feed_end"])
        inode = int(index.meta["feed_inode"])
        crc = int(index.meta["tail_crc"])
    except (KeyError, ValueError):
        return "no feed position recorded"
    try:
        with feed.open("rb") as fh:
            st = os.fstat(fh.fileno())
            start = max(0, end - tail_bytes)
            tail = os.pread(fh.fileno(), end - start, start)
    except FileNotFoundError:
        return "no feed" if end else None
    if end == 0:
        return "an empty index" if st.st_size else None
    if st.st_ino != inode:
        return "the feed is another file (inode)"
    if st.st_size < end:
        return f"the feed ({st.st_size} bytes) is shorter than the index ({end})"
    if tail_crc(tail) != crc:
        return "the feed's bytes before the indexed position differ"
    return None


def open_matching(feed: Path, tail_bytes: int, *, readonly: bool = False
                  ) -> tuple[QuestionIndex | None, int, list[str]]:
    """The newest index generation that matches ``feed``: (index or None, its generation,
    why the others were rejected). Rejected files are left alone (the caller removes them
    unless read-only)."""
    reasons = []
    for generation, path in index_generations(feed):
        try:
            index = QuestionIndex(path, readonly=readonly)
        except IndexInvalid as err:
            reasons.append(f"{path.name}: {err}")
            continue
        why = mismatch(index, feed, tail_bytes)
        if why is None:
            return index, generation, reasons
        reasons.append(f"{path.name}: {why}")
        index.close()
    return None, 0, reasons
