"""journald as an async source: ``journalctl --output=json --all`` in a subprocess.

- Reads journalctl's stdout in chunks through asyncio streams (never select() plus a
  buffered readline, which strands lines in Python's buffer), splits lines itself and
  parses them with orjson. A line longer than ``max_line_bytes`` is skipped (through its
  newline), logged and counted, never a crash; so is a line that is not a JSON object.
- Resumes with ``--after-cursor`` (seeking *to* the cursor would repeat that entry on
  every restart). Without a cursor it starts from the last ``initial_lines`` entries.
  :attr:`JournalFollower.cursor` is the ``__CURSOR`` of the last entry handed on; the
  caller persists whatever cursor it has fully processed.
- ``--all`` keeps fields over 4096 bytes (journalctl prints them as null otherwise).
  Fields journalctl prints as byte arrays (not valid UTF-8, control characters) are decoded
  leniently by :func:`entry_text`.
- In follow mode a journalctl that exits is restarted after a backoff (1 s doubling to
  30 s, reset once it has run 10 s), resuming after the last cursor handed on.
- :meth:`JournalFollower.probe` runs ``journalctl -n 0`` first: a missing binary, "No
  journal files were found", insufficient permissions or an unsupported option raise
  :class:`JournalUnavailable` with journalctl's own message.
- Filters are *not* passed to journalctl; the caller applies :func:`entry_filter`.
  Measured with systemd 252: ``--unit`` globs are expanded once, against the units already
  in the journal (a unit that first logs later never matches; a glob matching nothing is an
  error), and ``--follow --lines=N`` with any match (``--unit``, ``--identifier``) that
  matches nothing yet silently drops the first matching entry that arrives later.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fnmatch
import hashlib
import re
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from .lines import LineSplitter

log = structlog.get_logger(__name__)

CHUNK_BYTES = 1 << 18
INITIAL_LINES = 10_000
PROBE_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 2.0
UNIT_FIELDS = ("_SYSTEMD_UNIT", "_SYSTEMD_USER_UNIT", "UNIT", "USER_UNIT", "COREDUMP_UNIT")
"""The fields ``journalctl --unit`` matches; a glob is tried against each of them."""

_UNAVAILABLE = (
    "No journal files were",  # "... found." / "... opened due to insufficient permissions."
    "Permission denied",
    "unrecognized option",
    "invalid option",
)
_CURSOR_ERROR = "cursor"


class JournalUnavailable(Exception):
    """journalctl cannot read a journal here; the message is journalctl's own."""


@dataclass(frozen=True, slots=True)
class JournalBatch:
    entries: list[dict[str, Any]]
    observed_at: float
    """Wall-clock time the batch was read from journalctl."""


def entry_text(entry: dict[str, Any], name: str) -> str:
    """A field as text: byte arrays decoded leniently, the first of repeated values."""
    value = entry.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            try:
                return bytes(value).decode("utf-8", "replace")
            except ValueError:
                return ""
        return entry_text({"v": value[0]}, "v") if value else ""
    return str(value)


def entry_field(entry: dict[str, Any], name: str) -> str:
    """A field as text, the common case (a plain string) without a call into
    :func:`entry_text`."""
    value = entry.get(name)
    if type(value) is str:
        return value
    return entry_text(entry, name)


def entry_key(entry: dict[str, Any]) -> str:
    """The entry's identity: its ``__CURSOR``, else a hash of its fields."""
    cursor = entry.get("__CURSOR")
    if isinstance(cursor, str):
        return cursor
    return "entry:" + hashlib.sha256(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)).hexdigest()


def entry_realtime(entry: dict[str, Any]) -> float | None:
    """``__REALTIME_TIMESTAMP`` in seconds (None if absent or malformed)."""
    value = entry.get("__REALTIME_TIMESTAMP")
    try:
        return int(value) / 1e6 if value is not None else None
    except (TypeError, ValueError):
        return None


