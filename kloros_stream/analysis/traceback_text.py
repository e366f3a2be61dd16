"""Python traceback text: its data model and the parser of one finished record. Pure.

:func:`parse_traceback_lines` turns the lines of one assembled record (see
:mod:`.tracebacks`, which puts records back together from line streams) into its chain of
exceptions: plain blocks, chained blocks ("During handling ...", "The above exception
...") and exception-group output (``|``/``+`` framed rows, nested). :func:`format_records`
writes exceptions known only as data back as Python-style text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

HEADER = "Traceback (most recent call last):"
GROUP_HEADER = "Exception Group Traceback (most recent call last):"
CHAIN_MARKERS = frozenset(
    {
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    }
)
INCOMPLETE_TYPE = "IncompleteTraceback"
"""Exception type given to a traceback that stopped before its exception line."""

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]*)", line (?P<line>\d+)(?:, in (?P<func>.+))?$')
_SYNTAX_LOCATION = re.compile(r'^\s*File "[^"]*", line \d+$')
_EXC_LINE = re.compile(r"^(?P<type>[^\W\d][\w.<>]*)(?::(?: (?P<msg>.*))?)?$")
_GROUP_ROW = re.compile(r"^(?P<indent>[ ]*)(?P<bar>[|+])(?P<rest>.*)$")
_SEPARATOR = re.compile(r"^[-+]+(?: \d+ -+| \.\.\. -+)?$")
_ELISION = re.compile(r"^  \[\.\.\. \d+ lines elided \.\.\.\]$")


@dataclass(frozen=True, slots=True)
class Frame:
    filename: str
    lineno: int | None
    function: str
    """Empty for a location line that names no function (a SyntaxError's)."""


@dataclass(frozen=True, slots=True)
class ExceptionRecord:
    exc_type: str
    message: str
    """The whole message; multi-line messages keep their newlines."""
    frames: tuple[Frame, ...] = ()
    depth: int = 0
    """0: a member of the chain; >0: nested inside an exception group."""

    @property
    def first_line(self) -> str:
        return self.message.split("\n", 1)[0]

    @property
    def title(self) -> str:
        """``Type: first line of message`` (just ``Type`` when there is no message)."""
        first = self.first_line
        return f"{self.exc_type}: {first}" if first else self.exc_type


@dataclass(frozen=True, slots=True)
class Traceback:
    lines: tuple[str, ...]
    chain: tuple[ExceptionRecord, ...]
    """Every exception in printed order: causes first, group members after their group."""
    complete: bool

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def primary(self) -> ExceptionRecord:
        """The exception that was finally raised: the last one outside any group."""
        for record in reversed(self.chain):
            if record.depth == 0:
                return record
        return self.chain[-1]


# -- line classification -------------------------------------------------------------------
def is_header(line: str) -> bool:
    return line.endswith("(most recent call last):") and (
        line.strip() == HEADER or _is_group_header(line)
    )


def _is_group_header(line: str) -> bool:
    stripped = line.strip()
    return stripped == f"+ {GROUP_HEADER}" or stripped == GROUP_HEADER


def _is_chain_marker(line: str) -> bool:
    return line.strip() in CHAIN_MARKERS


def parse_exception_line(line: str) -> tuple[str, str] | None:
    """``("pkg.Error", "message")`` for an exception line, else None."""
    m = _EXC_LINE.match(line)
    if m is None:
        return None
    return m["type"], m["msg"] or ""


# -- parsing a finished record -------------------------------------------------------------
def parse_traceback_lines(lines: list[str] | tuple[str, ...]) -> Traceback | None:
    """Parse an assembled record; None if it holds no frame and no exception line."""
    records: list[ExceptionRecord] = []
    dangling: list[Frame] = []
    i, n = 0, len(lines)
    while i < n:
        if _is_group_header(lines[i]) and _GROUP_ROW.match(lines[i]):
            j = i
            while j < n and _GROUP_ROW.match(lines[j]):
                j += 1
            records.extend(_parse_group(lines[i:j]))
            dangling = []
            i = j
            continue
        j = i
        while j < n and not (_is_group_header(lines[j]) and _GROUP_ROW.match(lines[j])):
            j += 1
        block_records, dangling = _parse_blocks(lines[i:j])
        records.extend(block_records)
        i = j
    if dangling:
        records.append(ExceptionRecord(INCOMPLETE_TYPE, "", tuple(dangling)))
    if not records:
        return None
    complete = all(r.exc_type != INCOMPLETE_TYPE for r in records)
    return Traceback(tuple(lines), tuple(records), complete)


def _parse_blocks(
    lines: Iterable[str], depth: int = 0
) -> tuple[list[ExceptionRecord], list[Frame]]:
    """Plain (non-group) traceback text: records, plus frames left without an exception."""
    records: list[ExceptionRecord] = []
    frames: list[Frame] = []
    message: list[str] | None = None  # collecting a multi-line message

    def close_message() -> None:
        nonlocal message
        if message is not None:
            last = records[-1]
            records[-1] = ExceptionRecord(
                last.exc_type, "\n".join(message), last.frames, last.depth
            )
            message = None

    for line in lines:
        if _ELISION.match(line):
            continue  # the middle of a long record was left out: the frames continue
        stripped = line.strip()
        if not stripped or stripped in CHAIN_MARKERS or is_header(line):
            close_message()
            if is_header(line):
                frames = []
            continue
        m = _FRAME.match(line)
        if m is not None:
            close_message()
            func = m["func"] or ""
            frames.append(Frame(m["file"], int(m["line"]), func.strip()))
            continue
        if message is not None:
            message.append(line)
            continue
        if line[0] in " \t":
            continue  # code, carets, "[Previous line repeated N more times]"
        parsed = parse_exception_line(line)
        if parsed is None:
            continue
        records.append(ExceptionRecord(parsed[0], parsed[1], tuple(frames), depth))
        frames = []
        message = [parsed[1]]
    close_message()
    return records, frames


def _parse_group(rows: list[str]) -> list[ExceptionRecord]:
    """Exception-group output: split the framed rows into segments per nesting level and
    sub-exception, and parse each segment as plain traceback text."""
    segments: list[tuple[int, list[str]]] = []
    open_segment = False
    for row in rows:
        m = _GROUP_ROW.match(row)
        if m is None:
            continue
        indent, rest = len(m["indent"]), m["rest"]
        if m["bar"] == "+":
            body = rest.lstrip("-+ ")
            if body == GROUP_HEADER:
                segments.append((indent, [GROUP_HEADER]))
                open_segment = True
            elif _SEPARATOR.match(rest.strip()) or not body:
                open_segment = False
            continue
        content = rest[1:] if rest.startswith(" ") else rest
        if open_segment and segments and segments[-1][0] == indent:
            segments[-1][1].append(content)
        else:
            segments.append((indent, [content]))
            open_segment = True
    if not segments:
        return []
    base = min(depth for depth, _ in segments)
    out: list[ExceptionRecord] = []
    for indent, seg_lines in segments:
        level = (indent - base) // 2
        records, dangling = _parse_blocks(
            [HEADER if s == GROUP_HEADER else s for s in seg_lines], level
        )
        out.extend(records)
        if dangling:
            out.append(ExceptionRecord(INCOMPLETE_TYPE, "", tuple(dangling), level))
    # The group itself (first record at the base level) belongs to the chain.
    return out


def format_records(records: Iterable[ExceptionRecord]) -> str:
    """Python-style text for exceptions known only as data (e.g. structlog's dict
    tracebacks), causes first."""
    out: list[str] = []
    for record in records:
        if out:
            out += ["", "During handling of the above exception, another exception occurred:", ""]
        if record.frames:
            out.append(HEADER)
            for f in record.frames:
                where = f", in {f.function}" if f.function else ""
                out.append(f'  File "{f.filename}", line {f.lineno}{where}')
        out.append(f"{record.exc_type}: {record.message}" if record.message else record.exc_type)
    return "\n".join(out)
