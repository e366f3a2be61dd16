"""Python tracebacks put back together from line streams, and parsed. Pure: no I/O, no clock.

A service's stderr reaches journald one line per entry, interleaved with other processes'
lines. :class:`TracebackAssembler` keeps one small state machine per stream key (e.g. unit,
PID, identifier, stream id) and assembles, in the manner of Fluent Bit's Python multiline
rule but stricter:

- a record starts at ``Traceback (most recent call last):``, at ``+ Exception Group
  Traceback (most recent call last):``, or at a bare ``  File "x.py", line N`` (the location
  line a ``SyntaxError`` raised by the interpreter prints without a header);
- indented lines (frames, code, ``^^^^`` carets, ``[Previous line repeated ...]``) continue it;
- the first unindented line that reads ``dotted.Type`` or ``dotted.Type: message`` ends a
  block; lines right after it (before any blank line) are the rest of a multi-line message;
- a blank line then ``During handling of the above exception...`` or ``The above exception
  was the direct cause...`` chains another block; exception-group output (``|``/``+``
  framed rows) is taken whole;
- after the exception line the record is complete once the next line of its stream is not
  a chain continuation, or after ``chain_grace_s`` of quiet; a record that stops before its
  exception line is flushed as incomplete after ``flush_after_s`` of quiet.

Memory is bounded however long a record is (a deep recursion prints thousands of frames):
the first :data:`HEAD_LINES` lines are kept, then a ring buffer of the last
:data:`TAIL_LINES`; of the lines pushed out of the middle only unindented ones (exception
lines, chain markers, headers; at most :data:`MAX_SKELETON_LINES`) are kept, so the final
``Type: message`` line and the chain structure still parse. The text notes the elision with
an indented ``[... N lines elided ...]`` line after the head.

Only structure counts, never keywords: an ordinary line never starts a record. The clock is
passed in (``now``) so callers and tests decide what time is.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .traceback_text import (
    _EXC_LINE,
    _FRAME,
    _GROUP_ROW,
    _SYNTAX_LOCATION,
    CHAIN_MARKERS,
    GROUP_HEADER,
    HEADER,
    INCOMPLETE_TYPE,
    ExceptionRecord,
    Frame,
    Traceback,
    _is_chain_marker,
    _is_group_header,
    format_records,
    is_header,
    parse_exception_line,
    parse_traceback_lines,
)

__all__ = [
    "CHAIN_MARKERS", "GROUP_HEADER", "HEADER", "INCOMPLETE_TYPE", "Assembled",
    "ExceptionRecord", "Frame", "Traceback", "TracebackAssembler", "assemble_text",
    "format_records", "is_header", "parse_exception_line", "parse_traceback_lines",
]

HEAD_LINES = 1000
"""First lines of a record always kept."""
TAIL_LINES = 1000
"""Last lines of a record kept (a ring buffer) once the head is full."""
MAX_LINES = HEAD_LINES + TAIL_LINES
"""Lines of a record kept in full; a longer one loses its middle (see the module doc)."""
MAX_SKELETON_LINES = 100
"""Unindented lines (exception lines, chain markers, headers) kept from the elided middle."""
MAX_RECORD_LINES = 100_000
"""A record still continuing after this many lines is closed as it stands."""
MAX_MESSAGE_LINES = 50
"""Continuation lines of a multi-line exception message kept before the record closes."""
MAX_STREAMS = 10_000
"""Streams with a record in progress; past this the oldest is flushed."""
RECENT_KEEP = 64
"""Completed records remembered per assembler, to glue a chain whose tail came late."""

_FRAMES, _AFTER, _CHAIN, _GROUP = range(4)
_HEADER_TAIL = "(most recent call last):"
JITTER_FACTOR = 3.0
"""After the exception line, wait this many times the record's longest gap between lines
(when that exceeds the chain grace) before calling it complete."""
_DIGITS = re.compile(r"\d+")


def prefix_pattern(prefix: str) -> re.Pattern[str]:
    """A pattern for a log prefix seen before a traceback header (``2026-12-01 10:00:07,123
    ERROR app[42]: ``): the same text with any digits where it had digits, so the next
    lines' prefixes (other times, same source) match and the level must be the same."""
    parts = _DIGITS.split(prefix)
    return re.compile(r"\d+".join(re.escape(part) for part in parts))