def entry_filter(
    units: Sequence[str], identifiers: Sequence[str] = ()
) -> Callable[[dict[str, Any]], str | None]:
    """``accept(entry)`` -> the entry's unit if it passes the filters, else None.

    ``units`` are globs (``journalctl --unit`` semantics: tried against each of
    :data:`UNIT_FIELDS`; the matching value is the unit); empty means every unit, and the
    unit is ``_SYSTEMD_UNIT`` (possibly empty). ``identifiers`` are exact
    ``SYSLOG_IDENTIFIER`` values (``journalctl -t``); empty means any.
    """
    wanted = frozenset(identifiers)
    match = (
        re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in units)).match if units else None
    )

    def accept(entry: dict[str, Any]) -> str | None:
        if wanted:
            ident = entry.get("SYSLOG_IDENTIFIER")
            if not isinstance(ident, str):
                ident = entry_text(entry, "SYSLOG_IDENTIFIER")
            if ident not in wanted:
                return None
        if match is None:
            unit = entry.get("_SYSTEMD_UNIT")
            return unit if isinstance(unit, str) else entry_text(entry, "_SYSTEMD_UNIT")
        for name in UNIT_FIELDS:
            value = entry.get(name)
            if value is not None:
                text = value if isinstance(value, str) else entry_text(entry, name)
                if match(text):
                    return text
        return None

    return accept


