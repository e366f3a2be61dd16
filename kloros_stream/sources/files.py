"""Small filesystem helpers for file-based monitors: the initial walk of a tree (with the
watcher's exclude rules), a file's stat signature or size, and the root a path is under."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Sequence
from pathlib import Path


def excluded(name: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def walk_files(root: Path, exclude: Sequence[str], include: Callable[[Path], bool]) -> list[Path]:
    """Files under ``root`` that ``include`` accepts, skipping excluded names (matched
    against every path component, like the recursive watcher). Missing root: empty."""
    out: list[Path] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            if excluded(entry.name, exclude):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            path = Path(entry.path)
            if is_dir:
                stack.append(path)
            elif include(path):
                out.append(path)
    return sorted(out)


def file_signature(path: Path) -> tuple[int, int] | None:
    """(mtime_ns, size), or None if the file is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def file_size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def root_of(path: Path, roots: Sequence[Path]) -> Path | None:
    """The deepest root containing ``path``."""
    best: Path | None = None
    for root in roots:
        if path.is_relative_to(root) and (best is None or len(root.parts) > len(best.parts)):
            best = root
    return best
