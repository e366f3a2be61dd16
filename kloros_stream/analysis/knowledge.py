"""The knowledge index and the two document rules (pure: no I/O, no clock).

Index file (contract): ``{"documents": {"<path relative to its docs dir>": "<sha256>"}}``,
written by any program. A document is **unindexed** when its relative path is not in the
index (``new``) or its content's SHA-256 differs from the recorded one (``changed``).

A document is **stale** when both hold:

1. it has not been modified for ``stale_after_days`` (its mtime), and
2. a code file it names was modified after the document was.

A document *names* a code file by a path ending in ``.py`` (``kloros_stream/config.py``,
matched as a suffix of ``<root name>/<path in root>`` so ``src/pkg/x.py`` and ``pkg/x.py``
both work) or by a dotted module name (``kloros_stream.config`` or an attribute of it such
as ``kloros_stream.config.Config``: the longest prefix of at least two parts that is a
module of a root). Names that match no file of the integration roots are ignored.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import orjson

DOC_SUFFIXES: frozenset[str] = frozenset({".md", ".rst", ".txt"})
SECONDS_PER_DAY = 86_400.0
MAX_REFERENCES = 200
"""Bound on the code names kept per document."""

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_PATH_REF = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-][\w.-]*\.py)(?![\w/])")
_DOTTED_REF = re.compile(r"(?<![\w./-])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?![\w/])")


class IndexInvalid(ValueError):
    """The index file is not the contract's format (the message says where)."""


@dataclass(frozen=True, slots=True)
class KnowledgeIndex:
    documents: dict[str, str]
    """Relative path -> lower-case SHA-256 hex."""
    problems: tuple[str, ...] = ()
    """Entries that were skipped, each with the reason."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_doc(name: str) -> bool:
    """A file the knowledge monitor reads: ``.md``, ``.rst`` or ``.txt`` (not hidden)."""
    return not name.startswith(".") and PurePosixPath(name).suffix.lower() in DOC_SUFFIXES


def normalise_rel(path: str) -> str | None:
    """A clean relative POSIX path, or None if ``path`` is empty, absolute or climbs out."""
    if not path or path.startswith("/") or "\\" in path:
        return None
    pure = PurePosixPath(path)
    if any(part == ".." for part in pure.parts) or not pure.parts:
        return None
    return pure.as_posix()


def parse_index(raw: bytes) -> KnowledgeIndex:
    """Validate an index file's bytes; raises :class:`IndexInvalid` if the file as a whole
    is unusable, skips (and reports in ``problems``) single bad entries."""
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise IndexInvalid(f"not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise IndexInvalid(f"top level must be an object, got {type(data).__name__}")
    if "documents" not in data:
        raise IndexInvalid('missing key "documents"')
    docs = data["documents"]
    if not isinstance(docs, dict):
        raise IndexInvalid(f'"documents" must be an object, got {type(docs).__name__}')
    out: dict[str, str] = {}
    problems: list[str] = []
    for key, value in docs.items():
        rel = normalise_rel(key)
        if rel is None:
            problems.append(f"documents[{key!r}]: not a relative path inside a docs dir")
        elif not isinstance(value, str) or not _SHA256.fullmatch(value):
            problems.append(f"documents[{key!r}]: value must be a 64-digit sha256 hex string")
        else:
            out[rel] = value.lower()
    return KnowledgeIndex(out, tuple(problems))


def index_status(rel: str, digest: str, index: Mapping[str, str]) -> str | None:
    """``new`` if the index lacks ``rel``, ``changed`` if its hash differs, else None."""
    recorded = index.get(rel)
    if recorded is None:
        return "new"
    return "changed" if recorded != digest else None


# -- code named by documents ----------------------------------------------------------------
def code_mentions(text: str, limit: int = MAX_REFERENCES) -> frozenset[str]:
    """Candidate code names in a document: ``*.py`` paths and dotted names (bounded)."""
    found: dict[str, None] = {}
    for m in _PATH_REF.finditer(text):
        found[m.group(1).removeprefix("./")] = None
    for m in _DOTTED_REF.finditer(text):
        name = m.group(1)
        if not name.endswith(".py"):
            found[name] = None
    return frozenset(list(found)[:limit])


@dataclass
class CodeIndex:
    """The Python files of the integration roots and their modification times."""

    files: dict[tuple[str, str], float] = field(default_factory=dict)
    """(root, POSIX path relative to it) -> mtime."""
    _by_name: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))

    def add_file(self, root: str, rel: str, mtime: float) -> None:
        self.files[(root, rel)] = mtime
        self._by_name[PurePosixPath(rel).name].add((root, rel))

    def remove_file(self, root: str, rel: str) -> None:
        if self.files.pop((root, rel), None) is not None:
            self._by_name[PurePosixPath(rel).name].discard((root, rel))

    def resolve(self, mention: str) -> set[tuple[str, str]]:
        """The files a mention names (see the module docstring); empty if none."""
        if mention.endswith(".py"):
            return self._resolve_path(mention)
        return self._resolve_dotted(mention)

    def _resolve_path(self, mention: str) -> set[tuple[str, str]]:
        out = set()
        for root, rel in self._by_name.get(PurePosixPath(mention).name, ()):
            qualified = f"/{PurePosixPath(root).name}/{rel}"
            if qualified.endswith("/" + mention):
                out.add((root, rel))
        return out

    def _resolve_dotted(self, mention: str) -> set[tuple[str, str]]:
        parts = mention.split(".")
        for n in range(len(parts), 1, -1):
            stem = "/".join(parts[:n])
            for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
                hits = {
                    key
                    for key in self._by_name.get(PurePosixPath(candidate).name, ())
                    if key[1] == candidate
                }
                if hits:
                    return hits
        return set()

    def referenced(self, mentions: Iterable[str]) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for mention in mentions:
            out |= self.resolve(mention)
        return out


def stale_code(
    doc_mtime: float, code: Mapping[tuple[str, str], float], now: float, stale_after_s: float
) -> list[str]:
    """The stale rule: if the document is older than ``stale_after_s`` (by mtime), the
    named code files modified after it (as ``root/rel``, sorted); else empty."""
    if now - doc_mtime < stale_after_s:
        return []
    return sorted(f"{root}/{rel}" for (root, rel), mtime in code.items() if mtime > doc_mtime)


def stale_due(
    doc_mtime: float, code: Mapping[tuple[str, str], float], now: float, stale_after_s: float
) -> float | None:
    """When the rule will flag a document that is not stale yet only because it is too
    young (named code already changed after it): ``doc_mtime + stale_after_s``; else None."""
    due = doc_mtime + stale_after_s
    if due > now and any(mtime > doc_mtime for mtime in code.values()):
        return due
    return None
