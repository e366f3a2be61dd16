"""The signal history (``[history]``, the seed's chembus_history): every signal as JSONL.

Files, for ``path = history.jsonl``:

- ``history.jsonl``: the live log; every signal appended as one line (buffered writes).
- ``history.jsonl.1``: the consolidated older history: the latest line per
  ``(signal, gap_type, gap_name)``, in their original order. At most ``max_keys`` keys and
  ``max_bytes // 2`` bytes; when either cap is hit the keys seen longest ago are dropped.
- ``history.jsonl.1.rotating`` / ``.1.tmp``: transient while a consolidation runs.

When the live log reaches ``max_bytes`` it is renamed to ``.1.rotating`` and a fresh one is
started; a worker thread merges the old ``.1`` and ``.1.rotating`` into a new ``.1`` in two
streaming passes over ``chunk_bytes`` reads (index the latest offset per key, then copy
those lines), writes it to ``.1.tmp`` and renames it into place. Merging keeps the latest
line per key, so redoing an interrupted consolidation is harmless: a crash at any point
leaves files that the next start finishes consolidating. A consolidation that fails
(disk full) is logged and the rotated lines are dropped, so disk stays bounded.

Bounds: the live log and ``.1.rotating`` hold at most ``max_bytes`` (plus one write
buffer) each, ``.1`` and ``.1.tmp`` at most ``max_bytes // 2`` each: about 1.5 x
``max_bytes`` at rest and 3 x at the peak. If the live log fills up again while the previous
consolidation still runs (a consolidation takes about a second per 100 MB), ``flush``
waits for it. Memory is one read chunk, one line (lines over ``max_line_bytes`` are
skipped) and the key index (about 250 bytes per key), independent of the file sizes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from ..checkpoint import fsync_dir
from ..durable import cut_torn_tail
from ..sources.lines import LineSplitter

log = structlog.get_logger(__name__)

DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_BUFFER_BYTES = 64 << 10
DEFAULT_MAX_KEYS = 20_000
DEFAULT_MAX_LINE_BYTES = 1 << 20


@dataclass
class Consolidation:
    """What one consolidation read and kept."""

    lines_in: int = 0
    kept: int = 0
    bytes_out: int = 0
    superseded: int = 0
    """Lines replaced by a later line with the same key."""
    evicted: int = 0
    """Keys dropped by the ``max_keys`` or byte cap (the ones seen longest ago)."""
    invalid: int = 0
    oversize: int = 0
    torn: int = 0
    seconds: float = 0.0


def history_key(line: bytes) -> bytes | None:
    """A 16-byte digest of ``(signal, gap_type, gap_name)``, or None if not a signal line."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    facts = obj.get("facts") if isinstance(obj, dict) else None
    if not isinstance(facts, dict):
        return None
    ident = orjson.dumps([obj.get("signal"), facts.get("gap_type"), facts.get("gap_name")])
    return hashlib.blake2b(ident, digest_size=16).digest()


def iter_lines(
    path: Path, chunk_bytes: int, max_line_bytes: int, result: Consolidation
) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for each complete line of ``path``, reading ``chunk_bytes`` at a time.

    Lines longer than ``max_line_bytes`` are skipped without being held in memory (counted
    in ``result.oversize``); an unterminated last line is a torn write (``result.torn``).
    """
    def oversize(_offset: int, _size: int) -> None:
        result.oversize += 1

    lines = LineSplitter(max_line_bytes, oversize)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(chunk_bytes):
            yield from lines.feed(chunk)
    if lines.pending:
        result.torn += 1


def consolidate(
    sources: list[Path],
    dest: Path,
    *,
    max_keys: int = DEFAULT_MAX_KEYS,
    max_bytes: int,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Consolidation:
    """Write the latest line per key of ``sources`` (read in order) to ``dest``, atomically.

    Keeps at most ``max_keys`` keys and ``max_bytes`` bytes, preferring the keys seen most
    recently; output lines keep their original order. Missing sources count as empty.
    """
    began = time.monotonic()
    result = Consolidation()
    index: OrderedDict[bytes, tuple[int, int, int]] = OrderedDict()
    present = [p for p in sources if p.exists()]
    for src, path in enumerate(present):
        for offset, line in iter_lines(path, chunk_bytes, max_line_bytes, result):
            result.lines_in += 1
            key = history_key(line)
            if key is None:
                result.invalid += 1
                continue
            if key in index:
                index.move_to_end(key)
                result.superseded += 1
            index[key] = (src, offset, len(line) + 1)
            if len(index) > max_keys:
                index.popitem(last=False)
                result.evicted += 1
    selected: list[tuple[int, int, int]] = []
    total = 0
    for src, offset, length in reversed(index.values()):
        if total + length > max_bytes:
            break
        selected.append((src, offset, length))
        total += length
    result.evicted += len(index) - len(selected)
    index.clear()
    selected.sort()
    _copy_lines(present, selected, dest, chunk_bytes)
    result.kept, result.bytes_out = len(selected), total
    result.seconds = time.monotonic() - began
    return result


def _copy_lines(
    sources: list[Path], selected: list[tuple[int, int, int]], dest: Path, chunk_bytes: int
) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    fds = [os.open(p, os.O_RDONLY | os.O_CLOEXEC) for p in sources]
    try:
        with open(tmp, "wb", buffering=chunk_bytes) as out:
            for src, offset, length in selected:
                out.write(os.pread(fds[src], length, offset))
            out.flush()
            os.fsync(out.fileno())
    finally:
        for fd in fds:
            os.close(fd)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def truncate_torn_tail(path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Cut an unterminated last line (a write torn by a crash); returns the bytes removed."""
    return cut_torn_tail(path, chunk_bytes)[1]


