"""module_discovery's checkpoint: an append-only journal of the known modules.

``state_dir/module_discovery/modules.jsonl`` holds a header line (the format), then one
line per change of a module: ``{"p": path}`` known, ``{"p": path, "o": name}`` known with
its ``new_module`` gap open, ``{"p": path, "gone": 1}`` forgotten. The last line per path
wins. A change costs one line, however many modules are known; the whole set is written
only as a compaction: at the first baseline, and when the journal holds more than twice
the known modules plus :data:`COMPACT_SLACK` lines (then from a copy taken in the loop,
serialised and written atomically on a worker thread).

Saving keeps the monitors' rule (:class:`~.ledger.Debouncer`): changes are coalesced for
``delay``, a batch is written only once the bus acknowledged that every signal published
before it is in the feed (``ctx.delivered()``), and batches are written in the order they
were taken (a later batch writes the earlier ones first), never skipped. :meth:`flush`
writes everything at once (on exit). A torn last line (kill -9 mid-append) is cut at load;
an invalid line is skipped (logged) and the journal compacted.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from ..checkpoint import CheckpointStore, atomic_write_bytes, loads_json
from ..durable import cut_torn_tail

FORMAT = 2
"""Format 1 was the whole set in ``modules.json``; it is still read (then compacted)."""
COMPACT_SLACK = 1000
NAME = "modules"

State = tuple[set[str], dict[str, str]]
"""Known modules (absolute paths) and the open gaps (path -> gap name)."""


@dataclass(slots=True)
class _Batch:
    seq: int
    changes: list[tuple[str, str | bool | None]]
    """(path, its open gap's name / None: known without one / False: forgotten)."""
    whole: State | None = None
    """A compaction: copies of the whole state, written instead of ``changes``."""

    def body(self) -> bytes:
        if self.whole is None:
            return b"".join(_line(p, state) for p, state in self.changes)
        known, opened = self.whole
        return b"".join(_line(p, opened.get(p)) for p in sorted(known))


def _line(path: str, state: str | bool | None) -> bytes:
    item: dict[str, Any] = {"p": path}
    if state is False:
        item["gone"] = 1
    elif isinstance(state, str):
        item["o"] = state
    try:
        return orjson.dumps(item) + b"\n"
    except TypeError:  # a file name with undecodable bytes (lone surrogates): ASCII escapes
        return json.dumps(item, ensure_ascii=True).encode() + b"\n"


class ModuleJournal:
    """Loads and saves one monitor's known modules and open gaps (see module docstring)."""

    def __init__(
        self,
        store: CheckpointStore,
        state: Callable[[], State | None],
        *,
        delay: float,
        delivered: Callable[[], Awaitable[Any]] | None = None,
        log: Any = None,
    ) -> None:
        self.store = store
        self.path = store.directory / f"{NAME}.jsonl"
        self.state = state
        self.delay = delay
        self.delivered = delivered
        self.log = log
        self._header = orjson.dumps({"format": FORMAT}) + b"\n"
        self._dirty: dict[str, None] = {}
        self._rewrite = False
        self._lines = 0
        """Lines the journal will hold once every batch taken so far is written."""
        self._seq = 0
        self._queue: deque[_Batch] = deque()
        self._lock = threading.Lock()
        self._handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def _saving(self) -> bool:
        return self.store.writable and not self.store.frozen

    # -- load ------------------------------------------------------------------------------
    def load(self) -> State | None:
        """The saved state, or None if there is none (no baseline yet)."""
        if not self.store.writable:
            return None
        try:
            cut_torn_tail(self.path)
            data = self.path.read_bytes()
        except FileNotFoundError:
            return self._load_format_1()
        except OSError as err:
            self._error("module_journal_unreadable", err)
            return None
        lines = data.split(b"\n")[:-1]
        if not lines or lines[0] + b"\n" != self._header:
            if self.log is not None:
                self.log.error("module_checkpoint_invalid", path=str(self.path))
            return None
        known: set[str] = set()
        opened: dict[str, str] = {}
        invalid = 0
        for raw in lines[1:]:
            try:
                item = loads_json(raw)
                path = item["p"]
                if not isinstance(path, str):
                    raise TypeError(path)
            except (ValueError, KeyError, TypeError):
                invalid += 1
                continue
            opened.pop(path, None)
            if item.get("gone"):
                known.discard(path)
                continue
            known.add(path)
            if isinstance(item.get("o"), str):
                opened[path] = item["o"]
        self._lines = len(lines)
        if invalid:
            if self.log is not None:
                self.log.warning("module_journal_invalid_lines", path=str(self.path), lines=invalid)
            self._rewrite = True
        return known, opened

    def _load_format_1(self) -> State | None:
        data = self.store.load(NAME)
        if not isinstance(data, dict) or data.get("format") != 1:
            return None
        known, opened = data.get("known"), data.get("open")
        if not isinstance(known, list) or not isinstance(opened, dict):
            if self.log is not None:
                self.log.error("module_checkpoint_invalid", path=str(self.store.path(NAME)))
            return None
        paths = {str(p) for p in known}
        self._rewrite = True  # into the journal at the first save
        return paths, {str(k): str(v) for k, v in opened.items() if str(k) in paths}

    # -- save ------------------------------------------------------------------------------
    def mark(self, path: str | None = None) -> None:
        """``path`` changed; saved within ``delay`` with whatever else is pending (without
        ``path``: only what is pending, e.g. the compaction of a journal just loaded)."""
        if path is not None:
            self._dirty[path] = None
        if self._handle is None and (self._rewrite or self._dirty):
            self._handle = asyncio.get_running_loop().call_later(self.delay, self._fire)

    def mark_all(self) -> None:
        """Save the whole state (a new baseline) within ``delay``."""
        self._rewrite = True
        self.mark()

    def _take(self) -> _Batch | None:
        current = self.state()
        if current is None or not (self._rewrite or self._dirty):
            return None
        known, opened = current
        self._seq += 1
        if self._rewrite or self._lines + len(self._dirty) > 2 * len(known) + COMPACT_SLACK:
            batch = _Batch(self._seq, [], (set(known), dict(opened)))
            self._lines = 1 + len(known)
        else:
            changes = [(p, opened.get(p) if p in known else False) for p in self._dirty]
            batch = _Batch(self._seq, changes)
            self._lines += len(changes)
        self._rewrite = False
        self._dirty = {}
        self._queue.append(batch)
        return batch

    def _fire(self) -> None:
        self._handle = None
        batch = self._take()
        if batch is None:
            return
        task = asyncio.ensure_future(self._save(batch.seq))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _save(self, seq: int) -> None:
        if self.delivered is not None:
            await self.delivered()  # the batch's signals are in the feed first
        await anyio.to_thread.run_sync(self._write_upto, seq)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._error("checkpoint_write_failed", task.exception())

    def _write_upto(self, seq: int) -> None:
        """Write, in order, every batch taken up to ``seq`` that is not written yet."""
        with self._lock:
            while self._queue and self._queue[0].seq <= seq:
                self._write(self._queue.popleft())

    def _write(self, batch: _Batch) -> None:
        if not self._saving:
            return
        body = batch.body()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if batch.whole is not None:
                atomic_write_bytes(self.path, self._header + body)
                self.store.path(NAME).unlink(missing_ok=True)  # format 1, now compacted
                return
            with open(self.path, "ab") as fh:
                if fh.tell() == 0:
                    fh.write(self._header)
                fh.write(body)
        except OSError as err:
            self._error("module_journal_write_failed", err)

    def flush(self) -> None:
        """Write everything now, synchronously (on exit)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._take()
        self._write_upto(self._seq)

    def _error(self, event: str, err: BaseException | None) -> None:
        if self.log is not None:
            self.log.error(event, path=str(self.path), error=str(err))