@dataclass(slots=True)
class Assembled:
    """A finished record with the caller's metadata of its first and last line."""

    key: Hashable
    traceback: Traceback
    first_meta: Any
    last_meta: Any
    absorbed: tuple[Assembled, ...] = ()
    """Held records dropped because this one holds them (a logged record absorbed in
    time)."""
    rejoined: bool = False
    """Its head was finished (and reported) alone before its chained tail came."""


@dataclass(slots=True)
class _Pending:
    lines: list[str]
    """The head: every line until :data:`HEAD_LINES`."""
    state: int
    first_meta: Any
    last_meta: Any
    last_at: float
    headerless: bool = False
    blank: bool = False
    message_lines: int = 0
    trailer_ok: bool = True
    tail: deque[str] | None = None
    """The last :data:`TAIL_LINES` lines once the head is full."""
    skeleton: list[str] = field(default_factory=list)
    """Unindented lines pushed out of the tail (the chain structure of the middle)."""
    elided: int = 0
    """Lines pushed out of the tail and not kept."""
    count: int = 0
    """Lines taken since the record started."""
    max_gap: float = 0.0
    """The longest quiet between two of its lines so far (arrival jitter)."""
    rejoined: bool = False

    def add(self, line: str) -> None:
        self.count += 1
        if self.tail is None:
            if len(self.lines) < HEAD_LINES:
                self.lines.append(line)
                return
            self.tail = deque(maxlen=TAIL_LINES)
        if len(self.tail) == TAIL_LINES:
            out = self.tail[0]
            if out and out[0] not in " \t" and len(self.skeleton) < MAX_SKELETON_LINES:
                self.skeleton.append(out)
            else:
                self.elided += 1
        self.tail.append(line)

    def text_lines(self) -> list[str]:
        """The head, the elision note, the kept middle lines, the tail."""
        if self.tail is None:
            return self.lines
        note = [f"  [... {self.elided} lines elided ...]"] if self.elided else []
        return [*self.lines, *note, *self.skeleton, *self.tail]


@dataclass(slots=True)
class _Recent:
    lines: list[str]
    done_at: float


