"""Checkpointed file tailer: lines (or JSON objects) of one file, as async batches.

* Identity of a file: device, inode, and a fingerprint (sha256 of its first up-to-256
  bytes, extended as the file grows). The checkpoint holds the identity and the offset just
  past the last line handed on; it is saved atomically when the consumer asks for the next
  batch (throttled to ``checkpoint_interval_s``), when idle after catching up to EOF (at
  most ``checkpoint_interval_s`` after the previous save), on close, and on
  :meth:`FileTailer.save_checkpoint`. So delivery is at-least-once across kill -9 and
  exact across a clean stop.
* On start, a checkpoint resumes only if the file's fingerprint matches and the file is
  not shorter than the offset, and either the inode matches or the fingerprint is a full
  256 bytes (a copy of the same file). Otherwise the file is read from 0; no checkpoint
  means the whole file is history and is read from 0, as is a file that appears later.
* Following uses inotify on the parent directory (via :class:`RecursiveWatcher`,
  non-recursive, which also waits for a missing parent); there is no polling.
* Truncation (size below our position, or the first bytes changed: copytruncate) restarts
  at 0. Rotation (our name renamed or deleted, or replaced by another inode): the old file
  is read to EOF through its open descriptor and kept open while the new file is empty
  (a writer may still append to the renamed file); once the new file has data the old one
  is drained a last time, closed, and the new file is read from 0. An unlinked old file is
  closed as soon as it is drained.
* A partial last line is held until its newline arrives. Reads are bounded chunks; a line
  longer than ``max_line_bytes`` is discarded without being buffered whole. With
  ``parse_json``, lines that are not JSON objects are skipped (blank lines silently).

Use ``async with contextlib.aclosing(tailer.batches()) as it`` so the final checkpoint is
written when the consumer stops.

File identity and checkpoint matching are in :mod:`.tail_identity`, lines made into records
(and :class:`TailBatch`, re-exported here) in :mod:`.tail_records`; this module follows the
file: opening, rotation, truncation, reading, saving checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import structlog

from ..checkpoint import CheckpointStore
from .lines import LineSplitter
from .tail_identity import (
    FINGERPRINT_BYTES,
    Checkpoint,
    checkpoint_fields,
    fingerprint,
    open_regular,
    resume_verdict,
)
from .tail_records import RecordParser, TailBatch
from .watcher import FileEvent, FileEventKind, RecursiveWatcher

__all__ = ["FINGERPRINT_BYTES", "READ_CHUNK_BYTES", "FileTailer", "TailBatch", "fingerprint"]

log = structlog.get_logger(__name__)

READ_CHUNK_BYTES = 65536
_YIELD_EVERY = 16


class FileTailer:
    """Follow one file with a durable offset. See the module docstring for semantics."""

    def __init__(
        self,
        path: Path,
        checkpoints: CheckpointStore,
        *,
        name: str = "tail",
        max_line_bytes: int = 1_048_576,
        parse_json: bool = False,
        checkpoint_interval_s: float = 0.5,
        read_chunk_bytes: int = READ_CHUNK_BYTES,
    ) -> None:
        self.path = Path(os.path.abspath(path))
        self._checkpoints = checkpoints
        self._name = name
        self._interval = checkpoint_interval_s
        self._chunk = read_chunk_bytes
        self.stats: dict[str, int] = {
            "lines": 0,
            "bytes": 0,
            "skipped_long": 0,
            "skipped_malformed": 0,
            "rotations": 0,
            "truncations": 0,
        }
        self._fd: int | None = None
        self._dev = 0
        self._ino = 0
        self._head = b""
        self._parser = RecordParser(
            self.path, self.stats, parse_json=parse_json, max_line_bytes=max_line_bytes
        )
        self._lines = LineSplitter(max_line_bytes, self._parser.too_long)
        """Offsets (past the last complete line handed on; how far the file was read) and
        the partial last line."""
        self._checkpoint_applied = False
        self._had_file = False
        self._unreadable = False
        self._saved: Checkpoint | None = None
        self._last_save = float("-inf")
        self.watching = False
        """True while the inotify watch (on the parent or the nearest existing ancestor) is
        in place: a file created from then on will be read."""

    # -- public API ----------------------------------------------------------------------
    async def batches(self, *, follow: bool = True) -> AsyncIterator[TailBatch]:
        """Batches of complete records; ``follow=False`` stops at the current EOF."""
        source = self._follow() if follow else self._once()
        try:
            async for batch in source:
                yield batch
                self._maybe_save()
        finally:
            await source.aclose()
            self.save_checkpoint()
            self._close()

    @property
    def file_open(self) -> bool:
        """Whether a file is open (being read or finished after a rotation)."""
        return self._fd is not None

    def save_checkpoint(self) -> None:
        """Persist the identity and offset of everything handed on so far."""
        state = self._state()
        if state is None or state == self._saved:
            return
        try:
            self._checkpoints.save(self._name, checkpoint_fields(self.path, state, time.time()))
        except OSError as err:
            log.error("checkpoint_save_failed", name=self._name, error=str(err))
            return
        self._saved = state
        self._last_save = time.monotonic()

    # -- drivers -------------------------------------------------------------------------
    async def _once(self) -> AsyncIterator[TailBatch]:
        if not self._open():
            return
        for n, batch in enumerate(self._read_available(time.time()), 1):
            yield batch
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    async def _follow(self) -> AsyncIterator[TailBatch]:
        target = self.path
        watcher = RecursiveWatcher(
            target.parent, recursive=False, include=lambda p: p == target, attrib=True
        )
        async with watcher:
            events = watcher.__aiter__()
            pending: asyncio.Task[FileEvent] | None = None
            self.watching = True
            try:
                while True:
                    delay = self._save_delay()
                    if pending is None and delay is None:
                        event = await events.__anext__()
                    else:
                        if pending is None:
                            pending = asyncio.ensure_future(events.__anext__())
                        done, _ = await asyncio.wait({pending}, timeout=delay)
                        if not done:
                            self.save_checkpoint()
                            continue
                        event, pending = pending.result(), None
                    for n, batch in enumerate(self._on_event(event), 1):
                        yield batch
                        if n % _YIELD_EVERY == 0:
                            await asyncio.sleep(0)
            finally:
                self.watching = False
                if pending is not None:
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await pending
                await events.aclose()  # type: ignore[attr-defined]

    def _on_event(self, event: FileEvent) -> Iterator[TailBatch]:
        if event.kind is FileEventKind.DELETED or event.path != self.path:
            yield from self._detach(event.observed_at)
        else:
            yield from self._sync(event.observed_at)

    # -- file state ----------------------------------------------------------------------
    def _sync(self, observed_at: float) -> Iterator[TailBatch]:
        """Something happened to our path: handle replacement, then read to EOF."""
        if self._fd is not None:
            st = self._stat_path()
            if st is not None and (st.st_dev, st.st_ino) != (self._dev, self._ino):
                yield from self._read_available(observed_at)
                if not self._ready_to_switch():
                    return
                yield from self._read_available(observed_at)
                self._close(reason="rotated")
        if self._fd is None and not self._open():
            return
        yield from self._read_available(observed_at)

    def _detach(self, observed_at: float) -> Iterator[TailBatch]:
        """Our name was renamed away or deleted: finish what the open descriptor has."""
        if self._fd is None:
            return
        yield from self._read_available(observed_at)
        try:
            linked = os.fstat(self._fd).st_nlink > 0
        except OSError:
            linked = False
        if not linked:
            self._close(reason="deleted")
        else:
            log.info("tail_file_renamed", path=str(self.path), offset=self._lines.offset)

    def _ready_to_switch(self) -> bool:
        """Switch to the new file once it has data, or at once if the old one is unlinked."""
        st = self._stat_path()
        if st is not None and st.st_size > 0:
            return True
        assert self._fd is not None
        try:
            return os.fstat(self._fd).st_nlink == 0
        except OSError:
            return True

    def _stat_path(self) -> os.stat_result | None:
        try:
            return os.stat(self.path)
        except OSError:
            return None

    def _open(self) -> bool:
        try:
            opened = open_regular(self.path)
        except OSError as err:
            self._unreadable_once(err)
            return False
        if opened is None:
            return False
        st = opened.st
        self._unreadable = False
        self._fd, self._dev, self._ino, self._head = opened.fd, st.st_dev, st.st_ino, opened.head
        self._reset(0)
        if self._had_file:
            self.stats["rotations"] += 1
        self._had_file = True
        if not self._checkpoint_applied:
            self._checkpoint_applied = True
            self._apply_checkpoint(st)
        log.info(
            "tail_opened",
            path=str(self.path),
            inode=st.st_ino,
            offset=self._lines.offset,
            size=st.st_size,
        )
        return True

    def _unreadable_once(self, err: OSError) -> None:
        if not self._unreadable:
            log.error(
                "tail_unreadable",
                path=str(self.path),
                error=str(err),
                hint="waiting for the file to change",
            )
        self._unreadable = True

    def _apply_checkpoint(self, st: os.stat_result) -> None:
        data = self._checkpoints.load(self._name)
        if data is None:
            return
        try:
            offset, reason = resume_verdict(data, st, self._head)
        except (KeyError, TypeError, ValueError) as err:
            log.warning("tail_checkpoint_invalid", name=self._name, error=str(err))
            return
        if reason == "resumed":
            self._reset(offset)
            log.info("tail_resumed", path=str(self.path), offset=offset)
            return
        if reason == "truncated":
            self.stats["truncations"] += 1
        log.info(
            "tail_checkpoint_mismatch",
            path=str(self.path),
            reason=reason,
            checkpoint_offset=offset,
            size=st.st_size,
        )

    def _reset(self, offset: int) -> None:
        self._lines.reset(offset)

    def _close(self, reason: str = "stopped") -> None:
        if self._fd is None:
            return
        if self._lines.held:
            log.warning(
                "tail_partial_line_dropped",
                path=str(self.path),
                offset=self._lines.offset,
                length=self._lines.held,
                reason=reason,
            )
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None
        self._lines.drop_partial()

    # -- reading -------------------------------------------------------------------------
    def _read_available(self, observed_at: float) -> Iterator[TailBatch]:
        """Read from the current position to EOF, one batch per chunk with lines."""
        if self._fd is None or not self._check_continuity():
            return
        while self._fd is not None:
            try:
                chunk = os.pread(self._fd, self._chunk, self._lines.position)
            except OSError as err:
                log.error(
                    "tail_read_failed",
                    path=str(self.path),
                    offset=self._lines.position,
                    error=str(err),
                )
                return
            if not chunk:
                return
            records = self._consume(chunk)
            if records:
                yield TailBatch(records, observed_at, self.path, self._lines.offset)

    def _check_continuity(self) -> bool:
        """Detect truncation (also copytruncate refilled past our offset); extend the head."""
        assert self._fd is not None
        try:
            size = os.fstat(self._fd).st_size
            head = os.pread(self._fd, FINGERPRINT_BYTES, 0)
        except OSError as err:
            log.error("tail_read_failed", path=str(self.path), error=str(err))
            return False
        if size < self._lines.position or not head.startswith(self._head):
            log.warning("tail_truncated", path=str(self.path), offset=self._lines.offset, size=size)
            self.stats["truncations"] += 1
            self._reset(0)
        self._head = head
        return True

    def _consume(self, chunk: bytes) -> list[Any]:
        """Complete lines of a chunk (:class:`~.lines.LineSplitter`), parsed."""
        self.stats["bytes"] += len(chunk)
        return self._parser.records([line for _offset, line in self._lines.feed(chunk)])

    # -- checkpoints ---------------------------------------------------------------------
    def _state(self) -> Checkpoint | None:
        """What a checkpoint would hold now; None with no file open (the last one stays)."""
        if self._fd is None:
            return None
        return (self._dev, self._ino, fingerprint(self._head), len(self._head), self._lines.offset)

    def _save_delay(self) -> float | None:
        """Seconds until a checkpoint is due, or None if nothing changed since the last."""
        state = self._state()
        if state is None or state == self._saved:
            return None
        return max(0.0, self._interval - (time.monotonic() - self._last_save))

    def _maybe_save(self) -> None:
        if time.monotonic() - self._last_save >= self._interval:
            self.save_checkpoint()
