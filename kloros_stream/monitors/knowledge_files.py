"""knowledge_discovery's files: a document as hashed and scanned (:class:`Doc`,
:func:`read_doc`), and the knowledge index file followed through renames and partial
writes (:class:`IndexFileFollower`, a mixin of the monitor)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from asyncinotify import Mask

from ..analysis.knowledge import IndexInvalid, code_mentions, is_doc, parse_index, sha256_hex
from ..sources.flatwatch import FlatWatcher

MAX_TEXT_BYTES = 1_048_576
"""Only the first MiB of a document is searched for code names (all of it is hashed)."""
INDEX_GRACE_S = 1.0
"""An index file deleted and rewritten within this time was replaced, not removed."""
_INDEX_MASK = Mask.CLOSE_WRITE | Mask.MOVED_TO | Mask.MOVED_FROM | Mask.DELETE


@dataclass(frozen=True, slots=True)
class Doc:
    path: Path
    docs_dir: Path
    sha256: str
    mtime: float
    signature: tuple[int, int] | None
    mentions: frozenset[str]


def is_doc_path(path: Path) -> bool:
    return is_doc(path.name)


def is_code_path(path: Path) -> bool:
    return path.suffix == ".py"


def doc_tokens(mentions: Iterable[str]) -> set[str]:
    """File names a document's mentions could resolve to (for the code -> docs lookup)."""
    out: set[str] = set()
    for mention in mentions:
        if mention.endswith(".py"):
            out.add(PurePosixPath(mention).name)
        else:
            out.update(f"{part}.py" for part in mention.split("."))
            out.add("__init__.py")
    return out


def read_doc(path: Path, docs_dir: Path) -> Doc | None:
    """Hash and scan one document (None if it vanished or cannot be read)."""
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError:
        return None
    text = data[:MAX_TEXT_BYTES].decode("utf-8", "replace")
    return Doc(
        path,
        docs_dir,
        sha256_hex(data),
        st.st_mtime,
        (st.st_mtime_ns, st.st_size),
        code_mentions(text),
    )


class IndexFileFollower:
    """The index file of :class:`~.knowledge_discovery.KnowledgeDiscoveryMonitor`: loaded,
    kept while invalid, followed (a deletion counts only once it lasts)."""

    ctx: Any
    log: Any
    index_file: Path
    index: dict[str, str]
    index_usable: bool
    docs: dict[str, Any]
    _index_seen_valid: bool
    _index_reload: asyncio.TimerHandle | None

    # the monitor's own (annotations only: a stub here would shadow Monitor.watch_error)
    watch_error: Callable[[str], None]
    evaluate: Callable[..., None]
    _update_details: Callable[[], None]

    def load_index(self) -> bool:
        """Read the index file; returns whether the index in use changed."""
        details = self.ctx.status.details
        try:
            raw = self.index_file.read_bytes()
        except FileNotFoundError:
            new: dict[str, str] = {}
            details["index_error"] = None
            details["index_problems"] = []
        except OSError as err:
            return self._index_invalid(f"cannot read: {err}")
        else:
            try:
                parsed = parse_index(raw)
            except IndexInvalid as err:
                return self._index_invalid(str(err))
            new = parsed.documents
            details["index_error"] = None
            details["index_problems"] = list(parsed.problems[:20])
            if parsed.problems:
                self.log.warning(
                    "knowledge_index_entries_skipped",
                    path=str(self.index_file),
                    problems=list(parsed.problems[:5]),
                    count=len(parsed.problems),
                )
        changed = new != self.index or not self.index_usable
        self.index, self.index_usable, self._index_seen_valid = new, True, True
        return changed

    def _index_invalid(self, message: str) -> bool:
        """Keep the last valid index (a writer may be mid-way); with none yet, judge
        nothing until the file becomes valid."""
        self.log.warning("knowledge_index_invalid", path=str(self.index_file), error=message)
        self.ctx.status.details["index_error"] = message
        if not self._index_seen_valid:
            self.index_usable = False
        return False

    async def _follow_index(self) -> None:
        name = self.index_file.name
        async with FlatWatcher(
            [self.index_file.parent], mask=_INDEX_MASK, on_error=self.watch_error
        ) as watcher:
            self._reload_index(time.time())  # changes before the watch existed
            async for batch in watcher.batches():
                # IN_CREATE alone is a writer that has just begun: its CLOSE_WRITE follows
                changes = [
                    c
                    for c in batch
                    if c.name is None or (c.name == name and c.mask & _INDEX_MASK & ~Mask.CREATE)
                ]
                if not changes:
                    continue
                observed_at = min(c.observed_at for c in changes)
                self.ctx.touch(observed_at)
                if self.index_file.exists():
                    self._reload_index(observed_at)
                else:
                    self._schedule_index_reload(observed_at)

    def _schedule_index_reload(self, observed_at: float) -> None:
        """The index vanished: apply that only if it stays gone for INDEX_GRACE_S."""
        if self._index_reload is not None:
            self._index_reload.cancel()
        loop = asyncio.get_running_loop()
        self._index_reload = loop.call_later(INDEX_GRACE_S, self._reload_index, observed_at)

    def _reload_index(self, observed_at: float) -> None:
        if self._index_reload is not None:
            self._index_reload.cancel()
            self._index_reload = None
        if self.load_index():
            for rel in sorted(self.docs):
                self.evaluate(rel, observed_at)
            self._update_details()