# -- the assembler -------------------------------------------------------------------------
@dataclass
class TracebackAssembler:
    """Per-stream traceback assembly (see the module docstring)."""

    flush_after_s: float = 0.5
    chain_grace_s: float = 0.02
    completed: list[Assembled] = field(default_factory=list)
    """Finished records, appended by :meth:`feed` and :meth:`flush`; the caller drains it."""

    def __post_init__(self) -> None:
        self._pending: dict[Hashable, _Pending] = {}
        self._recent: dict[Hashable, _Recent] = {}
        self._prefix: dict[Hashable, tuple[re.Pattern[str], re.Pattern[str]]] = {}
        self._held: dict[Hashable, tuple[Assembled, float]] = {}
        self.absorbed = 0
        """Held records dropped because the next one of their stream holds them as a cause."""

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_first_metas(self) -> Iterator[tuple[Hashable, Any]]:
        """``(key, first_meta)`` of every record in progress."""
        for key, p in self._pending.items():
            yield key, p.first_meta
        for key, (held, _) in self._held.items():
            yield key, held.first_meta

    def next_deadline(self) -> float | None:
        """When :meth:`flush` has something to do (None: nothing in progress)."""
        if not self._pending and not self._held:
            return None
        return min(
            [self._deadline(p) for p in self._pending.values()]
            + [at + self.flush_after_s for k, (_, at) in self._held.items()
               if k not in self._pending]
        )

    def _deadline(self, p: _Pending) -> float:
        if p.state != _AFTER:
            return p.last_at + self.flush_after_s
        # A stream whose lines came in one burst is done after chain_grace_s; one whose
        # lines arrived with jitter (the journal interleaving processes) may still send
        # the chained part: wait for a few of its own gaps (at most flush_after_s).
        jitter = min(JITTER_FACTOR * p.max_gap, self.flush_after_s)
        return p.last_at + max(self.chain_grace_s, jitter)

    def may_take(self, line: str) -> bool:
        """False if :meth:`feed` would surely refuse ``line`` (no record in progress and
        the line cannot start one): lets callers skip building a key and metadata."""
        if self._pending or is_header(line) or _HEADER_TAIL in line:
            return True
        if line.startswith(" ") and _SYNTAX_LOCATION.match(line) is not None:
            return True
        return bool(self._recent) and line.startswith(("During", "The above"))

    def feed(self, key: Hashable, line: str, now: float, meta: Any = None) -> bool:
        """Take one line of stream ``key``; True if it belongs to a traceback."""
        line, foreign = self._unprefix(key, line)
        p = self._pending.get(key)
        if p is not None:
            if not foreign and self._continues(p, line):
                p.add(line)
                p.max_gap = max(p.max_gap, now - p.last_at)
                p.last_at = now
                p.last_meta = meta
                if p.count >= MAX_RECORD_LINES:
                    self._finish(key)
                return True
            self._finish(key, followed=is_header(line))
        return self._start(key, line, now, meta)

    def _unprefix(self, key: Hashable, line: str) -> tuple[str, bool]:
        """The line without the log prefix its stream's traceback header carried, and
        whether it lacks that prefix (then it is another log record: no continuation)."""
        patterns = self._prefix.get(key)
        if patterns is not None:
            m = patterns[0].match(line)
            if m is not None:
                return line[m.end() :], False
            if patterns[1].fullmatch(line.rstrip()):
                return "", False  # the prefix of an empty line, its trailing space trimmed
            del self._prefix[key]
            foreign = True
        else:
            foreign = False
        at = line.find(_HEADER_TAIL)
        if at > 0 and not is_header(line) and not _GROUP_ROW.match(line):
            starts = [line.rfind(word, 0, at) for word in ("+ Exception Group", "Traceback")]
            start = min((i for i in starts if i > 0 and is_header(line[i:])), default=-1)
            core = line[:start].rstrip()
            if start > 0 and core:
                prefix = line[: len(core) + 1]  # up to one separating space
                if len(self._prefix) >= MAX_STREAMS:
                    del self._prefix[next(iter(self._prefix))]
                self._prefix[key] = (prefix_pattern(prefix), prefix_pattern(core))
                return line[len(prefix) :], False
        return line, foreign

    def flush(
        self, now: float, *, force: bool = False, keys: Iterable[Hashable] | None = None
    ) -> int:
        """Finish records quiet past their deadline (all of them with ``force``, or only
        ``keys``); returns how many were finished."""
        if keys is not None:
            due = [k for k in keys if k in self._pending]
        elif force:
            due = list(self._pending)
        else:
            due = [k for k, p in self._pending.items() if now >= self._deadline(p)]
        for key in due:
            self._finish(key)
        if keys is not None:
            held = [k for k in keys if k in self._held]
        elif force:
            held = list(self._held)
        else:
            held = [
                k for k, (_, at) in self._held.items()
                if k not in self._pending and now >= at + self.flush_after_s
            ]
        for key in held:
            self.completed.append(self._held.pop(key)[0])
        if self._recent:
            horizon = now - self.flush_after_s
            for key in [k for k, r in self._recent.items() if r.done_at < horizon]:
                del self._recent[key]
        return len(due)

    # -- transitions -----------------------------------------------------------------------
    def _start(self, key: Hashable, line: str, now: float, meta: Any) -> bool:
        if is_header(line):
            state = _GROUP if _is_group_header(line) else _FRAMES
            self._open(key, _Pending([line], state, meta, meta, now))
            return True
        if line.startswith(" ") and _SYNTAX_LOCATION.match(line):
            self._open(key, _Pending([line], _FRAMES, meta, meta, now, headerless=True))
            return True
        recent = self._recent.get(key)
        if recent is not None and _is_chain_marker(line):
            # The tail of a chain arrived after its head was already finished: keep the
            # head's text so the chain parses whole (the head was reported on its own).
            del self._recent[key]
            self._open(key, _Pending([*recent.lines, "", line], _CHAIN, meta, meta, now,
                                     rejoined=True))
            return True
        return False

    def _open(self, key: Hashable, pending: _Pending) -> None:
        if len(self._pending) >= MAX_STREAMS:
            oldest = min(self._pending, key=lambda k: self._pending[k].last_at)
            self._finish(oldest)
        self._pending[key] = pending

    def _continues(self, p: _Pending, line: str) -> bool:
        state = p.state
        if state == _FRAMES:
            if not line or line[0] in " \t":
                return True
            if _EXC_LINE.match(line):
                p.state, p.blank, p.message_lines, p.trailer_ok = _AFTER, False, 0, True
                return True
            return False
        if state == _AFTER:
            return self._after(p, line)
        if state == _CHAIN:
            if not line.strip():
                return True
            if is_header(line):
                p.state = _GROUP if _is_group_header(line) else _FRAMES
                return True
            return False
        # _GROUP: framed rows continue; a blank line may lead to a chain marker
        if _GROUP_ROW.match(line):
            return True
        if not line.strip():
            p.state, p.blank, p.trailer_ok = _AFTER, True, False
            return True
        return False

    def _after(self, p: _Pending, line: str) -> bool:
        if not line.strip():
            p.blank = True
            return True
        if _is_chain_marker(line):
            p.state = _CHAIN
            return True
        if p.blank or not p.trailer_ok or is_header(line) or line.startswith("{"):
            return False
        if _FRAME.match(line) or p.message_lines >= MAX_MESSAGE_LINES:
            return False
        p.message_lines += 1  # the rest of a multi-line message, or a PEP 678 note
        return True

    def _finish(self, key: Hashable, *, followed: bool = False) -> None:
        """Close the record of ``key``. One directly followed by another traceback of the
        same stream is held until that one is done: when the next one holds it as a cause
        (``logging.exception`` then a re-raise of another exception: the logged exception
        comes back as the cause in the final chain), it is not a record of its own."""
        p = self._pending.pop(key)
        lines = p.text_lines()
        while lines and not lines[-1].strip():
            lines.pop()
        tb = parse_traceback_lines(lines)
        if tb is None or (p.headerless and not tb.complete):
            return
        absorbed: tuple[Assembled, ...] = ()
        held = self._held.pop(key, None)
        if held is not None:
            if held[0].traceback.primary in tb.chain[:-1]:
                self.absorbed += 1
                absorbed = (held[0],)
            else:
                self.completed.append(held[0])
        done = Assembled(key, tb, p.first_meta, p.last_meta, absorbed, p.rejoined)
        if followed and tb.complete:
            self._held[key] = (done, p.last_at)
        else:
            self.completed.append(done)
        if tb.complete:
            if len(self._recent) >= RECENT_KEEP:
                del self._recent[next(iter(self._recent))]
            self._recent[key] = _Recent(lines, p.last_at)


def assemble_text(text: str) -> list[Traceback]:
    """Every traceback in one multi-line text (a journal MESSAGE, a JSON ``exception``)."""
    asm = TracebackAssembler()
    for line in text.splitlines():
        asm.feed(0, line.rstrip("\r"), 0.0)
    asm.flush(0.0, force=True)
    return [a.traceback for a in asm.completed]


