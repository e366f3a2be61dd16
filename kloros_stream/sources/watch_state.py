"""A recursive watcher's bookkeeping: the files it knows and the directory watches it holds.

:class:`KnownFiles` is the set of known file paths, grouped by directory so a subtree can be
dropped or moved without scanning every path. :class:`WatchTable` maps inotify watch
descriptors to directories both ways, and logs and counts ``add_watch`` failures (``ENOSPC``,
the ``fs.inotify.max_user_watches`` limit, also goes to ``on_error``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog
from asyncinotify import Inotify, Mask, Watch

log = structlog.get_logger(__name__)

_MAX_USER_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


def under(top: Path, paths: Iterable[Path]) -> list[Path]:
    """The paths equal to ``top`` or below it."""
    prefix = str(top).rstrip(os.sep) + os.sep
    return [p for p in paths if p == top or str(p).startswith(prefix)]


def rebase(path: Path, src: Path, dst: Path) -> Path:
    """``path`` (``src`` or below it) moved from ``src`` to ``dst``."""
    return dst if path == src else dst / path.relative_to(src)


class KnownFiles:
    """The known file paths, grouped by directory."""

    def __init__(self) -> None:
        self._by_dir: dict[Path, set[str]] = {}

    def __contains__(self, path: Path) -> bool:
        names = self._by_dir.get(path.parent)
        return names is not None and path.name in names

    def __len__(self) -> int:
        return sum(len(names) for names in self._by_dir.values())

    def paths(self) -> frozenset[Path]:
        return frozenset(d / name for d, names in self._by_dir.items() for name in names)

    def add(self, path: Path) -> bool:
        """Remember ``path``; False if it was already known."""
        names = self._by_dir.setdefault(path.parent, set())
        if path.name in names:
            return False
        names.add(path.name)
        return True

    def add_in(self, directory: Path, names: list[str]) -> list[str]:
        """Remember ``names`` (files of ``directory``); returns those not known before."""
        known = self._by_dir.get(directory)
        if known is None:
            if names:
                self._by_dir[directory] = set(names)
            return names
        fresh = [name for name in names if name not in known]
        known.update(fresh)
        return fresh

    def discard(self, path: Path) -> bool:
        """Forget ``path``; False if it was not known."""
        names = self._by_dir.get(path.parent)
        if not names or path.name not in names:
            return False
        names.discard(path.name)
        if not names:
            del self._by_dir[path.parent]
        return True

    def pop_under(self, top: Path) -> list[Path]:
        """Forget every file under directory ``top``; returns them sorted by directory, name."""
        out: list[Path] = []
        for directory in sorted(under(top, self._by_dir)):
            out.extend(directory / name for name in sorted(self._by_dir.pop(directory)))
        return out

    def clear(self) -> None:
        self._by_dir.clear()


class WatchTable:
    """The directory watches held on one inotify instance: descriptor <-> directory.

    ``stats`` (shared with the watcher) counts ``watch_limit_hits`` and ``skipped_dirs``;
    ``root`` only labels log lines.
    """

    def __init__(
        self,
        root: Path,
        stats: dict[str, int],
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root
        self.stats = stats
        self.inotify: Inotify | None = None
        self.limit_reached = False
        self._on_error = on_error
        self._watches: dict[int, Watch] = {}
        self._wd_dir: dict[int, Path] = {}
        self._dir_wd: dict[Path, int] = {}

    def __contains__(self, directory: Path) -> bool:
        return directory in self._dir_wd

    def __len__(self) -> int:
        return len(self._watches)

    def dirs(self) -> frozenset[Path]:
        return frozenset(self._dir_wd)

    def wds(self) -> list[int]:
        return list(self._watches)

    def directory(self, wd: int) -> Path | None:
        """The directory watched by ``wd``, None for a watch already dropped."""
        return self._wd_dir.get(wd)

    def watch(self, directory: Path, mask: Mask) -> int | None:
        """Watch ``directory`` (replacing a stale mapping); None if ``add_watch`` failed."""
        inotify = self.inotify
        assert inotify is not None
        try:
            watch = inotify.add_watch(directory, mask)
        except OSError as err:
            self.failed(directory, err)
            return None
        wd = watch.wd
        old_dir = self._wd_dir.get(wd)
        if old_dir is not None and old_dir != directory and self._dir_wd.get(old_dir) == wd:
            del self._dir_wd[old_dir]
        old_wd = self._dir_wd.get(directory)
        if old_wd is not None and old_wd != wd:
            self.unwatch(old_wd)
        self._watches[wd] = watch
        self._wd_dir[wd] = directory
        self._dir_wd[directory] = wd
        return wd

    def unwatch(self, wd: int) -> None:
        watch = self._watches.pop(wd, None)
        directory = self._wd_dir.pop(wd, None)
        if directory is not None and self._dir_wd.get(directory) == wd:
            del self._dir_wd[directory]
        if watch is not None and self.inotify is not None:
            with contextlib.suppress(OSError):
                self.inotify.rm_watch(watch)

    def unwatch_under(self, top: Path) -> None:
        """Drop the watches of ``top`` and every directory below it."""
        for directory in under(top, self._dir_wd):
            self.unwatch(self._dir_wd[directory])

    def unwatch_all(self) -> None:
        for wd in list(self._watches):
            self.unwatch(wd)

    def move(self, src: Path, dst: Path) -> None:
        """Directory ``src`` was renamed to ``dst``: its watches (and its subtree's) follow."""
        moved = {d: self._dir_wd.pop(d) for d in under(src, self._dir_wd)}
        for directory, wd in moved.items():
            new_dir = rebase(directory, src, dst)
            replaced = self._dir_wd.get(new_dir)
            if replaced is not None and replaced not in moved.values():
                self.unwatch(replaced)
            self._dir_wd[new_dir] = wd
            self._wd_dir[wd] = new_dir

    def clear(self) -> None:
        """Forget every watch without removing it (the inotify instance is being closed)."""
        self._watches.clear()
        self._wd_dir.clear()
        self._dir_wd.clear()

    def failed(self, directory: Path, err: OSError) -> None:
        """Log and count an ``add_watch`` failure; the directory is skipped."""
        if err.errno == errno.ENOSPC:
            self._limit(directory)
        elif err.errno in (errno.EACCES, errno.EPERM):
            self.stats["skipped_dirs"] += 1
            log.warning("watch_permission_denied", path=str(directory), error=str(err))
        elif err.errno in (errno.ENOENT, errno.ENOTDIR):
            log.debug("watch_target_gone", path=str(directory))
        else:
            self.stats["skipped_dirs"] += 1
            log.error("watch_failed", path=str(directory), error=str(err))

    def _limit(self, directory: Path) -> None:
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
        if not self.limit_reached:
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
        self.limit_reached = True
        if self._on_error is not None:
            self._on_error(message)
