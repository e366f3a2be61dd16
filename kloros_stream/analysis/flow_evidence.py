"""Evidence for an orphaned channel: the code that fills it, and the code that reads it.

Pure: source text in, short lines out (the monitor reads the files). A statement that
spans lines (``emit(\\n    signal="X",\\n    ...)``) is joined until its brackets close,
whitespace collapsed, and clipped, so a question carries a bounded, readable excerpt.
"""

from __future__ import annotations

MAX_CHARS = 160
"""Characters kept of one statement."""
MAX_LINES = 6
"""Source lines joined into one statement at most."""


def statement_at(source: str, line: int) -> str | None:
    """The statement starting at 1-based ``line`` of ``source``, on one line; None if
    the file has no such line."""
    lines = source.splitlines()
    if not 1 <= line <= len(lines):
        return None
    parts: list[str] = []
    depth = 0
    for text in lines[line - 1 : line - 1 + MAX_LINES]:
        parts.append(text.strip())
        depth += sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")
        if depth <= 0 or len(" ".join(parts)) >= MAX_CHARS:
            break
    joined = " ".join(p for p in parts if p)
    return joined if len(joined) <= MAX_CHARS else joined[: MAX_CHARS - 1] + "…"


def evidence_line(label: str, line: int, source: str | None) -> str:
    """``path:line: statement`` (just ``path:line`` when the source is not readable)."""
    code = statement_at(source, line) if source is not None else None
    return f"{label}:{line}: {code}" if code else f"{label}:{line}"
