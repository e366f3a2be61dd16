"""The source index's checkpoint: an append-only JSON-lines journal of file records.

Each change of a record appends one line (``{"p": path, ...}``, or ``{"p": path,
"gone": 1}``); nothing rewrites the whole index while the service runs. Lines are
serialised and written on a writer thread of their own, in the order they were queued.
At load the last line per path wins, a torn or invalid line is skipped, and a journal with
much more history than records is compacted (rewritten atomically) before use. The first
line names the spec and the facts version: a journal of other settings is not reused.
Losing the tail (kill -9) only means those files are parsed again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import sys
import zlib
from base64 import b64decode, b64encode
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from .. import analysis
from ..analysis.source_facts import FACTS_VERSION, PackedFacts, packed_facts
from ..checkpoint import CheckpointStore, atomic_write_bytes

if TYPE_CHECKING:
    from .records import FileRecord, SourceSpec

log = structlog.get_logger(__name__)

JOURNAL_FORMAT = 3
"""3: a record's import names as JSON lists, its packed flows and summary
(:class:`PackedFacts` ``body``) as base64 with their CRC-32; read back as they are,
nothing decoded at load."""
COMPACT_SLACK = 1000
"""Compact at load when the journal holds more than twice the records plus this."""
WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-journal")

Update = tuple[str, "FileRecord | None"]


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


def record_to_json(record: FileRecord) -> dict[str, Any]:
    facts = record.facts
    return {
        "p": record.path, "r": record.root, "m": record.module, "t": record.mtime_ns,
        "s": record.size, "h": record.sha256,
        "f": None if facts is None else b64encode(facts.body).decode(),
        "c": None if facts is None else zlib.crc32(facts.body),
        "i": None if facts is None else [sorted(facts.imports.required),
                                         sorted(facts.imports.optional),
                                         sorted(facts.imports.dotted)],
        "e": list(record.error) if record.error else None,
        "k": record.skipped, "d": record.detail,
    }


def record_from_json(data: dict[str, Any]) -> FileRecord:
    """Raises KeyError/TypeError/ValueError/IndexError for a malformed line, ValueError
    for facts whose body does not match its CRC-32 (they are never decoded here)."""
    from .records import FileRecord

    err = data["e"]
    return FileRecord(
        path=str(data["p"]), root=str(data["r"]), module=str(data["m"]),
        mtime_ns=int(data["t"]), size=int(data["s"]), sha256=str(data["h"]),
        facts=_facts_from_json(data) if data["f"] is not None else None,
        error=(str(err[0]), None if err[1] is None else int(err[1])) if err else None,
        skipped=str(data["k"]), detail=str(data["d"]),
    )


def _facts_from_json(data: dict[str, Any]) -> PackedFacts:
    body = b64decode(data["f"], validate=True)
    if zlib.crc32(body) != int(data["c"]):
        raise ValueError("facts body damaged (CRC-32 mismatch)")
    required, optional, dotted = data["i"]
    return packed_facts(required, optional, dotted, body)


def _dumps(item: dict[str, Any]) -> bytes:
    """One journal line. A file name that is not UTF-8 (its undecodable bytes held as
    surrogates) cannot be orjson: the standard library writes it escaped (``\\udcff``)."""
    try:
        return orjson.dumps(item)
    except TypeError:
        return json.dumps(item, ensure_ascii=True, separators=(",", ":")).encode()


def _loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)  # a line with escaped surrogates (see _dumps)


class IndexJournal:
    """The journal file of one spec under ``directory``."""

    def __init__(self, directory: Path, spec: SourceSpec, store: CheckpointStore) -> None:
        self.key = spec_key(spec)
        self.path = directory / f"{self.key}.jsonl"
        self.store = store
        self._header = orjson.dumps({"format": JOURNAL_FORMAT, "spec": self.key}) + b"\n"

    # -- load (on a worker thread) ---------------------------------------------------------
    def load(self) -> dict[str, FileRecord]:
        """The saved records (empty if none, of other settings, or unreadable)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as err:
            log.error("source_journal_unreadable", path=str(self.path), error=str(err))
            return {}
        lines = data.split(b"\n")
        if not lines or lines[0] + b"\n" != self._header:
            log.info("source_journal_ignored", path=str(self.path), reason="other settings")
            self._rewrite([])
            return {}
        raw: dict[str, tuple[bytes, dict[str, Any]]] = {}
        invalid = 0
        for line in lines[1:]:
            if not line:
                continue
            try:
                item = _loads(line)
                raw[item["p"]] = (line, item)
            except (ValueError, KeyError, TypeError):
                invalid += 1
        records: dict[str, FileRecord] = {}
        for path, (_line, item) in raw.items():
            try:
                if not item.get("gone"):
                    records[path] = record_from_json(item)
            except (KeyError, TypeError, ValueError, IndexError, EOFError, zlib.error):
                invalid += 1  # a damaged line: that file is parsed again
        if invalid:
            log.warning("source_journal_invalid_lines", path=str(self.path), lines=invalid)
        if len(lines) > 2 * len(records) + COMPACT_SLACK or invalid:
            self._rewrite([raw[p][0] for p in records])
        return records

    def _rewrite(self, lines: list[bytes]) -> None:
        if not self._saving:
            return
        body = self._header + b"".join(line + b"\n" for line in lines)
        try:
            atomic_write_bytes(self.path, body)
        except OSError as err:
            log.error("source_journal_write_failed", path=str(self.path), error=str(err))

    # -- append (queued; serialised and written on the writer thread) ----------------------
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
        """Append one line per update, each written as it is made: a cold scan's 20 k
        records never sit in memory as one body (a peak the heap keeps afterwards)."""
        if not self._saving:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            with open(self.path, "ab") as fh:
                if fresh:
                    fh.write(self._header)
                for p, r in updates:
                    try:
                        line = _dumps(record_to_json(r) if r is not None else {"p": p, "gone": 1})
                    except (TypeError, ValueError) as err:  # one record never costs the batch
                        log.error("source_journal_record_skipped", path=repr(p), error=str(err))
                        continue
                    fh.write(line)
                    fh.write(b"\n")
        except OSError as err:
            log.error("source_journal_write_failed", path=str(self.path), error=str(err))
