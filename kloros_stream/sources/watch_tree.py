"""A recursive watcher's state machine: raw inotify events in, file events out.

:class:`WatchTree` is synchronous: it applies one raw event or scans one directory at a
time and queues the resulting file events; :class:`~.watcher.RecursiveWatcher` drives it
from the event loop. Its guarantees are listed in :mod:`.watcher`.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog
from asyncinotify import Event, Inotify, Mask, Watch

from .file_events import FileEvent, FileEventKind
from .watch_state import KnownFiles, WatchTable, rebase

log = structlog.get_logger(__name__)

_DIR_MASK = (
    Mask.CREATE | Mask.MODIFY | Mask.CLOSE_WRITE | Mask.DELETE | Mask.MOVED_FROM
    | Mask.MOVED_TO | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.ONLYDIR | Mask.EXCL_UNLINK
)
_ANCESTOR_MASK = Mask.CREATE | Mask.MOVED_TO | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.ONLYDIR
_ROOT_GONE = Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.IGNORED | Mask.UNMOUNT
child: Callable[[Path, str], Path] = getattr(Path, "_make_child_relpath", Path.joinpath)
"""``directory / name`` for a name read from the directory (no separator in it): CPython's
own shortcut where it has one (it parses nothing; 5x faster at 20 k files a scan)."""


class WatchTree:
    """The state of one watched tree: raw inotify events and directory scans in,
    :class:`FileEvent` out (in ``out``); the arguments are :class:`RecursiveWatcher`'s."""

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
        self._mask = _DIR_MASK | Mask.ATTRIB if attrib else _DIR_MASK
        self._inotify: Inotify | None = None
        self._root_wd: int | None = None
        self._ancestor: Watch | None = None
        self._known = KnownFiles()
        self.out: deque[FileEvent] = deque()
        """File events made and not yet taken, oldest first."""
        self._scan: list[tuple[Path, FileEventKind]] = []
        self._moves: dict[int, tuple[Path, bool]] = {}
        self._rescan_unseen: set[Path] | None = None
        self._rescan_wds: set[int] | None = None
        self.stats: dict[str, int] = {
            "overflows": 0,
            "watch_limit_hits": 0,
            "skipped_dirs": 0,
        }
        self._table = WatchTable(self.root, self.stats, on_error)

    def open(self, inotify: Inotify) -> None:
        """Start on ``inotify``: watch the root (its scan is queued) or wait for it."""
        self._inotify = self._table.inotify = inotify
        self._wait_for_root()

    def close(self) -> None:
        """Forget the watches (the caller closes the inotify instance)."""
        self._inotify = self._table.inotify = None
        self._table.clear()
        self._ancestor = None

    @property
    def scan_pending(self) -> bool:
        return bool(self._scan)

    @property
    def rescan_pending(self) -> bool:
        """A rescan after overflow has scanned everything and waits for :meth:`finish_rescan`."""
        return self._rescan_unseen is not None

    @property
    def moves_pending(self) -> bool:
        """A MOVED_FROM waits for its MOVED_TO (see :meth:`flush_moves`)."""
        return bool(self._moves)

    @property
    def idle(self) -> bool:
        return not self.out and not self._scan and self._rescan_unseen is None

    @property
    def known_files(self) -> frozenset[Path]:
        return self._known.paths()

    @property
    def watched_dirs(self) -> frozenset[Path]:
        return self._table.dirs()

    @property
    def watch_limit_reached(self) -> bool:
        return self._table.limit_reached

    def handle_raw_event(self, event: Event, observed_at: float | None = None) -> None:
        """Apply one raw inotify event."""
        now = time.time() if observed_at is None else observed_at
        mask = event.mask
        if Mask.Q_OVERFLOW in mask:
            self._overflow(now)
            return
        if self._moves and not (Mask.MOVED_TO in mask and event.cookie in self._moves):
            self.flush_moves(now)
        watch = event.watch
        if watch is None:
            return
        wd = watch.wd
        if self._ancestor is not None and wd == self._ancestor.wd:
            self._on_ancestor_event(event)
            return
        directory = self._table.directory(wd)
        if directory is None:
            return  # a watch we already dropped
        if event.name is None:
            self._on_self_event(wd, directory, mask, now)
        elif Mask.ISDIR in mask:
            self._on_dir_event(directory / event.name, mask, event.cookie, now)
        else:
            self._on_file_event(directory / event.name, mask, event.cookie, now)

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
            src_known = pending is not None and self._known.discard(pending[0])
            if self._tracked(path):
                self._known.add(path)
                if src_known and pending is not None:
                    self._emit(FileEventKind.MOVED, path, now, pending[0])
                else:
                    self._emit(FileEventKind.CREATED, path, now)
            elif src_known and pending is not None:
                self._emit(FileEventKind.DELETED, pending[0], now)
        elif Mask.DELETE in mask:
            if self._known.discard(path):
                self._emit(FileEventKind.DELETED, path, now)
        elif Mask.CREATE in mask:
            if self._tracked(path) and self._known.add(path):
                self._emit(FileEventKind.CREATED, path, now)
        elif mask & (Mask.MODIFY | Mask.ATTRIB | Mask.CLOSE_WRITE):
            if not self._tracked(path):
                return
            if path not in self._known:
                if not os.path.lexists(path):
                    return
                self._known.add(path)
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

    def flush_moves(self, now: float) -> None:
        """Unpaired MOVED_FROM: the file or directory left the tree."""
        moves, self._moves = self._moves, {}
        for path, is_dir in moves.values():
            if is_dir:
                self._drop_subtree(path, now)
            elif self._known.discard(path):
                self._emit(FileEventKind.DELETED, path, now)

    # -- directories ---------------------------------------------------------------------
    def scan_next(self) -> None:
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
            dirs, files = self._list(directory)
        except (FileNotFoundError, NotADirectoryError):
            return  # removed meanwhile; its events follow
        except OSError as err:
            log.warning("watch_scan_failed", path=str(directory), error=str(err))
            return
        self._scan.extend((child(directory, name), kind) for name in dirs)
        include, unseen = self._include, self._rescan_unseen
        named = [(name, child(directory, name)) for name in files]
        if include is not None:
            named = [item for item in named if include(item[1])]
        fresh = self._known.add_in(directory, [name for name, _path in named])
        if kind is FileEventKind.EXISTING:
            if unseen is not None:
                unseen.difference_update(path for _name, path in named)
        elif len(fresh) < len(named):  # a new or moved-in directory: files not yet reported
            keep = set(fresh)
            named = [item for item in named if item[0] in keep]
        now = time.time()
        self.out.extend([FileEvent(kind, path, now) for _name, path in named])

    def _list(self, directory: Path) -> tuple[list[str], list[str]]:
        """The names in ``directory`` not excluded: its subdirectories (to scan, the first
        last: the scan stack pops them in order) and its files, sorted."""
        dirs: list[str] = []
        files: list[str] = []
        exclude = self._exclude
        with os.scandir(directory) as it:
            for entry in it:
                name = entry.name
                if exclude is not None and exclude.match(name) is not None:
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if not is_dir:
                    files.append(name)
                elif self._recursive:
                    dirs.append(name)
        dirs.sort(reverse=True)
        files.sort()
        return dirs, files

    def _watch_dir(self, directory: Path) -> int | None:
        wd = self._table.watch(directory, self._mask)
        if wd is not None and self._rescan_wds is not None:
            self._rescan_wds.add(wd)
        return wd

    def _drop_subtree(self, top: Path, now: float) -> None:
        """A directory left the tree: drop its watches, DELETED for its known files."""
        self._table.unwatch_under(top)
        for path in self._known.pop_under(top):
            self._emit(FileEventKind.DELETED, path, now)

    def _dir_moved(self, src: Path, dst: Path, now: float) -> None:
        """A directory renamed within the tree: remap watches and files (MOVED)."""
        if src not in self._table:
            if not self._excluded(dst.name):
                self._scan.append((dst, FileEventKind.CREATED))
            return
        if self._excluded(dst.name):
            self._drop_subtree(src, now)
            return
        self._table.move(src, dst)
        for old in self._known.pop_under(src):
            new = rebase(old, src, dst)
            if self._include is None or self._include(new):
                self._known.add(new)
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
                self._table.failed(ancestor, err)
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
        log.info("watch_root_gone", root=str(self.root), known_files=len(self._known))
        self._table.unwatch_all()
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
        log.warning("inotify_overflow", root=str(self.root), known_files=len(self._known))
        self._moves.clear()
        self._scan.clear()
        if self._root_wd is None:
            self._drop_ancestor()
            self._wait_for_root()
            return
        self._rescan_unseen = set(self.known_files)
        self._rescan_wds = set()
        self._scan.append((self.root, FileEventKind.EXISTING))

    def finish_rescan(self) -> None:
        """The rescan is done: DELETED for known files it did not see, stale watches dropped."""
        unseen, seen_wds = self._rescan_unseen or set(), self._rescan_wds or set()
        self._rescan_unseen = self._rescan_wds = None
        now = time.time()
        for path in sorted(unseen):
            if self._known.discard(path):
                self._emit(FileEventKind.DELETED, path, now)
        for wd in self._table.wds():
            if wd not in seen_wds and self._root_wd is not None:
                self._table.unwatch(wd)

    # -- helpers -------------------------------------------------------------------------
    def _emit(self, kind: FileEventKind, path: Path, now: float, src: Path | None = None) -> None:
        self.out.append(FileEvent(kind, path, now, src))

    def _excluded(self, name: str) -> bool:
        return self._exclude is not None and self._exclude.match(name) is not None

    def _tracked(self, path: Path) -> bool:
        return not self._excluded(path.name) and (self._include is None or self._include(path))
