"""Sentry-like grouping of errors: the same bug gets the same fingerprint. Pure functions.

- With a stack: the exception types of the chain plus the *in-app* frames' module and
  function, in order. No line numbers (an edit elsewhere in the file changes them), no
  messages (they carry ids). Frames under ``site-packages``/``dist-packages`` and the
  standard library are not in-app; if no frame is in-app, all frames are used.
- Without a stack: the type plus the message after :func:`normalize_message`, which
  replaces uuids, dates and times, urls, ips, paths, quoted values, hex, durations and
  numbers by placeholders.

A frame's "module" comes from its path, since the analysed code is never imported: the
dotted path after ``site-packages/`` or ``pythonX.Y/``, else the last two path components
(``/srv/app/kloros/bus.py`` -> ``kloros.bus``), which is the same on every checkout.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from .tracebacks import ExceptionRecord, Frame, Traceback

FINGERPRINT_CHARS = 32

_LIBRARY = re.compile(r"[\\/](?:site|dist)-packages[\\/]")
_STDLIB = re.compile(r"[\\/]lib(?:64)?[\\/]python\d+(?:\.\d+)?t?[\\/]|[\\/]Lib[\\/]")

_PLACEHOLDERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
        "<uuid>",
    ),
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?)?\b"
        ),
        "<date>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<time>"),
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+"), "<url>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"), "<ip>"),
    (re.compile(r"(?<![\w:.])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{1,4}(?![\w:])"), "<ip>"),
    (re.compile(r"'[^'\n]*'|\"[^\"\n]*\""), "<str>"),
    (re.compile(r"(?<![\w/.<])(?:~|\.{1,2})?(?:/[\w.@+~-]+)+/?|\b[A-Za-z]:\\[^\s'\"]*"), "<path>"),
    (
        re.compile(
            r"\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])"
            r"[0-9a-fA-F]{8,}\b"
        ),
        "<hex>",
    ),
    (
        re.compile(
            r"\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|sec|secs|seconds?|min|mins|minutes?"
            r"|h|hrs?|hours?|days?)\b"
        ),
        "<duration>",
    ),
    (re.compile(r"(?<![\w<])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b"), "<num>"),
)
_SPACES = re.compile(r"\s+")


def normalize_message(message: str) -> str:
    """The message with its variable parts replaced by placeholders, whitespace collapsed."""
    for pattern, placeholder in _PLACEHOLDERS:
        message = pattern.sub(placeholder, message)
    return _SPACES.sub(" ", message).strip()


def is_in_app(filename: str) -> bool:
    """False for installed libraries, the standard library and frozen modules."""
    if filename.startswith("<frozen "):
        return False
    return not (_LIBRARY.search(filename) or _STDLIB.search(filename))


def frame_module(filename: str) -> str:
    """A stable dotted name for the file of a frame (see the module docstring)."""
    if filename.startswith("<"):
        return filename
    path = filename.replace("\\", "/")
    m = _LIBRARY.search(path) or _STDLIB.search(path)
    parts = [p for p in (path[m.end() :] if m else path).split("/") if p]
    if parts and parts[-1].endswith((".py", ".pyw")):
        parts[-1] = parts[-1].rsplit(".", 1)[0]
    if len(parts) > 1 and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts if m else parts[-2:])


def _frames_component(frames: Iterable[Frame], *, in_app_only: bool) -> list[str]:
    return [
        f"{frame_module(f.filename)}:{f.function}"
        for f in frames
        if not in_app_only or is_in_app(f.filename)
    ]


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[
        :FINGERPRINT_CHARS
    ]


def fingerprint_records(records: Iterable[ExceptionRecord]) -> str:
    """Fingerprint of an exception chain (see the module docstring)."""
    chain = list(records)
    has_frames = any(r.frames for r in chain)
    in_app = any(is_in_app(f.filename) for r in chain for f in r.frames)
    parts = ["python"]
    for record in chain:
        parts.append(f"{record.depth}|{record.exc_type}")
        if has_frames:
            parts.extend(_frames_component(record.frames, in_app_only=in_app))
        else:
            parts.append(normalize_message(record.message))
    return _digest(parts)


def fingerprint_traceback(tb: Traceback) -> str:
    return fingerprint_records(tb.chain)


def fingerprint_message(source: str, message: str) -> str:
    """Fingerprint of an error without a stack: where it came from plus its message."""
    return _digest(["message", source, normalize_message(message)])
