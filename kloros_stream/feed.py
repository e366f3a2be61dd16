"""The question feed: an append-only JSON-lines log, one CuriosityQuestion per line.

- Lines are buffered and written per batch (one ``write`` and ``flush`` to the OS, so a
  kill -9 loses nothing already handed over); ``fsync`` runs at most once a second and
  on close, for power loss.
- At start the log is read back (latest line per id wins) so the service rebuilds its
  view; a torn final line left by a crash is cut off, so the log continues cleanly after
  the last complete line. Invalid lines in the middle are logged and skipped.
- Past ``compact_bytes`` the log is rewritten to one line per question (temp file, fsync,
  atomic rename).
- Optionally a KLoROS-compatible snapshot JSON of the open questions is replaced
  atomically after changes.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from .checkpoint import atomic_write_bytes
from .core.identity import iso
from .models import CuriosityQuestion

log = structlog.get_logger("kloros_stream.feed")

FSYNC_INTERVAL_S = 1.0


@dataclass
class FeedContents:
    questions: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: int = 0
    invalid: int = 0
    valid_end: int = 0
    """Byte offset just after the last complete line."""
    torn_bytes: int = 0


def read_feed(path: Path) -> FeedContents:
    """Read a feed log: latest line per id. Never raises for a missing or damaged file."""
    out = FeedContents()
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return out
    offset = 0
    with fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                out.torn_bytes = len(raw)
                break
            offset += len(raw)
            out.valid_end = offset
            if not raw.strip():
                continue
            try:
                data = orjson.loads(raw)
                qid = data["id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                out.invalid += 1
                log.error("feed_line_invalid", path=str(path), offset=offset - len(raw),
                          sample=raw[:80].decode("utf-8", "replace"))
                continue
            out.questions[qid] = data
            out.lines += 1
    return out


def _json(q: CuriosityQuestion) -> bytes:
    """One question as JSON: orjson, or pydantic for what orjson refuses (ints > 64 bit)."""
    try:
        return orjson.dumps(q.model_dump(mode="json"))
    except TypeError:
        return q.model_dump_json().encode()


def _line(q: CuriosityQuestion) -> bytes:
    return _json(q) + b"\n"


class QuestionFeed:
    def __init__(self, path: Path, *, compact_bytes: int, snapshot_path: Path | None = None
                 ) -> None:
        self.path = path
        self.compact_bytes = compact_bytes
        self.snapshot_path = snapshot_path
        self._fh: io.FileIO | None = None
        self._buffer: list[bytes] = []
        self._size = 0
        self._last_fsync = 0.0
        self._unsynced = False
        self.lines_written = 0
        self.compactions = 0
        self.snapshot_dirty = False
        self.listeners: list[Callable[[int, list[bytes]], None]] = []
        """Called after each successful write with its start offset and lines (the stream)."""

    def open(self) -> FeedContents:
        """Recover the log (cutting a torn tail) and open it for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        contents = read_feed(self.path)
        if contents.torn_bytes:
            log.warning("feed_torn_tail_dropped", path=str(self.path),
                        bytes=contents.torn_bytes, kept_lines=contents.lines)
            with self.path.open("r+b") as fh:
                fh.truncate(contents.valid_end)
                os.fsync(fh.fileno())
        self._fh = self.path.open("ab", buffering=0)
        self._size = self._fh.tell()
        return contents

    def append(self, q: CuriosityQuestion) -> None:
        self._buffer.append(_line(q))
        self.snapshot_dirty = True

    def flush(self) -> int:
        """Write the buffered lines in one go; returns how many were written.

        On a write error (disk full, ...) the partial write is cut off again, the lines stay
        buffered for the next attempt and the error propagates.
        """
        if not self._buffer or self._fh is None:
            return 0
        data = b"".join(self._buffer)
        count = len(self._buffer)
        try:
            view = memoryview(data)
            while view:
                view = view[self._fh.write(view) or 0:]
        except OSError:
            with contextlib.suppress(OSError):
                self._fh.truncate(self._size)
            raise
        lines, start = self._buffer[:], self._size
        self._buffer.clear()
        self._size += len(data)
        self.lines_written += count
        self._unsynced = True
        now = time.monotonic()
        if now - self._last_fsync >= FSYNC_INTERVAL_S:
            self.sync()
        for listener in self.listeners:
            listener(start, lines)
        return count

    @property
    def size(self) -> int:
        """Bytes written to the log so far (its end offset)."""
        return self._size

    @property
    def inode(self) -> int:
        """The log file's inode: it changes when compaction replaces the file."""
        return os.fstat(self._fh.fileno()).st_ino if self._fh is not None else 0

    def sync(self) -> None:
        if self._fh is not None and self._unsynced:
            os.fsync(self._fh.fileno())
            self._unsynced = False
        self._last_fsync = time.monotonic()

    @property
    def needs_compaction(self) -> bool:
        return self._size > self.compact_bytes

    def compact(self, questions: Iterable[CuriosityQuestion]) -> None:
        """Rewrite the log as one line per question (the current state), atomically."""
        self.flush()
        data = b"".join(_line(q) for q in questions)
        before = self._size
        if self._fh is not None:
            self._fh.close()
        atomic_write_bytes(self.path, data)
        self._fh = self.path.open("ab", buffering=0)
        self._size = len(data)
        self.compactions += 1
        log.info("feed_compacted", path=str(self.path), bytes_before=before,
                 bytes_after=self._size)

    def write_snapshot(self, open_questions: list[CuriosityQuestion], now: float) -> None:
        """KLoROS-compatible snapshot: {"questions": [...], "generated_at", "count"}."""
        if self.snapshot_path is None:
            return
        data = (b'{"questions": [\n' + b",\n".join(_json(q) for q in open_questions)
                + b'\n], "generated_at": ' + orjson.dumps(iso(now))
                + b', "count": ' + str(len(open_questions)).encode() + b"}\n")
        atomic_write_bytes(self.snapshot_path, data)
        self.snapshot_dirty = False

    def close(self) -> None:
        self.flush()
        self.sync()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
