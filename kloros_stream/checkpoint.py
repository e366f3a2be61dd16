"""Durable component state: atomic JSON files under ``[service] state_dir``.

Every write goes to a temp file in the same directory, is fsynced, then renamed over the
old file (and the directory fsynced), so a crash leaves either the old or the new state,
never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

import orjson
import structlog

log = structlog.get_logger("kloros_stream.checkpoint")

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_json(path: Path, data: Any) -> None:
    """orjson; for text it refuses (file names with undecodable bytes: lone surrogates)
    the stdlib's ASCII JSON, whose ``\\udcff`` escapes read back to the same names."""
    try:
        raw = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        raw = json.dumps(data, ensure_ascii=True, default=str).encode()
    atomic_write_bytes(path, raw)


def loads_json(raw: bytes) -> Any:
    """Parse a checkpoint written by :func:`atomic_write_json` (either encoder)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        if b"\\ud" not in raw.lower():
            raise
        return json.loads(raw)


class _Gate:
    """Shared by a store and its children: :meth:`CheckpointStore.freeze` closes it."""

    frozen = False


class CheckpointStore:
    """Named JSON checkpoints in one directory (one file per name)."""

    def __init__(self, directory: Path, *, writable: bool = True,
                 gate: _Gate | None = None) -> None:
        self.directory = directory
        self.writable = writable
        self._gate = gate or _Gate()

    def freeze(self) -> None:
        """Ignore every later save of this store and its children: a monitor that did not
        stop in time must not checkpoint past signals that will never be delivered."""
        self._gate.frozen = True

    @property
    def frozen(self) -> bool:
        return self._gate.frozen

    def path(self, name: str) -> Path:
        return self.directory / f"{_SAFE.sub('_', name)}.json"

    def load(self, name: str) -> Any | None:
        """The saved data, or None if absent or unreadable (logged, never raised)."""
        if not self.writable:
            return None
        path = self.path(name)
        try:
            return loads_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.error("checkpoint_unreadable", path=str(path), error=str(err))
            return None

    def save(self, name: str, data: Any) -> None:
        if self.writable and not self._gate.frozen:
            atomic_write_json(self.path(name), data)

    def child(self, prefix: str) -> CheckpointStore:
        """A store whose files live in a subdirectory (one per monitor)."""
        return CheckpointStore(self.directory / _SAFE.sub("_", prefix),
                               writable=self.writable, gate=self._gate)


def read_only_store() -> CheckpointStore:
    """For one-shot scans: loads nothing, saves nothing, so a scan sees a fresh view."""
    return CheckpointStore(Path(os.devnull), writable=False)
