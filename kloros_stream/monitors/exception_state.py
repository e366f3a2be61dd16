"""The exception monitor's memory across restarts: what a replay must not publish twice,
and which fingerprints were seen how often (one checkpoint, ``state.json``).

- :class:`ReplayState`: the journal cursor up to which everything is fully processed, the
  keys of occurrences published after it (the entries a restart re-reads), and per log
  file the keys of recent occurrences (the tailer's at-least-once replay after kill -9);
- :class:`FingerprintMemory`: the bounded LRU of fingerprints with their count and first
  and last sighting (the ``occurrences``, ``first_seen``, ``last_seen`` facts);
- ``lone``: the occurrences each process published alone that a later chain of it may
  still absorb (:class:`.exception_absorb.LoneRecords`).
- ``saved_at`` and ``final``: the save's wall time, and whether it was a clean stop's (after
  a kill, entries written up to then the killed run may have read without recording).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Protocol

from ..sources.journal import cursor_position

MAX_PUBLISHED = 65_536
FILE_RECENT = 1024
STATE_VERSION = 1


class LoneMemory(Protocol):
    """What the checkpoint keeps of :class:`.exception_absorb.LoneRecords`."""

    def dump(self) -> list[list[Any]]: ...
    def load(self, data: Any) -> None: ...


class FingerprintMemory:
    """Bounded LRU of fingerprints: count, first and last sighting (see module docstring)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, list[Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, fp: str) -> bool:
        return fp in self._items

    def record(self, fp: str, when: float) -> tuple[int, float, bool]:
        """Count one sighting; returns (count, first_seen, new)."""
        item = self._items.get(fp)
        if item is None:
            item = self._items[fp] = [0, when, when]
            if len(self._items) > self.size:
                self._items.popitem(last=False)
            new = True
        else:
            self._items.move_to_end(fp)
            new = False
        item[0] += 1
        item[2] = when
        return item[0], item[1], new

    def discount(self, fp: str) -> int | None:
        """Take one sighting off (it was absorbed into another question); returns the
        sightings left, None for a fingerprint not counted (forgotten: nothing to resolve).
        A fingerprint left with none is forgotten."""
        item = self._items.get(fp)
        if item is None:
            return None
        item[0] -= 1
        if item[0] <= 0:
            del self._items[fp]
            return 0
        return item[0]

    def dump(self) -> list[list[Any]]:
        return [[fp, *item] for fp, item in self._items.items()]

    def load(self, data: Any) -> None:
        if not isinstance(data, list):
            return
        for row in data[-self.size :]:
            if (
                isinstance(row, list)
                and len(row) == 4
                and isinstance(row[0], str)
                and all(isinstance(v, (int, float)) for v in row[1:])
            ):
                self._items[row[0]] = [int(row[1]), float(row[2]), float(row[3])]


class ReplayState:
    """Occurrence keys already published, bounded, and the journal cursor."""

    def __init__(self) -> None:
        self.cursor: str | None = None
        """The last journal entry processed."""
        self.published: dict[str, None] = {}
        self.saved_at: float | None = None
        """Wall time of the loaded checkpoint's save (None: unknown or a final save)."""
        self._file_recent: dict[str, deque[str]] = {}
        self._file_seen: dict[str, set[str]] = {}

    def journal_first(self, key: str) -> bool:
        """Record a journal occurrence; False if it was published already (a replay)."""
        if key in self.published:
            return False
        self.published[key] = None
        if len(self.published) > MAX_PUBLISHED:
            del self.published[next(iter(self.published))]
        return True

    def file_first(self, path: str, key: str) -> bool:
        """Record a log-file occurrence; False if it was published already (a replay)."""
        seen = self._file_seen.setdefault(path, set())
        if key in seen:
            return False
        recent = self._file_recent.setdefault(path, deque())
        recent.append(key)
        seen.add(key)
        if len(recent) > FILE_RECENT:
            seen.discard(recent.popleft())
        return True

    def prune(self, cursor: str | None) -> None:
        """Keep only keys after ``cursor``: the entries a restart would read again."""
        limit = cursor_position(cursor)
        if limit is None:
            return
        keep: dict[str, None] = {}
        for key in self.published:
            pos = cursor_position(key.split("#", 1)[0])
            if pos is None or pos[0] != limit[0] or pos[1] > limit[1]:
                keep[key] = None
        self.published = keep

    def dump(
        self,
        safe_cursor: str | None,
        memory: FingerprintMemory,
        lone: LoneMemory,
        saved_at: float,
        *,
        final: bool = False,
    ) -> dict[str, Any]:
        """The checkpoint, resuming at ``safe_cursor`` (pruned to it first), saved at wall
        time ``saved_at``; ``final``: at a clean stop (everything read is in it)."""
        self.prune(safe_cursor)
        return {
            "saved_at": saved_at,
            "final": final,
            "version": STATE_VERSION,
            "cursor": safe_cursor,
            "published": list(self.published),
            "files": {path: list(keys) for path, keys in self._file_recent.items()},
            "fingerprints": memory.dump(),
            "lone": lone.dump(),
        }

    def load(self, data: Any, memory: FingerprintMemory, lone: LoneMemory) -> bool:
        """Restore from a checkpoint (anything malformed is left out); False if none."""
        if not isinstance(data, dict):
            return False
        saved_at, final = data.get("saved_at"), data.get("final")
        if type(saved_at) in (int, float) and final is False:
            self.saved_at = float(saved_at)
        cursor = data.get("cursor")
        self.cursor = cursor if isinstance(cursor, str) and cursor else None
        published = data.get("published")
        if isinstance(published, list):
            self.published = {k: None for k in published[-MAX_PUBLISHED:] if isinstance(k, str)}
        files = data.get("files")
        if isinstance(files, dict):
            for path, keys in files.items():
                if isinstance(keys, list):
                    kept = [k for k in keys[-FILE_RECENT:] if isinstance(k, str)]
                    self._file_recent[str(path)] = deque(kept)
                    self._file_seen[str(path)] = set(kept)
        memory.load(data.get("fingerprints"))
        lone.load(data.get("lone"))
        return True
