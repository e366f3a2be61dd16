"""A subscriber's folded state, kept across a clean restart (:class:`FoldCheckpoint`).

A monitor subscribed to a :class:`~.index.SourceIndex` folds every record into its own
state (integration's flow index: decoding 20 k packed bodies and counting them takes
seconds). That state is a pure function of the records' facts, so a clean stop saves it
with the :func:`fingerprint` of the records it holds, and the next start reuses it only
when the index hands over records with the same fingerprint; anything else (a file
changed while the service was down, a kill -9 leaving an older state, another version of
the analysis) folds from the records as before. Never a source of truth: the level is
still reconciled against the feed after either path.

The packed facts a state points to are not written twice: they are saved as references
(the record's path) and taken from the index's records at load.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import io
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ..checkpoint import atomic_write_bytes
from . import fold_pickle
from .fold_pickle import FoldPickler, FoldUnpickler, dump_values, load_value

if TYPE_CHECKING:
    from ..checkpoint import CheckpointStore
    from .records import FileRecord

log = structlog.get_logger(__name__)

FOLD_FORMAT = 1
SUFFIX = ".fold"


def fingerprint(records: Iterable[FileRecord]) -> str:
    """A digest of the records' paths and facts, in path order: two sets of records with
    one fingerprint fold to the same state. Facts analysed from the content a record
    names (no error, nothing skipped) are named by its SHA-256 (the analysis is a pure
    function of content, module and settings, and the key names the settings); the facts
    kept from an earlier content (a file that does not parse now) by themselves."""
    digest = hashlib.blake2b(digest_size=20)
    for record in sorted(records, key=lambda r: r.path):
        digest.update(record.path.encode("utf-8", "surrogateescape"))
        digest.update(_facts_identity(record))
    return digest.hexdigest()


def _facts_identity(record: FileRecord) -> bytes:
    facts = record.facts
    if facts is None:
        return b"\0-\0"
    if record.error is None and not record.skipped and record.sha256:
        return b"\0s" + record.sha256.encode()
    imports = facts.imports
    names = "\0".join("\1".join(sorted(group)) for group in (
        imports.required, imports.optional, imports.dotted))
    return b"\0k%s\0%d\0%s" % (names.encode("utf-8", "surrogateescape"), len(facts.body),
                               facts.body)


@functools.cache
def code_digest(modules: tuple[str, ...]) -> str:
    """A digest of the source of ``modules`` (and of this one and the format's): a state
    folded or written by other code is not reused."""
    digest = hashlib.sha256()
    for name in sorted({__name__, fold_pickle.__name__, *modules}):
        digest.update(name.encode() + b"\0" + Path(sys.modules[name].__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


class FoldCheckpoint:
    """One folded state of one subscriber, in ``<store>/<name>.fold``.

    ``key`` names everything besides the records that the state depends on (the index's
    spec, the subscriber's own settings); ``code`` the modules that fold it (their source
    is part of the key). A state saved under another key is not used. A state is taken
    once: the file is removed as it is loaded (a crash after the restore folds again at
    the next start; a clean stop saves it anew)."""

    def __init__(self, store: CheckpointStore, name: str, key: str,
                 code: tuple[str, ...] = ()) -> None:
        self.store = store
        self.path = store.directory / f"{name}{SUFFIX}"
        self.key = f"{key}:{code_digest(code)}:{sys.version_info[:2]}"

    async def load(self, records: Mapping[str, FileRecord]) -> list[Any] | None:
        """The objects saved with the fingerprint of ``records`` (path -> record), or None:
        no state, another key or fingerprint, or a damaged file (logged). An object is
        unpickled a part at a time (:func:`.fold_pickle.load_value`), the event loop
        handed back in between (a 20 k-file flow index takes a few hundred milliseconds
        whole)."""
        if not self.store.writable:
            return None
        try:
            raw = self.path.read_bytes()
            self.path.unlink()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.error("fold_checkpoint_unreadable", path=str(self.path), error=str(err))
            return None
        unpickler = FoldUnpickler(io.BytesIO(raw), records)
        was_enabled = gc.isenabled()
        gc.disable()  # many long-lived objects, no garbage: a collection would only rescan
        try:
            header = unpickler.load()
            if not (isinstance(header, tuple) and header[:2] == (FOLD_FORMAT, self.key)
                    and header[2:3] == (fingerprint(records.values()),)):
                log.info("fold_checkpoint_stale", path=str(self.path))
                return None
            objects = [await load_value(unpickler) for _ in range(int(header[3]))]
        except Exception as err:  # any damage means: fold from the records
            log.error("fold_checkpoint_damaged", path=str(self.path), error=repr(err))
            return None
        finally:
            if was_enabled:
                gc.enable()
        gc.freeze()  # the state lives as long as its monitor: out of later collections
        return objects

    def save(self, objects: Sequence[Any], records: Mapping[str, FileRecord]) -> None:
        """Save ``objects``, the fold of ``records`` (path -> record). One pickler writes
        them all (an object two of them share is written once). Never raises (logged)."""
        if not self.store.writable or self.store.frozen:
            return
        paths = {id(r.facts): path for path, r in records.items() if r.facts is not None}
        out = io.BytesIO()
        try:
            header = (FOLD_FORMAT, self.key, fingerprint(records.values()), len(objects))
            pickler = FoldPickler(out, paths)
            pickler.dump(header)
            dump_values(pickler, objects)
            atomic_write_bytes(self.path, out.getvalue())
        except Exception as err:  # a state not saved is folded again
            log.error("fold_checkpoint_not_saved", path=str(self.path), error=repr(err))
