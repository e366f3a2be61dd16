"""The source index's checkpoint: an append-only journal of file records, binary.

After one header line (``{"format": 4, "spec": key}``) the file is a run of frames, each
``length, CRC-32`` (two little-endian u32) then a :mod:`marshal` of a tuple of entries:
a record as a plain tuple (its packed facts' body as raw bytes), or ``(path,)`` for a
file gone. Each change of a record appends one frame (a batch of changes, a few frames);
nothing rewrites the whole index while the service runs. Frames are made and written on a
writer thread of their own, in the order they were queued. At load the last entry per path
wins; a frame failing its CRC is skipped and a torn one ends the file; the journal is
then compacted (rewritten atomically), as it is when it holds much more history than
records. The header names the spec and the facts version: a journal of other settings is
not reused. Losing the tail (kill -9) or a damaged frame only means those files are parsed
again: every record is still checked against its file's ``mtime``/size at start.

A warm start loads 20 k records in one read and a few ``marshal.loads`` (format 3 was
JSON lines with base64 bodies: several times slower to load).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import marshal
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from .. import analysis
from ..analysis.capabilities import FileImports
from ..analysis.compact import EMPTY_SET
from ..analysis.source_facts import FACTS_VERSION, PackedFacts
from ..checkpoint import CheckpointStore, atomic_write_bytes
from .records import FileRecord

if TYPE_CHECKING:
    from .records import SourceSpec

log = structlog.get_logger(__name__)

JOURNAL_FORMAT = 4
"""4: binary frames of marshalled entries, each frame with its CRC-32 (3 was JSON lines,
the bodies in base64); another format is not read (its file name differs too)."""
SUFFIX = ".journal"
OLD_SUFFIX = ".jsonl"
"""Journals of formats up to 3, removed when a new journal starts."""
COMPACT_SLACK = 1000
"""Compact at load when the journal holds more than twice the records plus this."""
FRAME_ENTRIES = 512
"""Entries per frame at most: a cold scan's 20 k records are never one body in memory."""
FRAME = struct.Struct("<II")
MARSHAL_VERSION = 4
WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-journal")

Update = tuple[str, "FileRecord | None"]
Entry = tuple[Any, ...]


async def drained() -> None:
    """Wait until every journal write queued so far is done."""
    await asyncio.wrap_future(WRITER.submit(lambda: None))


