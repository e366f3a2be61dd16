"""What the source index knows of one file, and how a file is loaded into it.

Loading (:func:`load_record`) stats, reads, hashes and analyses one file. It runs off the
event loop: on the index's parse thread, or in a parse process (:mod:`.parse_processes`)
for a large batch or a very large file. This module imports only what a parse process
needs, so that process starts quickly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..analysis.flows import FlowConfig
from ..analysis.local_modules import MODULE_SUFFIXES
from ..analysis.pysource import SourceError, module_name
from ..analysis.source_facts import PackedFacts, facts_of


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What an index is built from; subscribers with equal specs share one index."""

    roots: tuple[Path, ...]
    exclude: tuple[str, ...]
    max_file_bytes: int
    flow_config: FlowConfig

    @classmethod
    def of(cls, config: Any, roots: Iterable[Path], exclude: Iterable[str]) -> SourceSpec:
        """The spec for ``roots``/``exclude`` with the parse settings of ``config``'s
        ``[monitors.integration]`` section (flows and file size limit)."""
        section = config.monitors.integration
        return cls(
            tuple(Path(os.path.abspath(r)) for r in roots),
            tuple(exclude),
            section.max_file_bytes,
            FlowConfig.from_section(section),
        )


class FileRecord(NamedTuple):
    """One module file as last loaded. A named tuple, not a dataclass: the journal builds
    20 k of them at a warm start, and a tuple is made several times faster than a frozen
    dataclass (which sets each field through ``object.__setattr__``)."""

    path: str
    root: str
    module: str
    mtime_ns: int
    size: int
    sha256: str = ""
    facts: PackedFacts | None = None
    """The last good facts (kept while the file does not parse), packed."""
    error: tuple[str, int | None] | None = None
    """(message, line) while the file does not parse."""
    skipped: str = ""
    """Why the content was not analysed: ``too_large``, ``unreadable``, ``analysis_failed``."""
    detail: str = ""

    @property
    def is_python(self) -> bool:
        return self.path.endswith(".py")


def is_module_file(_root: Path, path: Path) -> bool:
    return path.name.endswith(MODULE_SUFFIXES)


def stat_unchanged(path: Path | str, previous: FileRecord | None) -> bool:
    """Whether ``path`` still has the ``mtime``/size of ``previous`` (then it is not read)."""
    if previous is None:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_mtime_ns, st.st_size) == (previous.mtime_ns, previous.size)


def unchanged(paths: list[str], previous: list[FileRecord | None]) -> list[bool]:
    """:func:`stat_unchanged` of each path and its previous record."""
    return [stat_unchanged(p, r) for p, r in zip(paths, previous, strict=True)]


def file_size(path: Path) -> int:
    """The size of ``path``, 0 if it cannot be stat'ed."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def load_record(
    path: Path, root: Path, previous: FileRecord | None, spec: SourceSpec, *, trust_stat: bool
) -> tuple[FileRecord | None, bool]:
    """Stat, read, hash and analyse one file. Returns the record (None if the file is
    gone) and whether it was parsed. ``trust_stat``: an unchanged ``mtime``/size reuses
    ``previous`` without reading."""
    key = str(path)
    try:
        st = os.stat(path)
    except OSError:
        return None, False
    if previous is not None and trust_stat and (st.st_mtime_ns, st.st_size) == (
        previous.mtime_ns, previous.size
    ):
        return previous, False
    module = module_name(path, root)
    base = FileRecord(key, str(root), module, st.st_mtime_ns, st.st_size)
    if not key.endswith(".py"):
        return base, False
    if st.st_size > spec.max_file_bytes:
        return _skipped(base, previous, "too_large", str(st.st_size)), False
    try:
        with open(path, "rb") as fh:
            data = fh.read(spec.max_file_bytes + 1)
    except FileNotFoundError:
        return None, False
    except OSError as err:
        return _skipped(base, previous, "unreadable", str(err)), False
    if len(data) > spec.max_file_bytes:
        return _skipped(base, previous, "too_large", str(len(data))), False
    digest = hashlib.sha256(data).hexdigest()
    if previous is not None and previous.sha256 == digest and not previous.skipped:
        return _with(previous, mtime_ns=st.st_mtime_ns, size=len(data)), False
    try:
        facts = PackedFacts.pack(facts_of(data, module, spec.flow_config, key))
    except SourceError as err:
        kept = previous.facts if previous is not None else None
        return _with(base, sha256=digest, facts=kept, error=(err.message, err.line)), True
    except Exception as err:  # an analyser bug must not take the index down on one file
        return _skipped(base, previous, "analysis_failed", repr(err)), True
    return _with(base, size=len(data), sha256=digest, facts=facts), True


def _with(record: FileRecord, **changes: Any) -> FileRecord:
    return record._replace(**changes)


def _skipped(base: FileRecord, previous: FileRecord | None, why: str, detail: str) -> FileRecord:
    kept = previous.facts if previous is not None else None
    return _with(base, facts=kept, skipped=why, detail=detail)


Job = tuple[Path, Path, "FileRecord | None"]
"""(path, its root, its previous record)."""
Loaded = tuple[Path, "FileRecord | None", bool]
"""(path, its record or None if gone, whether it was parsed)."""


def load_batch(jobs: list[Job], spec: SourceSpec, *, trust_stat: bool = True) -> list[Loaded]:
    """:func:`load_record` for each job, in order."""
    return [(p, *load_record(p, r, prev, spec, trust_stat=trust_stat)) for p, r, prev in jobs]


def without_facts(record: FileRecord | None) -> FileRecord | None:
    """``record`` as sent to a parse process: its facts stay behind (see :func:`rejoin`)."""
    return record if record is None or record.facts is None else _with(record, facts=None)


def rejoin(loaded: FileRecord | None, previous: FileRecord | None) -> FileRecord | None:
    """A record loaded against :func:`without_facts` of ``previous``: where the load kept
    the previous facts (same content, a syntax error, a skipped file) they come back."""
    if loaded is None or loaded.facts is not None or previous is None or previous.facts is None:
        return loaded
    return _with(loaded, facts=previous.facts)
