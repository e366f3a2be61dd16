"""What a ``missing_library`` gap says: its reason, its kind and the importing lines.

The reason names what was seen: a module imported by files of the roots that is not
installed (for the watched interpreter when one is configured), a dotted module of the
roots themselves that does not exist (``import pkg.sub.gone``), or a module only listed in
``required_modules``. The importing lines (``path:line: import x``) are read from the
watched tree, never imported; a few per file, a few files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
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
    pattern = None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if module not in line:  # the pattern holds the name as it is
            continue
        pattern = pattern or _pattern(module)
        if pattern.match(line):
            out.append(number)
            if len(out) >= limit:
                break
    return out


Digests = Callable[[str], str]
"""A file's path -> the sha256 of its content as the source index last loaded it ("" when
not known)."""


class ImportLines:
    """Importing lines already read, per (file, module), with the digest of the content
    they were read from: a file whose content is still that one is not read again (a
    restart with nothing changed reads no file for its evidence)."""

    def __init__(self) -> None:
        self.read: dict[tuple[str, str], tuple[str, list[str]]] = {}

    def get(self, path: str, module: str, digest: str) -> list[str] | None:
        found = self.read.get((path, module)) if digest else None
        return found[1] if found is not None and found[0] == digest else None

    def put(self, path: str, module: str, digest: str, data: bytes, lines: list[str]) -> None:
        """Keep ``lines``, read from ``data``, if ``data`` is the content of ``digest``."""
        if digest and hashlib.sha256(data).hexdigest() == digest:
            self.read[(path, module)] = (digest, lines)

    def keep(self, wanted: Callable[[str, str, str], bool]) -> None:
        """Keep only the entries (path, module, digest) that ``wanted`` says are current."""
        self.read = {k: v for k, v in self.read.items() if wanted(k[0], k[1], v[0])}


def import_lines(
    files: list[str], module: str, known: ImportLines | None = None,
    digests: Digests | None = None,
) -> list[str]:
    """``path:line: code`` for the first lines importing ``module`` in the first files
    (taken from ``known`` for a file whose digest is the one they were read from)."""
    out: list[str] = []
    for path in files[:MAX_FILES]:
        digest = digests(path) if digests is not None and known is not None else ""
        lines = known.get(path, module, digest) if known is not None else None
        if lines is None:
            try:
                with open(path, "rb") as f:
                    data = f.read(MAX_READ_BYTES)
            except OSError:
                continue
            lines = _lines_of(path, data, module)
            if known is not None:
                known.put(path, module, digest, data, lines)
        out.extend(lines)
    return out


def _lines_of(path: str, data: bytes, module: str) -> list[str]:
    text = data.decode("utf-8", "replace")
    lines = text.splitlines()
    return [f"{path}:{number}: {lines[number - 1].strip()}"
            for number in find_import_lines(text, module)]


def missing_facts(
    module: str, files: list[str], known: ImportLines | None = None,
    digests: Digests | None = None,
) -> dict[str, Any]:
    """Extra facts of a ``missing_library`` gap: its kind and the importing lines."""
    kind = "required" if not files else ("source_module" if "." in module else "library")
    facts: dict[str, Any] = {"kind": kind}
    if files:
        facts["import_lines"] = import_lines(files, module, known, digests)
    return facts
