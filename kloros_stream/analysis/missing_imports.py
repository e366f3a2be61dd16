"""What a ``missing_library`` gap says: its reason, its kind and the importing lines.

The reason names what was seen: a module imported by files of the roots that is not
installed (for the watched interpreter when one is configured), a dotted module of the
roots themselves that does not exist (``import pkg.sub.gone``), or a module only listed in
``required_modules``. The importing lines (``path:line: import x``) are read from the
watched tree, never imported; a few per file, a few files.
"""

from __future__ import annotations

import re
from typing import Any

MAX_FILES = 5
MAX_LINES_PER_FILE = 3
MAX_READ_BYTES = 1024 * 1024


def missing_reason(module: str, files: list[str], python: str = "") -> str:
    """The gap reason for ``module`` imported by ``files`` (none: only required)."""
    where = f" for {python}" if python else ""
    if not files:
        return f"module '{module}' is listed in required_modules but is not installed{where}"
    if "." in module:
        return (
            f"module '{module}' is imported by {len(files)} file(s) but does not exist in the "
            f"source roots{' nor is it installed' + where if where else ''}"
        )
    return f"module '{module}' is imported by {len(files)} file(s) but is not installed{where}"


def _pattern(module: str) -> re.Pattern[str]:
    name = re.escape(module)
    sub = r"(?:\.[\w.]+)?" if "." not in module else ""
    return re.compile(
        rf"^\s*(?:from\s+{name}{sub}\s+import\b|import\s+(?:[\w.]+(?:\s+as\s+\w+)?\s*,\s*)*"
        rf"{name}{sub}(?:\s+as\s+\w+)?\s*(?:,|#|$))"
    )


def find_import_lines(text: str, module: str, limit: int = MAX_LINES_PER_FILE) -> list[int]:
    """1-based numbers of the lines of ``text`` that import ``module`` (or a submodule)."""
    pattern = _pattern(module)
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            out.append(number)
            if len(out) >= limit:
                break
    return out


def import_lines(files: list[str], module: str) -> list[str]:
    """``path:line: code`` for the first lines importing ``module`` in the first files."""
    out: list[str] = []
    for path in files[:MAX_FILES]:
        try:
            with open(path, "rb") as f:
                text = f.read(MAX_READ_BYTES).decode("utf-8", "replace")
        except OSError:
            continue
        lines = text.splitlines()
        for number in find_import_lines(text, module):
            out.append(f"{path}:{number}: {lines[number - 1].strip()}")
    return out


def missing_facts(module: str, files: list[str]) -> dict[str, Any]:
    """Extra facts of a ``missing_library`` gap: its kind and the importing lines."""
    kind = "required" if not files else ("source_module" if "." in module else "library")
    facts: dict[str, Any] = {"kind": kind}
    if files:
        facts["import_lines"] = import_lines(files, module)
    return facts
