"""The edge's bounded on-disk buffer: signals wait here until JetStream acknowledged them.

Records are lines in segment files named by their first sequence number
(``<dir>/000000000042.seg``), appended in order; ``cursor`` (atomically replaced) is the
sequence of the oldest record not yet acknowledged. :meth:`Spool.append` never waits for
the network: it writes to the OS (fsync at most once a second) and returns. Past
``max_records`` unacknowledged records the oldest are dropped (counted). A segment whose
records are all behind the cursor is deleted; a torn last line left by a crash is cut off
at start.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import orjson
import structlog

from ..checkpoint import atomic_write_bytes

log = structlog.get_logger("kloros_stream.cluster.spool")

SEGMENT_RECORDS = 4096
FSYNC_INTERVAL_S = 1.0
CURSOR_SAVE_S = 0.2
_SUFFIX = ".seg"


class Spool:
    def __init__(self, directory: Path, max_records: int,
                 segment_records: int = SEGMENT_RECORDS) -> None:
        if max_records < 1 or segment_records < 1:
            raise ValueError("max_records and segment_records must be at least 1")
        self.directory = directory
        self.max_records = max_records
        self.segment_records = segment_records
        self.dropped = 0
        self.appended = 0
        self.acked = 0
        self._segments: dict[int, int] = {}
        """First sequence -> records in that segment file."""
        self._cursor = 0
        self._next = 0
        self._tail_fh: object | None = None
        self._unsynced = False
        self._last_fsync = 0.0
        self._cache: tuple[int, list[bytes]] | None = None
        self._cursor_saved_at = 0.0
        self._cursor_dirty = False
        self._open()

    # -- state ---------------------------------------------------------------------------
    @property
    def cursor(self) -> int:
        """Sequence of the oldest record still waiting for an acknowledgement."""
        return self._cursor

    @property
    def next_seq(self) -> int:
        return self._next

    @property
    def pending(self) -> int:
        return self._next - self._cursor

    def stats(self) -> dict[str, int]:
        return {"pending": self.pending, "appended": self.appended, "acked": self.acked,
                "dropped": self.dropped, "segments": len(self._segments)}

    def _path(self, first: int) -> Path:
        return self.directory / f"{first:012d}{_SUFFIX}"

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            saved = orjson.loads((self.directory / "cursor").read_bytes())
            self._cursor = int(saved["cursor"])
        except FileNotFoundError:
            self._cursor = 0
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as err:
            log.error("spool_cursor_invalid", directory=str(self.directory), error=str(err))
            self._cursor = 0
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            try:
                first = int(path.stem)
            except ValueError:
                continue
            self._segments[first] = self._count_and_repair(path)
        self._next = max((f + n for f, n in self._segments.items()), default=self._cursor)
        self._cursor = min(max(self._cursor, min(self._segments, default=self._cursor)),
                           self._next)
        self._delete_behind()

    @staticmethod
    def _count_and_repair(path: Path) -> int:
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            log.warning("spool_torn_tail_dropped", path=str(path), bytes=len(data) - keep)
            with path.open("r+b") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())
        return data.count(b"\n", 0, keep)

    # -- writing -------------------------------------------------------------------------
    def append(self, record: bytes) -> int:
        """Append one record (no newline inside); returns its sequence number."""
        tail = max(self._segments, default=None)
        if tail is None or self._segments[tail] >= self.segment_records:
            self._close_tail()
            tail = self._next
            self._segments[tail] = 0
        if self._tail_fh is None:
            self._tail_fh = self._path(tail).open("ab", buffering=0)
        self._tail_fh.write(record + b"\n")  # type: ignore[attr-defined]
        self._segments[tail] += 1
        seq = self._next
        self._next += 1
        self.appended += 1
        self._unsynced = True
        if self._cache is not None and self._cache[0] == tail:
            self._cache[1].append(record)
        if self.pending > self.max_records:
            excess = self.pending - self.max_records
            self.dropped += excess
            log.warning("spool_full_oldest_dropped", dropped=excess, total=self.dropped)
            self._advance(self._cursor + excess)
        return seq

    def sync(self, *, force: bool = False) -> None:
        """fsync the tail segment (at most once a second unless ``force``); save a
        deferred cursor."""
        now = time.monotonic()
        if self._cursor_dirty and now - self._cursor_saved_at >= CURSOR_SAVE_S:
            self._save_cursor(force=True)
        if self._unsynced and self._tail_fh is not None and (
                force or now - self._last_fsync >= FSYNC_INTERVAL_S):
            os.fsync(self._tail_fh.fileno())  # type: ignore[attr-defined]
            self._unsynced = False
            self._last_fsync = now

    def _close_tail(self) -> None:
        if self._tail_fh is not None:
            self.sync(force=True)
            self._tail_fh.close()  # type: ignore[attr-defined]
            self._tail_fh = None

    def close(self) -> None:
        if self._cursor_dirty:
            self._save_cursor(force=True)
        self._close_tail()

    # -- reading and acknowledging -------------------------------------------------------
    def peek(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` unacknowledged records from the cursor on, oldest first."""
        out: list[tuple[int, bytes]] = []
        seq = self._cursor
        while len(out) < limit and seq < self._next:
            first = max(f for f in self._segments if f <= seq)
            records = self._records(first)
            index = seq - first
            take = records[index:index + limit - len(out)]
            if not take:
                break
            out += [(seq + i, r) for i, r in enumerate(take)]
            seq += len(take)
        return out

    def _records(self, first: int) -> list[bytes]:
        if self._cache is None or self._cache[0] != first:
            data = self._path(first).read_bytes()
            self._cache = (first, data.split(b"\n")[:-1] if data else [])
        return self._cache[1]

    def ack(self, upto: int) -> None:
        """Every record below sequence ``upto`` was acknowledged (or is no longer wanted)."""
        if upto > self._cursor:
            self.acked += min(upto, self._next) - self._cursor
            self._advance(upto)

    def _advance(self, upto: int) -> None:
        self._cursor = min(upto, self._next)
        self._save_cursor()
        self._delete_behind()

    def _save_cursor(self, *, force: bool = False) -> None:
        """At most every CURSOR_SAVE_S (a stale cursor only resends, which JetStream and
        the core de-duplicate)."""
        now = time.monotonic()
        if not force and now - self._cursor_saved_at < CURSOR_SAVE_S:
            self._cursor_dirty = True
            return
        try:
            atomic_write_bytes(self.directory / "cursor",
                               orjson.dumps({"cursor": self._cursor}))
            self._cursor_saved_at = now
            self._cursor_dirty = False
        except OSError:
            log.exception("spool_cursor_write_failed", directory=str(self.directory))

    def _delete_behind(self) -> None:
        """Remove segments wholly behind the cursor (the open tail only once it is full)."""
        tail = max(self._segments, default=None)
        for first, count in sorted(self._segments.items()):
            if first + count > self._cursor:
                break
            if first == tail and count < self.segment_records:
                break
            if first == tail:
                self._close_tail()
            with contextlib.suppress(FileNotFoundError):
                self._path(first).unlink()
            del self._segments[first]
            if self._cache is not None and self._cache[0] == first:
                self._cache = None
