"""Flat (non-recursive) inotify over many directories, as batches of :class:`DirChange`.

For monitors that follow directory *listings* rather than file trees (``PATH`` and
site-packages directories, ``/dev``, an index file's directory): one inotify descriptor
for every directory, a missing or vanished directory waited for through its nearest
existing ancestor, and a ``name=None`` change whenever a directory must be re-read (it
appeared, vanished, or events were lost).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
from asyncinotify import Event, Inotify, Mask, Watch

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DirChange:
    """Something changed in a watched directory. ``name`` None: the whole directory must
    be re-read (it appeared, vanished, or events were lost)."""

    directory: Path
    name: str | None
    mask: Mask
    observed_at: float


FLAT_MASK = (
    Mask.CREATE
    | Mask.DELETE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.ATTRIB
    | Mask.CLOSE_WRITE
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.ONLYDIR
)
_WAIT_MASK = Mask.CREATE | Mask.MOVED_TO | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.ONLYDIR
_GONE = Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.IGNORED | Mask.UNMOUNT


class FlatWatcher:
    """Non-recursive inotify watches on several directories, on one inotify descriptor.

    Yields batches of :class:`DirChange` (all events already queued, so a burst such as a
    ``pip install`` is handled once). A directory that does not exist (or vanishes) is
    waited for through its nearest existing ancestor; when it (re)appears a ``name=None``
    change asks the consumer to re-read it. Unreadable directories are reported through
    ``on_error`` and skipped. Directories are identified by their real path, so ``/bin``
    and ``/usr/bin`` on a merged-/usr system are one watch.
    """

    def __init__(
        self,
        directories: Iterable[Path],
        *,
        mask: Mask = FLAT_MASK,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.targets = list(dict.fromkeys(Path(os.path.realpath(d)) for d in directories))
        self.mask = mask | Mask.ONLYDIR
        self.on_error = on_error
        self._inotify: Inotify | None = None
        self._target_wd: dict[Path, int] = {}
        self._wd_targets: dict[int, Path] = {}
        self._waiting: dict[int, tuple[Watch, set[Path]]] = {}
        self._pending: list[DirChange] = []

    async def __aenter__(self) -> FlatWatcher:
        self._inotify = Inotify(cache_size=64, sync_timeout=0)
        now = time.time()
        for target in self.targets:
            self._arm(target, now, announce=False)
        self._pending.clear()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    @property
    def watched(self) -> list[Path]:
        return sorted(self._target_wd)

    def _arm(self, target: Path, now: float, *, announce: bool = True) -> None:
        """Watch ``target``, or (missing) wait for it on its nearest existing ancestor."""
        assert self._inotify is not None
        try:
            wd = self._inotify.add_watch(target, self.mask | _WAIT_MASK).wd
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENOTDIR):
                self._failed(target, err)
                return
            self._wait_for(target)
            return
        self._target_wd[target] = wd
        self._wd_targets[wd] = target
        if announce:
            self._pending.append(DirChange(target, None, Mask.CREATE, now))

    def _wait_for(self, target: Path) -> None:
        assert self._inotify is not None
        ancestor = target.parent
        while not ancestor.is_dir() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        try:  # MASK_ADD: if the ancestor is a target itself, keep its own mask
            watch = self._inotify.add_watch(ancestor, _WAIT_MASK | Mask.MASK_ADD)
        except OSError as err:
            self._failed(target, err)
            return
        self._waiting.setdefault(watch.wd, (watch, set()))[1].add(target)
        log.debug("flat_watch_waiting", path=str(target), on=str(ancestor))

    def _failed(self, target: Path, err: OSError) -> None:
        message = f"cannot watch {target}: {err.strerror or err}"
        if err.errno == errno.ENOSPC:
            message += " (fs.inotify.max_user_watches reached)"
        log.warning("flat_watch_failed", path=str(target), error=message)
        if self.on_error is not None:
            self.on_error(message)

    def _handle(self, event: Event, now: float) -> None:
        if Mask.Q_OVERFLOW in event.mask:
            log.warning("inotify_overflow", watcher="flat")
            self._pending.extend(DirChange(t, None, event.mask, now) for t in self._target_wd)
            for wd in list(self._waiting):  # a missing directory may have appeared
                self._retry_waiting(wd, now)
            return
        watch = event.watch
        if watch is None:
            return
        wd = watch.wd
        waiting = self._waiting.get(wd)
        if (
            waiting is not None
            and event.name is not None
            and any(t.parts[len(watch.path.parts)] == str(event.name) for t in waiting[1])
        ):
            self._retry_waiting(wd, now)
        elif waiting is not None and event.mask & _GONE:
            self._waiting.pop(wd, None)
            for target in waiting[1]:
                self._wait_for(target)
        target = self._wd_targets.get(wd)
        if target is None:
            return
        if event.name is None:
            if event.mask & _GONE:
                self._lost(target, wd, now, watch)
            return
        if event.mask & self.mask & ~Mask.ONLYDIR:
            self._pending.append(DirChange(target, str(event.name), event.mask, now))

    def _retry_waiting(self, wd: int, now: float) -> None:
        watch, targets = self._waiting.pop(wd)
        if wd not in self._wd_targets:
            self._unwatch(watch)
        for target in targets:
            self._arm(target, now)

    def _unwatch(self, watch: Watch | None) -> None:
        if watch is not None and self._inotify is not None:
            with contextlib.suppress(OSError):
                self._inotify.rm_watch(watch)

    def _lost(self, target: Path, wd: int, now: float, watch: Watch | None) -> None:
        self._target_wd.pop(target, None)
        self._wd_targets.pop(wd, None)
        self._unwatch(watch)  # a moved directory keeps its watch: drop it
        self._pending.append(DirChange(target, None, Mask.DELETE_SELF, now))
        waiting = self._waiting.pop(wd, None)
        for other in (waiting[1] if waiting else set()) | {target}:
            self._wait_for(other)

    async def batches(self) -> AsyncIterator[list[DirChange]]:
        """Every change, in batches of what had queued up."""
        assert self._inotify is not None, "use inside 'async with'"
        while True:
            if not self._pending:
                event = await self._inotify.get()
                now = time.time()
                self._handle(event, now)
                while (more := self._inotify.sync_get()) is not None:
                    self._handle(more, now)
            if self._pending:
                batch, self._pending = self._pending, []
                yield batch
