"""The file event model: what a :class:`~.watcher.RecursiveWatcher` reports."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class FileEventKind(StrEnum):
    EXISTING = "existing"
    """Found by the initial scan, a rescan after overflow, or the root (re)appearing."""
    CREATED = "created"
    """New file: IN_CREATE, moved in from outside, or found scanning a new/moved-in dir."""
    MODIFIED = "modified"
    """IN_MODIFY (appends); also IN_ATTRIB when the watcher was built with ``attrib=True``."""
    CLOSED = "closed"
    """IN_CLOSE_WRITE: a writer finished."""
    MOVED = "moved"
    """Renamed within the tree; ``src`` is the old path."""
    DELETED = "deleted"
    """Removed, moved out, under a removed/moved-out directory, or gone at a rescan."""


@dataclass(frozen=True, slots=True)
class FileEvent:
    kind: FileEventKind
    path: Path
    observed_at: float
    """``time.time()`` when the event was read from inotify (or found by a scan)."""
    src: Path | None = None
    """The old path, for MOVED only."""
