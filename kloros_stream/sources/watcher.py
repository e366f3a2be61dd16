"""Recursive directory watcher on plain ``asyncinotify.Inotify``, as an async event stream.

Guarantees and choices:

* A directory's watch is added *before* it is scanned, and a new or moved-in directory is
  watched and scanned before the next raw inotify event is handled, so files created before
  its watch existed are reported (as CREATED) and none is reported twice.
* ``IN_Q_OVERFLOW`` triggers a full rescan: EXISTING for every current file, DELETED for
  known files that vanished, stale watches dropped.
* A directory renamed *within* the tree is remapped: its watches are kept and every known
  file under it is reported as MOVED (``src`` = old path); it is then rescanned, so files
  the ``include`` predicate only accepts at the new location appear as CREATED.
* A missing root is not an error: the nearest existing ancestor is watched until the root
  appears, which is then scanned (EXISTING). A root deleted or moved away later produces
  DELETED for its files and the wait starts again.
* ``ENOSPC`` from ``inotify_add_watch`` (the ``fs.inotify.max_user_watches`` limit) is
  logged as ``inotify_watch_limit`` and passed to ``on_error``; that directory is skipped
  (neither scanned nor descended), the watches already held are kept.
* State is the set of known file paths only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog
from asyncinotify import Event, Inotify, Mask, Watch

log = structlog.get_logger(__name__)

_DIR_MASK = (
    Mask.CREATE
    | Mask.MODIFY
    | Mask.CLOSE_WRITE
    | Mask.DELETE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.ONLYDIR
    | Mask.EXCL_UNLINK
)
_ANCESTOR_MASK = Mask.CREATE | Mask.MOVED_TO | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.ONLYDIR
_ROOT_GONE = Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.IGNORED | Mask.UNMOUNT
MOVE_PAIR_TIMEOUT_S = 0.05
"""How long an unpaired MOVED_FROM waits for its MOVED_TO before it counts as DELETED."""
_YIELD_EVERY = 64
_MAX_USER_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


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


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RecursiveWatcher:
    """Watch ``root`` (recursively unless ``recursive=False``) and stream :class:`FileEvent`.

    ``exclude``: fnmatch globs matched against each path component's name (excluded
    directories are never watched). ``include``: predicate on file paths; only files it
    accepts produce events. ``attrib=True`` also reports IN_ATTRIB (chmod, touch) as
    MODIFIED. ``on_error`` receives a message when the inotify watch limit is hit.
    Iterate once per watcher, inside ``async with``.
    """

    def __init__(
        self,
        root: Path,
        *,
        exclude: Sequence[str] = (),
        include: Callable[[Path], bool] | None = None,
        recursive: bool = True,
        on_error: Callable[[str], None] | None = None,
        attrib: bool = False,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self._exclude = (
            re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in exclude))
            if exclude
            else None
        )
        self._include = include
        self._recursive = recursive
        self._on_error = on_error
        self._mask = _DIR_MASK | Mask.ATTRIB if attrib else _DIR_MASK
        self._inotify: Inotify | None = None
        self._watches: dict[int, Watch] = {}
        self._wd_dir: dict[int, Path] = {}
        self._dir_wd: dict[Path, int] = {}
        self._root_wd: int | None = None
        self._ancestor: Watch | None = None
        self._known: dict[Path, set[str]] = {}
        self._out: deque[FileEvent] = deque()
        self._scan: list[tuple[Path, FileEventKind]] = []
        self._moves: dict[int, tuple[Path, bool]] = {}
        self._rescan_unseen: set[Path] | None = None
        self._rescan_wds: set[int] | None = None
        self.watch_limit_reached = False
        self.stats: dict[str, int] = {
            "overflows": 0,
            "watch_limit_hits": 0,
            "skipped_dirs": 0,
        }

    # -- public API ----------------------------------------------------------------------
    async def __aenter__(self) -> RecursiveWatcher:
        self._inotify = Inotify(cache_size=16, sync_timeout=0)
        self._wait_for_root()
        return self

    async def __aexit__(self, *exc: object) -> None:
        inotify, self._inotify = self._inotify, None
        if inotify is not None:
            # Unregister before closing: a reader left on a recycled fd number would
            # steal another inotify instance's wake-ups.
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(inotify.fd)
            inotify.close()
        self._watches.clear()
        self._wd_dir.clear()
        self._dir_wd.clear()
        self._ancestor = None

    def __aiter__(self) -> AsyncIterator[FileEvent]:
        """Initial EXISTING events first, then live events, forever."""
        return self.events()

    def events(self, *, follow: bool = True) -> AsyncIterator[FileEvent]:
        """Like ``__aiter__``; ``follow=False`` stops once the initial scan is delivered
        (for one-shot scans)."""
        if self._inotify is None:
            raise RuntimeError("iterate a RecursiveWatcher inside 'async with'")
        return self._iterate(follow)

    @property
    def idle(self) -> bool:
        """No scan pending and no event queued: the iterator is waiting for inotify."""
        return not self._out and not self._scan and self._rescan_unseen is None

    @property
    def known_files(self) -> frozenset[Path]:
        return frozenset(d / name for d, names in self._known.items() for name in names)

    @property
    def watched_dirs(self) -> frozenset[Path]:
        return frozenset(self._dir_wd)

    def handle_raw_event(self, event: Event, observed_at: float | None = None) -> None:
        """Apply one raw inotify event (public so tests can inject ``Q_OVERFLOW``)."""
        now = time.time() if observed_at is None else observed_at
        mask = event.mask
        if Mask.Q_OVERFLOW in mask:
            self._overflow(now)
            return
        if self._moves and not (Mask.MOVED_TO in mask and event.cookie in self._moves):
            self._flush_moves(now)
        watch = event.watch
        if watch is None:
            return
        wd = watch.wd
        if self._ancestor is not None and wd == self._ancestor.wd:
            self._on_ancestor_event(event)
            return
        directory = self._wd_dir.get(wd)
        if directory is None:
            return  # a watch we already dropped
        if event.name is None:
            self._on_self_event(wd, directory, mask, now)
        elif Mask.ISDIR in mask:
            self._on_dir_event(directory / event.name, mask, event.cookie, now)
        else:
            self._on_file_event(directory / event.name, mask, event.cookie, now)

    # -- iteration -----------------------------------------------------------------------
    async def _iterate(self, follow: bool) -> AsyncIterator[FileEvent]:
        since_await = 0
        while True:
            if self._out:
                yield self._out.popleft()
                since_await += 1
                if since_await >= _YIELD_EVERY:
                    since_await = 0
                    await asyncio.sleep(0)
            elif self._scan:
                self._scan_next()
                await asyncio.sleep(0)  # one directory at a time: the loop stays responsive
            elif self._rescan_unseen is not None:
                self._finish_rescan()
            elif not follow:
                return
            else:
                since_await = 0
                event = await self._next_raw()
                if event is None:
                    self._flush_moves(time.time())
                else:
                    self.handle_raw_event(event, time.time())

    async def _next_raw(self) -> Event | None:
        """The next raw event, or None when a pending MOVED_FROM waited long enough."""
        while True:
            inotify = self._inotify
            if inotify is None:
                raise RuntimeError("RecursiveWatcher was closed")
            event = inotify.sync_get()  # non-blocking (sync_timeout=0)
            if event is not None:
                return event
            if not await self._wait_readable(MOVE_PAIR_TIMEOUT_S if self._moves else None):
                return None

    async def _wait_readable(self, timeout: float | None) -> bool:
        """Wait until the inotify fd is readable; False on timeout."""
        inotify = self._inotify
        assert inotify is not None
        fd = inotify.fd
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        try:
            if timeout is None:
                await ready
                return True
            done, _ = await asyncio.wait({ready}, timeout=timeout)
            return bool(done)
        finally:
            if self._inotify is inotify:
                loop.remove_reader(fd)

    # -- raw event handlers --------------------------------------------------------------
    def _on_self_event(self, wd: int, directory: Path, mask: Mask, now: float) -> None:
        if wd == self._root_wd:
            if mask & _ROOT_GONE:
                self._root_lost(now)
        elif Mask.IGNORED in mask:
            self._drop_subtree(directory, now)

    def _on_dir_event(self, path: Path, mask: Mask, cookie: int, now: float) -> None:
        if not self._recursive:
            return
        if Mask.CREATE in mask:
            if not self._excluded(path.name):
                self._scan.append((path, FileEventKind.CREATED))
        elif Mask.MOVED_FROM in mask:
            self._moves[cookie] = (path, True)
        elif Mask.MOVED_TO in mask:
            pending = self._moves.pop(cookie, None)
            if pending is not None and pending[1]:
                self._dir_moved(pending[0], path, now)
            elif not self._excluded(path.name):
                self._scan.append((path, FileEventKind.CREATED))
        elif Mask.DELETE in mask:
            self._drop_subtree(path, now)

    def _on_file_event(self, path: Path, mask: Mask, cookie: int, now: float) -> None:
        if Mask.MOVED_FROM in mask:
            self._moves[cookie] = (path, False)
        elif Mask.MOVED_TO in mask:
            pending = self._moves.pop(cookie, None)
            src_known = pending is not None and self._forget(pending[0])
            if self._tracked(path):
                self._remember(path)
                if src_known and pending is not None:
                    self._emit(FileEventKind.MOVED, path, now, pending[0])
                else:
                    self._emit(FileEventKind.CREATED, path, now)
            elif src_known and pending is not None:
                self._emit(FileEventKind.DELETED, pending[0], now)
        elif Mask.DELETE in mask:
            if self._forget(path):
                self._emit(FileEventKind.DELETED, path, now)
        elif Mask.CREATE in mask:
            if self._tracked(path) and self._remember(path):
                self._emit(FileEventKind.CREATED, path, now)
        elif mask & (Mask.MODIFY | Mask.ATTRIB | Mask.CLOSE_WRITE):
            if not self._tracked(path):
                return
            if not self._is_known(path):
                if not os.path.lexists(path):
                    return
                self._remember(path)
                self._emit(FileEventKind.CREATED, path, now)
            if mask & (Mask.MODIFY | Mask.ATTRIB):
                self._emit(FileEventKind.MODIFIED, path, now)
            if Mask.CLOSE_WRITE in mask:
                self._emit(FileEventKind.CLOSED, path, now)

    def _on_ancestor_event(self, event: Event) -> None:
        """While the root is missing: re-locate it when the next path component appears."""
        ancestor = self._ancestor
        assert ancestor is not None
        if event.mask & _ROOT_GONE:
            self._ancestor = None
            self._wait_for_root()
            return
        next_part = self.root.parts[len(ancestor.path.parts)]
        if event.name is not None and str(event.name) == next_part:
            self._drop_ancestor()
            self._wait_for_root()

    def _flush_moves(self, now: float) -> None:
        """Unpaired MOVED_FROM: the file or directory left the tree."""
        moves, self._moves = self._moves, {}
        for path, is_dir in moves.values():
            if is_dir:
                self._drop_subtree(path, now)
            elif self._forget(path):
                self._emit(FileEventKind.DELETED, path, now)

    # -- directories ---------------------------------------------------------------------
    def _scan_next(self) -> None:
        """Watch, then scan, one directory from the scan stack."""
        directory, kind = self._scan.pop()
        wd = self._watch_dir(directory)
        if wd is None:
            if directory == self.root and not directory.is_dir():
                self._root_lost(time.time())
            return
        if directory == self.root:
            self._root_wd = wd
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name, reverse=True)
        except (FileNotFoundError, NotADirectoryError):
            return  # removed meanwhile; its events follow
        except OSError as err:
            log.warning("watch_scan_failed", path=str(directory), error=str(err))
            return
        now = time.time()
        files: list[Path] = []
        for entry in entries:
            if self._excluded(entry.name):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if self._recursive:
                    self._scan.append((Path(entry.path), kind))
            else:
                files.append(Path(entry.path))
        for path in reversed(files):
            self._report_scanned(path, kind, now)

    def _report_scanned(self, path: Path, kind: FileEventKind, now: float) -> None:
        if self._include is not None and not self._include(path):
            return
        if kind is FileEventKind.EXISTING:
            if self._rescan_unseen is not None:
                self._rescan_unseen.discard(path)
            self._remember(path)
            self._emit(kind, path, now)
        elif self._remember(path):
            self._emit(kind, path, now)

    def _watch_dir(self, directory: Path) -> int | None:
        inotify = self._inotify
        assert inotify is not None
        try:
            watch = inotify.add_watch(directory, self._mask)
        except OSError as err:
            self._watch_failed(directory, err)
            return None
        wd = watch.wd
        old_dir = self._wd_dir.get(wd)
        if old_dir is not None and old_dir != directory and self._dir_wd.get(old_dir) == wd:
            del self._dir_wd[old_dir]
        old_wd = self._dir_wd.get(directory)
        if old_wd is not None and old_wd != wd:
            self._unwatch(old_wd)
        self._watches[wd] = watch
        self._wd_dir[wd] = directory
        self._dir_wd[directory] = wd
        if self._rescan_wds is not None:
            self._rescan_wds.add(wd)
        return wd

    def _watch_failed(self, directory: Path, err: OSError) -> None:
        if err.errno == errno.ENOSPC:
            self._watch_limit(directory)
        elif err.errno in (errno.EACCES, errno.EPERM):
            self.stats["skipped_dirs"] += 1
            log.warning("watch_permission_denied", path=str(directory), error=str(err))
        elif err.errno in (errno.ENOENT, errno.ENOTDIR):
            log.debug("watch_target_gone", path=str(directory))
        else:
            self.stats["skipped_dirs"] += 1
            log.error("watch_failed", path=str(directory), error=str(err))

    def _watch_limit(self, directory: Path) -> None:
        self.stats["watch_limit_hits"] += 1
        self.stats["skipped_dirs"] += 1
        try:
            limit = _MAX_USER_WATCHES.read_text().strip()
        except OSError:
            limit = "?"
        message = (
            f"inotify watch limit reached (fs.inotify.max_user_watches={limit}): "
            f"{directory} is not watched; raise it, e.g. "
            "sysctl -w fs.inotify.max_user_watches=524288"
        )
        if not self.watch_limit_reached:
            log.error(
                "inotify_watch_limit",
                path=str(directory),
                root=str(self.root),
                watches=len(self._watches),
                max_user_watches=limit,
                hint="sysctl -w fs.inotify.max_user_watches=524288",
            )
        else:
            log.debug("inotify_watch_limit", path=str(directory))
        self.watch_limit_reached = True
        if self._on_error is not None:
            self._on_error(message)

    def _unwatch(self, wd: int) -> None:
        watch = self._watches.pop(wd, None)
        directory = self._wd_dir.pop(wd, None)
        if directory is not None and self._dir_wd.get(directory) == wd:
            del self._dir_wd[directory]
        if watch is not None and self._inotify is not None:
            with contextlib.suppress(OSError):
                self._inotify.rm_watch(watch)

    def _drop_subtree(self, top: Path, now: float) -> None:
        """A directory left the tree: drop its watches, DELETED for its known files."""
        for directory in self._under(top, self._dir_wd):
            self._unwatch(self._dir_wd[directory])
        for directory in sorted(self._under(top, self._known)):
            for name in sorted(self._known.pop(directory)):
                self._emit(FileEventKind.DELETED, directory / name, now)

    def _dir_moved(self, src: Path, dst: Path, now: float) -> None:
        """A directory renamed within the tree: remap watches and files (MOVED)."""
        if src not in self._dir_wd:
            if not self._excluded(dst.name):
                self._scan.append((dst, FileEventKind.CREATED))
            return
        if self._excluded(dst.name):
            self._drop_subtree(src, now)
            return
        moved = {d: self._dir_wd.pop(d) for d in self._under(src, self._dir_wd)}
        for directory, wd in moved.items():
            new_dir = self._rebase(directory, src, dst)
            replaced = self._dir_wd.get(new_dir)
            if replaced is not None and replaced not in moved.values():
                self._unwatch(replaced)
            self._dir_wd[new_dir] = wd
            self._wd_dir[wd] = new_dir
        for directory in sorted(self._under(src, self._known)):
            names = self._known.pop(directory)
            new_dir = self._rebase(directory, src, dst)
            for name in sorted(names):
                old, new = directory / name, new_dir / name
                if self._include is None or self._include(new):
                    self._remember(new)
                    self._emit(FileEventKind.MOVED, new, now, old)
                else:
                    self._emit(FileEventKind.DELETED, old, now)
        self._scan.append((dst, FileEventKind.CREATED))

    # -- root ----------------------------------------------------------------------------
    def _wait_for_root(self) -> None:
        """Watch the root if it exists (and queue its scan), else its nearest ancestor."""
        inotify = self._inotify
        assert inotify is not None
        for _ in range(len(self.root.parts) + 8):
            if self.root.is_dir():
                wd = self._watch_dir(self.root)
                if wd is not None:
                    self._root_wd = wd
                    self._scan.append((self.root, FileEventKind.EXISTING))
                    return
                if self.root.is_dir():
                    return  # the root itself cannot be watched (logged); nothing to do
            ancestor = self.root.parent
            while not ancestor.is_dir():
                ancestor = ancestor.parent
            try:
                self._ancestor = inotify.add_watch(ancestor, _ANCESTOR_MASK)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue
                self._watch_failed(ancestor, err)
                return
            if not (ancestor / self.root.parts[len(ancestor.parts)]).is_dir():
                log.info("watch_root_missing", root=str(self.root), waiting_on=str(ancestor))
                return
            self._drop_ancestor()
        log.error("watch_root_unstable", root=str(self.root))

    def _drop_ancestor(self) -> None:
        if self._ancestor is not None and self._inotify is not None:
            with contextlib.suppress(OSError):
                self._inotify.rm_watch(self._ancestor)
        self._ancestor = None

    def _root_lost(self, now: float) -> None:
        """The root was deleted or moved away: DELETED for all files, wait for it again."""
        log.info("watch_root_gone", root=str(self.root), known_files=len(self.known_files))
        for wd in list(self._watches):
            self._unwatch(wd)
        self._root_wd = None
        self._scan.clear()
        self._moves.clear()
        self._rescan_unseen = self._rescan_wds = None
        for path in sorted(self.known_files):
            self._emit(FileEventKind.DELETED, path, now)
        self._known.clear()
        self._wait_for_root()

    # -- overflow ------------------------------------------------------------------------
    def _overflow(self, now: float) -> None:
        """IN_Q_OVERFLOW: events were lost; rescan everything."""
        self.stats["overflows"] += 1
        log.warning("inotify_overflow", root=str(self.root), known_files=len(self.known_files))
        self._moves.clear()
        self._scan.clear()
        if self._root_wd is None:
            self._drop_ancestor()
            self._wait_for_root()
            return
        self._rescan_unseen = set(self.known_files)
        self._rescan_wds = set()
        self._scan.append((self.root, FileEventKind.EXISTING))

    def _finish_rescan(self) -> None:
        unseen, seen_wds = self._rescan_unseen or set(), self._rescan_wds or set()
        self._rescan_unseen = self._rescan_wds = None
        now = time.time()
        for path in sorted(unseen):
            if self._forget(path):
                self._emit(FileEventKind.DELETED, path, now)
        for wd in list(self._watches):
            if wd not in seen_wds and self._root_wd is not None:
                self._unwatch(wd)

    # -- helpers -------------------------------------------------------------------------
    def _emit(self, kind: FileEventKind, path: Path, now: float, src: Path | None = None) -> None:
        self._out.append(FileEvent(kind, path, now, src))

    def _excluded(self, name: str) -> bool:
        return self._exclude is not None and self._exclude.match(name) is not None

    def _tracked(self, path: Path) -> bool:
        return not self._excluded(path.name) and (self._include is None or self._include(path))

    def _remember(self, path: Path) -> bool:
        names = self._known.setdefault(path.parent, set())
        if path.name in names:
            return False
        names.add(path.name)
        return True

    def _forget(self, path: Path) -> bool:
        names = self._known.get(path.parent)
        if not names or path.name not in names:
            return False
        names.discard(path.name)
        if not names:
            del self._known[path.parent]
        return True

    def _is_known(self, path: Path) -> bool:
        names = self._known.get(path.parent)
        return names is not None and path.name in names

    @staticmethod
    def _under(top: Path, paths: Iterable[Path]) -> list[Path]:
        prefix = str(top).rstrip(os.sep) + os.sep
        return [p for p in paths if p == top or str(p).startswith(prefix)]

    @staticmethod
    def _rebase(path: Path, src: Path, dst: Path) -> Path:
        return dst if path == src else dst / path.relative_to(src)