@functools.cache
def analysis_version() -> str:
    """A digest of the analysis code itself: records extracted by another version of it
    are not reused (an upgrade re-parses once)."""
    digest = hashlib.sha256()
    for path in sorted(Path(analysis.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def spec_key(spec: SourceSpec) -> str:
    flows = spec.flow_config
    text = repr((JOURNAL_FORMAT, FACTS_VERSION, analysis_version(), sys.version_info[:2],
                 [str(r) for r in spec.roots], list(spec.exclude), spec.max_file_bytes,
                 sorted(flows.emit_calls), sorted(flows.subscribe_calls),
                 list(getattr(flows, "subscriber_suffixes", ()))))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def record_entry(record: FileRecord) -> Entry:
    """``record`` as a journal entry: a plain tuple, the import names sorted (equal
    import sets make equal entries, shared again at load)."""
    facts = record.facts
    if facts is None:
        return (*record[:6], None, None, None, None, *record[7:])
    imports = facts.imports
    return (*record[:6], facts.body, tuple(sorted(imports.required)),
            tuple(sorted(imports.optional)), tuple(sorted(imports.dotted)), *record[7:])


class _Reader:
    """Entries back into records: equal import sets share one :class:`FileImports`
    (their names interned, empty sets shared), equal roots one string."""

    def __init__(self) -> None:
        self.imports: dict[tuple[Any, ...], FileImports] = {}
        self.roots: dict[str, str] = {}

    def record(self, entry: Entry) -> FileRecord:
        """Raises ValueError/TypeError for an entry of another shape."""
        path, root, module, mtime_ns, size, sha256, body, required, optional, dotted, \
            error, skipped, detail = entry
        if type(path) is not str:
            raise TypeError(f"an entry's path is {type(path).__name__}")
        facts = None
        if body is not None:
            key = (required, optional, dotted)
            imports = self.imports.get(key)
            if imports is None:
                imports = self.imports[key] = FileImports(
                    _names(required), _names(optional), _names(dotted))
            facts = PackedFacts(imports, body)
        root = self.roots.setdefault(root, root)
        return FileRecord(path, root, module, mtime_ns, size, sha256, facts, error, skipped,
                          detail)


def _names(names: Iterable[str]) -> frozenset[str]:
    out = frozenset(map(sys.intern, names))
    return out if out else EMPTY_SET


def frames(data: bytes | memoryview, start: int) -> Iterator[tuple[Any, int]]:
    """``(entries, end)`` of each frame from ``start``; ``entries`` is None for a frame
    that fails its CRC or does not decode. Stops at a torn frame (its ``end`` is then
    beyond ``len(data)``)."""
    view = memoryview(data)
    pos, size = start, len(view)
    while pos < size:
        if pos + FRAME.size > size:
            yield None, size + 1
            return
        length, crc = FRAME.unpack_from(view, pos)
        body = view[pos + FRAME.size:pos + FRAME.size + length]
        pos += FRAME.size + length
        if pos > size:
            yield None, pos
            return
        entries = None
        if zlib.crc32(body) == crc:
            try:
                entries = marshal.loads(body)
            except (ValueError, EOFError, TypeError):
                entries = None
        yield (entries if type(entries) is tuple else None), pos


def frame_of(entries: list[Entry]) -> bytes:
    """One frame of ``entries``; an entry that cannot be marshalled is logged and left
    out (one record never costs the batch)."""
    try:
        body = marshal.dumps(tuple(entries), MARSHAL_VERSION)
    except ValueError:
        kept = []
        for entry in entries:
            try:
                marshal.dumps(entry, MARSHAL_VERSION)
            except ValueError as err:
                log.error("source_journal_record_skipped", path=repr(entry[0]), error=str(err))
                continue
            kept.append(entry)
        body = marshal.dumps(tuple(kept), MARSHAL_VERSION)
    return FRAME.pack(len(body), zlib.crc32(body)) + body


class IndexJournal:
    """The journal file of one spec under ``directory``."""

    def __init__(self, directory: Path, spec: SourceSpec, store: CheckpointStore) -> None:
        self.key = spec_key(spec)
        self.path = directory / f"{self.key}{SUFFIX}"
        self.store = store
        self._header = orjson.dumps({"format": JOURNAL_FORMAT, "spec": self.key}) + b"\n"

    # -- load (on a worker thread) ---------------------------------------------------------
    def load(self) -> dict[str, FileRecord]:
        """The saved records (empty if none, of other settings, or unreadable)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._remove_old()
            return {}
        except OSError as err:
            log.error("source_journal_unreadable", path=str(self.path), error=str(err))
            return {}
        if not data.startswith(self._header):
            log.info("source_journal_ignored", path=str(self.path), reason="other settings")
            self._rewrite([])
            return {}
        entries: dict[str, Entry] = {}
        invalid = total = 0
        torn = False
        for batch, end in frames(data, len(self._header)):
            if batch is None:
                invalid += 1
                torn = end > len(data)
                continue
            total += len(batch)
            for entry in batch:
                try:
                    entries[entry[0]] = entry
                except (TypeError, IndexError, KeyError):
                    invalid += 1
        reader = _Reader()
        records: dict[str, FileRecord] = {}
        for path, entry in entries.items():
            if len(entry) == 1:
                continue  # gone
            try:
                records[path] = reader.record(entry)
            except (TypeError, ValueError):
                invalid += 1  # a damaged entry: that file is parsed again
        if invalid:
            log.warning("source_journal_invalid", path=str(self.path), frames=invalid,
                        torn=torn)
        if invalid or total > 2 * len(records) + COMPACT_SLACK:
            self._rewrite([entries[p] for p in records])
        return records

    def _rewrite(self, entries: list[Entry]) -> None:
        if not self._saving:
            return
        body = self._header + b"".join(
            frame_of(entries[i:i + FRAME_ENTRIES]) for i in range(0, len(entries), FRAME_ENTRIES))
        try:
            atomic_write_bytes(self.path, body)
        except OSError as err:
            log.error("source_journal_write_failed", path=str(self.path), error=str(err))

    def _remove_old(self) -> None:
        """A first start on this format: the journals of older ones go (never read again)."""
        if not self._saving:
            return
        for old in self.path.parent.glob(f"*{OLD_SUFFIX}"):
            try:
                old.unlink()
            except OSError as err:
                log.warning("source_journal_old_kept", path=str(old), error=str(err))
            else:
                log.info("source_journal_old_removed", path=str(old))

    # -- append (queued; made and written on the writer thread) ----------------------------
    @property
    def _saving(self) -> bool:
        return self.store.writable and not self.store.frozen

    def append(self, updates: list[Update]) -> None:
        if self._saving:
            WRITER.submit(self._write, list(updates)).add_done_callback(self._check)

    def _check(self, future: Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("source_journal_write_failed", path=str(self.path),
                      error=repr(future.exception()))

    def _write(self, updates: list[Update]) -> None:
        """Append a frame per :data:`FRAME_ENTRIES` updates, each written as it is made: a
        cold scan's 20 k records never sit in memory as one body (a peak the heap keeps
        afterwards)."""
        if not self._saving:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            with open(self.path, "ab") as fh:
                if fresh:
                    fh.write(self._header)
                for start in range(0, len(updates), FRAME_ENTRIES):
                    fh.write(frame_of([record_entry(r) if r is not None else (p,)
                                       for p, r in updates[start:start + FRAME_ENTRIES]]))
        except OSError as err:
            log.error("source_journal_write_failed", path=str(self.path), error=str(err))
