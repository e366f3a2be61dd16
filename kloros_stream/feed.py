"""The question feed: an append-only JSON-lines log, one CuriosityQuestion per line.

- Lines are buffered and written per batch (one ``write`` and ``flush`` to the OS, so a
  kill -9 loses nothing already handed over); for power loss the service's housekeeping
  fsyncs the file about a second after a write, on a thread (:meth:`sync_async`:
  the event loop never waits for the disk), and :meth:`close` once more.
- At start a torn final line left by a crash is cut off, so the log continues cleanly
  after the last complete line. :func:`read_feed` reads a whole log back (latest line per
  id wins; invalid lines in the middle are logged and skipped); the service instead
  reads only what its index (:mod:`kloros_stream.store`) has not seen.
- Compaction (:mod:`kloros_stream.store.compaction`) replaces the file by a rename; the
  feed then reopens the new file.
- The snapshot and KLoROS feed files are sinks (:mod:`kloros_stream.sinks.files`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from .core.store import question_json
from .durable import cut_torn_tail
from .models import CuriosityQuestion

log = structlog.get_logger("kloros_stream.feed")

TAIL_BYTES = 4096
"""How much of the log's end is kept in memory (the index checks it against the file)."""


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


_json = question_json


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _line(q: CuriosityQuestion) -> bytes:
    return _json(q) + b"\n"


class QuestionFeed:
    def __init__(self, path: Path, *, compact_bytes: int) -> None:
        self.path = path
        self.compact_bytes = compact_bytes
        self._fh: io.FileIO | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._size = 0
        self.tail = b""
        """The last :data:`TAIL_BYTES` written (flushed) to the file."""
        self._unsynced = False
        self.lines_written = 0
        self.compactions = 0
        self.listeners: list[Callable[[int, list[bytes]], None]] = []
        """Called after each successful write with its start offset and lines (the stream)."""

    def open(self, *, read: bool = True) -> FeedContents:
        """Recover the log (cutting a torn tail) and open it for appending; with ``read``
        the whole log is read back, else only its end is looked at."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if read:
            contents = read_feed(self.path)
        else:
            contents = FeedContents()
            contents.valid_end, contents.torn_bytes = cut_torn_tail(self.path)
        if contents.torn_bytes:
            log.warning("feed_torn_tail_dropped", path=str(self.path),
                        bytes=contents.torn_bytes, kept_lines=contents.lines)
            if read:
                with self.path.open("r+b") as fh:
                    fh.truncate(contents.valid_end)
                    os.fsync(fh.fileno())
        self.reopen()
        return contents

    def reopen(self) -> None:
        """(Re)open the file at ``path`` for appending (after a compaction replaced it)."""
        if self._fh is not None:
            self._fh.close()
        self._fh = self.path.open("ab", buffering=0)
        self._size = self._fh.tell()
        with self.path.open("rb") as fh:
            self.tail = os.pread(fh.fileno(), TAIL_BYTES, max(0, self._size - TAIL_BYTES))

    @property
    def size(self) -> int:
        """Bytes in the file (written, not buffered)."""
        return self._size

    @property
    def end(self) -> int:
        """Where the next appended line will start: the file plus what is buffered."""
        return self._size + self._buffered

    @property
    def inode(self) -> int:
        """The log file's inode: it changes when compaction replaces the file."""
        return os.fstat(self._fh.fileno()).st_ino if self._fh is not None else 0

    def append(self, q: CuriosityQuestion) -> None:
        self.append_line(_line(q))

    def append_line(self, line: bytes) -> None:
        """Buffer one complete line (ending in a newline)."""
        self._buffer.append(line)
        self._buffered += len(line)

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
        self._buffered = 0
        self._size += len(data)
        self.tail = (self.tail + data[-TAIL_BYTES:])[-TAIL_BYTES:]
        self.lines_written += count
        self._unsynced = True
        for listener in self.listeners:  # the lines are in the file (not yet on disk)
            listener(start, lines)
        return count

    def sync(self) -> None:
        """fsync what was written, here (at close)."""
        if self._fh is not None and self._unsynced:
            os.fsync(self._fh.fileno())
            self._unsynced = False

    async def sync_async(self) -> None:
        """fsync what was written so far on a thread. The thread works on its own
        duplicate of the descriptor (closed there): a compaction reopening the file
        meanwhile neither closes it under the fsync nor hands its number to another file."""
        if self._fh is None or not self._unsynced:
            return
        self._unsynced = False  # a write from now on needs the next fsync
        fd = os.dup(self._fh.fileno())
        try:
            await asyncio.to_thread(_fsync_and_close, fd)
        except OSError:
            self._unsynced = True
            raise

    def close(self) -> None:
        self.flush()
        self.sync()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