class SignalHistory:
    """Appends signals to the history log and keeps it within its size bounds."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_keys = max_keys
        self.chunk_bytes = chunk_bytes
        self.buffer_bytes = min(buffer_bytes, max(1, max_bytes // 4))
        self.max_line_bytes = min(max_line_bytes, max_bytes // 2)
        self.archive = self.path.with_name(self.path.name + ".1")
        self.rotating = self.path.with_name(self.path.name + ".1.rotating")
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._counts = {
            "appended": 0,
            "bytes_written": 0,
            "rotations": 0,
            "consolidations": 0,
            "skipped_lines": 0,
            "write_errors": 0,
            "torn_bytes_truncated": 0,
        }
        self._last: Consolidation | None = None
        self._fd: int | None = None
        self._closed = False
        self._size = 0
        self._recover()

    # -- public ------------------------------------------------------------------------
    def append(self, signal_json: bytes) -> None:
        """Buffer one signal (one JSON document, no embedded newline) for the log."""
        line = signal_json.rstrip(b"\n")
        if b"\n" in line or len(line) > self.max_line_bytes:
            self._counts["skipped_lines"] += 1
            log.warning("history_line_skipped", bytes=len(line), multiline=b"\n" in line)
            return
        self._buffer += line
        self._buffer += b"\n"
        self._counts["appended"] += 1
        if len(self._buffer) >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines; rotate once the live log has reached ``max_bytes``."""
        if self._fd is None and not self._closed:
            self._reopen()
        if self._buffer:
            data, self._buffer = self._buffer, bytearray()
            if self._fd is None:
                self._counts["write_errors"] += 1
                log.error("history_not_open", path=str(self.path), dropped_bytes=len(data))
                return
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as err:
                self._counts["write_errors"] += 1
                log.error("history_write_failed", path=str(self.path), error=str(err))
            else:
                self._size += len(data)
                self._counts["bytes_written"] += len(data)
        if self._size >= self.max_bytes:
            try:
                self._rotate()
            except OSError as err:
                self._counts["write_errors"] += 1
                log.error("history_rotation_failed", path=str(self.path), error=str(err))

    def wait_consolidated(self, timeout: float | None = None) -> bool:
        """Wait for a running consolidation; True when none is running any more."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush, wait up to ``timeout`` for a running consolidation, close the log.

        A consolidation still running after ``timeout`` is abandoned (its thread is a
        daemon); the next start finishes it from ``.1.rotating``.
        """
        self.flush()
        self._closed = True
        self.wait_consolidated(timeout)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            last = asdict(self._last) if self._last else None
        return {
            **self._counts,
            "path": str(self.path),
            "size": self._size,
            "buffered": len(self._buffer),
            "consolidating": self._worker is not None and self._worker.is_alive(),
            "last_consolidation": last,
        }

    # -- internals ---------------------------------------------------------------------
    def _recover(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.archive.with_name(self.archive.name + ".tmp").unlink()
        torn = truncate_torn_tail(self.path, self.chunk_bytes)
        if torn:
            self._counts["torn_bytes_truncated"] += torn
            log.warning("history_torn_tail_truncated", path=str(self.path), bytes=torn)
        self._open()
        if self.rotating.exists():
            log.info("history_consolidation_resumed", path=str(self.rotating))
            self._start_worker()
        if self._size >= self.max_bytes:
            self._rotate()

    def _reopen(self) -> None:
        """After a failed rotation left no log open: try once per flush to open it again."""
        try:
            self._open()
        except OSError as err:
            log.error("history_open_failed", path=str(self.path), error=str(err))

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        worker = self._worker
        if worker is not None and worker.is_alive():
            log.warning("history_waiting_for_consolidation", size=self._size)
            worker.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.replace(self.path, self.rotating)
        except FileNotFoundError:
            log.warning("history_log_vanished", path=str(self.path))
            self._open()
            return
        fsync_dir(self.path.parent)
        self._counts["rotations"] += 1
        self._open()
        self._start_worker()

    def _start_worker(self) -> None:
        self._worker = threading.Thread(
            target=self._consolidate, name="history-consolidate", daemon=True
        )
        self._worker.start()

    def _consolidate(self) -> None:
        try:
            result = consolidate(
                [self.archive, self.rotating],
                self.archive,
                max_keys=self.max_keys,
                max_bytes=self.max_bytes // 2,
                chunk_bytes=self.chunk_bytes,
                max_line_bytes=self.max_line_bytes,
            )
        except OSError as err:
            log.error("history_consolidation_failed", path=str(self.archive), error=str(err))
            result = None
        for leftover in (self.rotating, self.archive.with_name(self.archive.name + ".tmp")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        if result is None:
            return
        with self._lock:
            self._last = result
            self._counts["consolidations"] += 1
        log.info("history_consolidated", path=str(self.archive), **asdict(result))