def cursor_position(cursor: str | None) -> tuple[str, int] | None:
    """``(seqnum_id, seqnum)`` of a journal cursor, comparable within one seqnum_id."""
    if not cursor:
        return None
    fields = dict(part.split("=", 1) for part in cursor.split(";") if "=" in part)
    try:
        return fields["s"], int(fields["i"], 16)
    except (KeyError, ValueError):
        return None


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the service dies (even by kill -9)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class JournalFollower:
    """journalctl as a stream of entry batches (see the module docstring)."""

    def __init__(
        self,
        *,
        journalctl: str = "journalctl",
        namespace: str = "",
        after_cursor: str | None = None,
        initial_lines: int = INITIAL_LINES,
        max_line_bytes: int = 1_048_576,
        restart_initial_s: float = 1.0,
        restart_max_s: float = 30.0,
        stable_after_s: float = 10.0,
    ) -> None:
        self.journalctl = journalctl
        self.namespace = namespace
        self.cursor = after_cursor
        self.initial_lines = initial_lines
        self.max_line_bytes = max_line_bytes
        self.restart_initial_s = restart_initial_s
        self.restart_max_s = restart_max_s
        self.stable_after_s = stable_after_s
        self.pid: int | None = None
        self.restarts = 0
        self.lines_skipped = 0
        self.lines_malformed = 0
        self.entries_read = 0
        self.last_exit: str | None = None
        self._stream: asyncio.StreamReader | None = None
        self._lines: LineSplitter | None = None

    # -- command lines ---------------------------------------------------------------------
    def _base(self) -> list[str]:
        cmd = [self.journalctl]
        if self.namespace:
            cmd.append(f"--namespace={self.namespace}")
        return cmd

    def command(self, *, follow: bool) -> list[str]:
        cmd = [*self._base(), "--output=json", "--all", "--no-pager", "--quiet"]
        if follow:
            cmd.append("--follow")
        if self.cursor:
            cmd.append(f"--after-cursor={self.cursor}")
        else:
            cmd.append(f"--lines={self.initial_lines}")
        return cmd

    # -- availability ----------------------------------------------------------------------
    async def probe(self) -> None:
        """Raise :class:`JournalUnavailable` unless journalctl can read a journal here."""
        cmd = [*self._base(), "--lines=0", "--no-pager"]
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as err:
            raise JournalUnavailable(f"cannot run {self.journalctl}: {err}") from None
        try:
            _, err_bytes = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise JournalUnavailable(
                f"{self.journalctl} did not answer within {PROBE_TIMEOUT_S:g}s"
            ) from None
        message = _clean(err_bytes)
        if proc.returncode != 0 or any(s in message for s in _UNAVAILABLE[:2]):
            raise JournalUnavailable(
                message or f"{self.journalctl} exited with status {proc.returncode}"
            )
        if message:
            log.warning("journalctl_notice", message=message)

    # -- reading ---------------------------------------------------------------------------
    async def batches(self, *, follow: bool = True) -> AsyncIterator[JournalBatch]:
        """Entry batches until cancelled (``follow``) or the end of the journal."""
        delay = self.restart_initial_s
        while True:
            started = time.monotonic()
            proc = await self._spawn(follow)
            stderr_tail: deque[bytes] = deque(maxlen=20)
            drain = asyncio.create_task(_drain(proc.stderr, stderr_tail))
            try:
                assert proc.stdout is not None
                async for batch in self._read(proc.stdout):
                    yield batch
                code = await proc.wait()
                await drain
            finally:
                await self._stop(proc, drain)
            message = _clean(b"".join(stderr_tail))
            self.last_exit = f"status {code}" + (f": {message}" if message else "")
            if any(s in message for s in _UNAVAILABLE):
                raise JournalUnavailable(message)
            if _CURSOR_ERROR in message.lower() and self.cursor:
                log.error("journal_cursor_rejected", cursor=self.cursor, message=message)
                self.cursor = None
            elif not follow:
                if code != 0:
                    log.error("journalctl_failed", status=code, message=message)
                return
            if time.monotonic() - started >= self.stable_after_s:
                delay = self.restart_initial_s
            self.restarts += 1
            log.warning(
                "journalctl_exited",
                status=code,
                message=message,
                restart_in_s=delay,
                cursor=self.cursor,
            )
            await asyncio.sleep(delay)
            delay = min(self.restart_max_s, delay * 2)

    async def _spawn(self, follow: bool) -> asyncio.subprocess.Process:
        cmd = self.command(follow=follow)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=CHUNK_BYTES,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as err:
            raise JournalUnavailable(f"cannot run {self.journalctl}: {err}") from None
        self.pid = proc.pid
        log.info("journalctl_started", pid=proc.pid, command=cmd)
        return proc

    async def _stop(self, proc: asyncio.subprocess.Process, drain: asyncio.Task[None]) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        drain.cancel()
        await asyncio.wait({drain})
        self.pid = None

    def unread(self) -> int:
        """Bytes journalctl wrote that no batch holds yet: received but not read from the
        stream (its buffer: asyncio has no public accessor) and a partial line held. A
        reader that judges quiet by a timer asks this first: in a stalled loop, data and
        deadline become ready in the same turn and the data is handed on callbacks later."""
        stream, lines = self._stream, self._lines
        if stream is None or lines is None:
            return 0
        return len(getattr(stream, "_buffer", b"")) + lines.held

    async def _read(self, stream: asyncio.StreamReader) -> AsyncIterator[JournalBatch]:
        lines = LineSplitter(self.max_line_bytes, lambda _offset, size: self._skip_long(size))
        self._stream, self._lines = stream, lines
        loads = orjson.loads
        while True:
            chunk = await stream.read(CHUNK_BYTES)
            if not chunk:
                if lines.held:
                    log.warning("journal_partial_line_dropped", bytes=lines.held)
                return
            entries: list[dict[str, Any]] = []
            for _offset, line in lines.feed(chunk):
                try:
                    entry = loads(line)
                except orjson.JSONDecodeError:
                    entry = None
                if not isinstance(entry, dict):
                    if line.strip():
                        self.lines_malformed += 1
                        log.warning("journal_line_malformed", line=line[:200])
                    continue
                entries.append(entry)
            if entries:
                self.entries_read += len(entries)
                cursor = entries[-1].get("__CURSOR")
                if isinstance(cursor, str):
                    self.cursor = cursor
                yield JournalBatch(entries, time.time())

    def _skip_long(self, size: int) -> None:
        self.lines_skipped += 1
        log.warning("journal_line_too_long", bytes=size, limit=self.max_line_bytes)


async def _drain(stream: asyncio.StreamReader | None, tail: deque[bytes]) -> None:
    if stream is None:
        return
    while True:
        line = await stream.readline()
        if not line:
            return
        tail.append(line)


def _clean(data: bytes) -> str:
    return " ".join(data.decode("utf-8", "replace").split())
