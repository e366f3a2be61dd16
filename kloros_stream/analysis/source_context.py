"""Source context for an exception: its in-app frames with a few lines around each.

Like Sentry's source context, so the agent reading the question sees the code it is about.
:func:`frame_context` is pure (the file reader is passed in); :func:`read_source_lines`
reads a file's text from the watched tree (bounded, never imported, never executed).
Frames are those of the final exception (the last one outside an exception group), the
innermost :data:`MAX_FRAMES` in-app ones (not site-packages, not the standard library, not
``<string>``), :data:`AROUND` lines either side, the failing line marked ``>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .fingerprint import is_in_app
from .tracebacks import ExceptionRecord

MAX_FRAMES = 3
AROUND = 2
MAX_LINE_CHARS = 160
MAX_FILE_BYTES = 2 * 1024 * 1024

Reader = Callable[[str], list[str] | None]


def _primary(records: Iterable[ExceptionRecord]) -> ExceptionRecord | None:
    chain = list(records)
    outer = [r for r in chain if r.depth == 0]
    return (outer or chain or [None])[-1]


def frame_context(
    records: Iterable[ExceptionRecord],
    read: Reader,
    max_frames: int = MAX_FRAMES,
    around: int = AROUND,
) -> list[str]:
    """One block per in-app frame: ``path:line in func`` then the numbered lines."""
    primary = _primary(records)
    if primary is None:
        return []
    frames = [
        f
        for f in primary.frames
        if f.lineno and not f.filename.startswith("<") and is_in_app(f.filename)
    ][-max_frames:]
    blocks: list[str] = []
    for frame in frames:
        lines = read(frame.filename)
        if not lines or frame.lineno is None or frame.lineno > len(lines):
            continue
        first = max(1, frame.lineno - around)
        last = min(len(lines), frame.lineno + around)
        body = [
            f"{'>' if n == frame.lineno else ' '} {n:>5} | {lines[n - 1][:MAX_LINE_CHARS]}"
            for n in range(first, last + 1)
        ]
        where = f"{frame.filename}:{frame.lineno}" + (
            f" in {frame.function}" if frame.function else ""
        )
        blocks.append("\n".join([where, *body]))
    return blocks


def read_source_lines(path: str) -> list[str] | None:
    """The lines of a source file (UTF-8, errors replaced), or None if unreadable/too big."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_FILE_BYTES:
        return None
    return data.decode("utf-8", "replace").splitlines()
