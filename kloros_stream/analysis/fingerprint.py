"""Sentry-like grouping of errors: the same bug gets the same fingerprint. Pure functions.

- With a stack: the exception types of the chain plus the *in-app* frames' module and
  function, in order. No line numbers (an edit elsewhere in the file changes them), no
  messages (they carry ids). Frames under ``site-packages``/``dist-packages`` and the
  standard library are not in-app; neither are pseudo-files (``<string>``, ``<stdin>``,
  ``<frozen ...>``). Without an in-app frame, the frames outside the standard library
  count (the application installed into a venv as a package); without those, all frames.
- An exception group counts where it was raised: the members printed inside it (their
  number and order vary from run to run) are left out.
- Without a stack: the type plus the message after :func:`normalize_message`, which
  replaces uuids, dates and times, urls, ips, paths, quoted values, hex, durations and
  numbers by placeholders.

A frame's "module" comes from its path, since the analysed code is never imported: the
dotted path after ``site-packages/`` or ``pythonX.Y/``, else the last two path components
(``/srv/app/kloros/bus.py`` -> ``kloros.bus``). The fingerprint keeps the last two dotted
parts of it, so the same code in a checkout, another user's checkout or a venv's
site-packages (``.../site-packages/kloros/core/bus.py`` and ``/srv/kloros/core/bus.py``
both ``core.bus``) and a sourceless (``.pyc``-only) install give one fingerprint.
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


def _is_pseudo(filename: str) -> bool:
    """``<string>``, ``<stdin>``, ``<frozen ...>``: no file, no evidence of whose code."""
    return filename.startswith("<")


def _is_code(filename: str) -> bool:
    """A real file outside the standard library (an app's or a library's)."""
    if _is_pseudo(filename):
        return False
    return bool(_LIBRARY.search(filename)) or not _STDLIB.search(filename)


def _frame_key(frame: Frame) -> str:
    """Module (its last two dotted parts, the same in a checkout and in site-packages)
    and function."""
    module = frame_module(frame.filename)
    if not _is_pseudo(frame.filename):
        module = ".".join(module.split(".")[-2:])
    return f"{module}:{frame.function}"


def _frames_component(frames: Iterable[Frame], *, scope: str) -> list[str]:
    """``scope``: "app" (in-app frames), "code" (frames outside the standard library:
    the app installed as a library), or "all"."""
    if scope == "all":
        return [_frame_key(f) for f in frames]
    if scope == "app":
        return [_frame_key(f) for f in frames
                if is_in_app(f.filename) and not _is_pseudo(f.filename)]
    return [_frame_key(f) for f in frames if _is_code(f.filename)]


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[
        :FINGERPRINT_CHARS
    ]


def fingerprint_records(records: Iterable[ExceptionRecord]) -> str:
    """Fingerprint of an exception chain (see the module docstring)."""
    # An exception group is one bug where it was raised, whatever it holds (its members
    # and their order vary from run to run): only the chain outside the group counts.
    chain = [r for r in records if r.depth == 0] or list(records)
    frames = [f for r in chain for f in r.frames]
    scope = "all"
    if any(is_in_app(f.filename) and not _is_pseudo(f.filename) for f in frames):
        scope = "app"
    elif any(_is_code(f.filename) for f in frames):
        scope = "code"
    parts = ["python"]
    for record in chain:
        parts.append(f"{record.depth}|{record.exc_type}")
        if frames:
            parts.extend(_frames_component(record.frames, scope=scope))
        else:
            parts.append(normalize_message(record.message))
    return _digest(parts)


def fingerprint_traceback(tb: Traceback) -> str:
    return fingerprint_records(tb.chain)


def fingerprint_message(source: str, message: str) -> str:
    """Fingerprint of an error without a stack: where it came from plus its message."""
    return _digest(["message", source, normalize_message(message)])
