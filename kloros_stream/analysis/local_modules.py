"""Importable names a source tree itself provides (:class:`LocalModules`). Pure."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

MODULE_SUFFIXES: tuple[str, ...] = (".py", ".pyi", ".pyc", ".so", ".pyd")


def module_entry(name: str) -> str | None:
    """The importable name a file gives its directory (``x.py``, ``x.cpython-311-...so``)."""
    for suffix in MODULE_SUFFIXES:
        if name.endswith(suffix):
            stem = name[: -len(suffix)].split(".", 1)[0]
            return stem if stem.isidentifier() else None
    return None


Rel = PurePath | str
"""A file's path relative to its root: a PurePath, or its POSIX string (what an index of
a whole tree keeps: a string costs a tenth of a PurePath)."""


def relative(path: str, root: str) -> str:
    """``path`` relative to ``root`` as a POSIX string, both absolute and normalised
    (``str`` of a ``Path``): ``PurePath(path).relative_to(root).as_posix()`` without
    building the objects (a whole tree's worth of them at a start)."""
    base = root if root.endswith("/") else root + "/"
    if path.startswith(base):
        return path[len(base):]
    return PurePath(path).relative_to(root).as_posix()  # not under root: its error


def parts_of(rel: Rel) -> tuple[str, ...]:
    if isinstance(rel, str):
        return tuple(rel.split("/")) if rel else ()
    return rel.parts


def _counter(counts: dict[str, int]) -> Counter[str]:
    out: Counter[str] = Counter.__new__(Counter)
    dict.update(out, counts)
    return out


class LocalModules:
    """Importable names that a source tree itself provides, per directory.

    Every source file ``a/b/c.py`` (relative to its root) makes ``a`` visible in the root,
    ``b`` in ``a`` and ``c`` in ``a/b``. A file sees the names of any root's top level and
    of each directory between its own root and itself (scripts run from their own
    directory, tests run with their rootdir on the path).
    """

    def __init__(self) -> None:
        self._names: dict[tuple[str, tuple[str, ...]], Counter[str]] = defaultdict(Counter)
        self._top: Counter[str] = Counter()
        self._root_names: set[str] = set()
        self._roots: dict[str, str] = {}
        """Every root seen -> its directory name."""

    def __getstate__(self) -> dict[str, object]:
        """Counters as plain dicts: a saved fold of a large tree loads in a tenth of the
        time (a Counter is rebuilt by Python code, a dict is not)."""
        return {"names": {key: dict(c) for key, c in self._names.items()},
                "top": dict(self._top), "root_names": self._root_names, "roots": self._roots}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._names = defaultdict(Counter)
        for key, counts in state["names"].items():
            self._names[key] = _counter(counts)
        self._top = _counter(state["top"])
        self._root_names = state["root_names"]
        self._roots = state["roots"]

    @staticmethod
    def _entries(rel: Rel) -> list[tuple[tuple[str, ...], str]]:
        parts = parts_of(rel)
        stem = module_entry(parts[-1]) if parts else None
        entries = [(tuple(parts[:i]), parts[i]) for i in range(len(parts) - 1)]
        return entries + ([(tuple(parts[:-1]), stem)] if stem else [])

    def add(self, root: str, rel: Rel, packages: set[str] | None = None) -> set[str]:
        """Count a file; returns the names that became visible somewhere. ``packages``
        gets the names of directories (or the root) that became packages: below them, a
        dotted name no longer reads as an attribute of a plain module."""
        if root not in self._roots:
            self._roots[root] = PurePath(root).name
            self._root_names.add(self._roots[root])
        new: set[str] = set()
        for directory, name in self._entries(rel):
            if packages is not None and (root, directory) not in self._names:
                packages.add(directory[-1] if directory else self._roots[root])
            counter = self._names[(root, directory)]
            if counter[name] == 0:
                new.add(name)
            counter[name] += 1
            if not directory:
                self._top[name] += 1
        return new

    def discard(self, root: str, rel: Rel, packages: set[str] | None = None) -> set[str]:
        """Uncount a file; returns the names that vanished somewhere. ``packages`` gets
        the names of directories (or the root) left without files."""
        gone: set[str] = set()
        for directory, name in self._entries(rel):
            counter = self._names.get((root, directory))
            if counter is None or counter[name] <= 0:
                continue
            counter[name] -= 1
            if not directory:
                self._top[name] -= 1
                if self._top[name] <= 0:
                    del self._top[name]
            if counter[name] <= 0:
                del counter[name]
                gone.add(name)
                if not counter:
                    del self._names[(root, directory)]
                    if packages is not None:
                        packages.add(directory[-1] if directory else self._roots[root])
        return gone

    def is_fold(self) -> bool:
        """Whether every root seen still has files: then this is exactly what counting
        the files present gives (a root left empty stays importable by its name)."""
        return all((root, ()) in self._names for root in self._roots)

    def has_path(self, parts: Sequence[str], root: str, rel: Rel) -> bool:
        """Whether the dotted module ``parts`` exists in the roots as seen from ``rel``:
        from every place its first part is visible, descend package directories; a part
        below a plain module is an attribute of it."""
        top = parts[0]
        bases: list[tuple[str, tuple[str, ...], Sequence[str]]] = []
        for r, name in self._roots.items():
            counter = self._names.get((r, ()))
            if counter is None:
                continue  # no file left in this root
            if counter[top] > 0:
                bases.append((r, (), parts))
            if name == top:
                bases.append((r, (), parts[1:]))
        dirs = parts_of(rel)[:-1]
        for i in range(1, len(dirs) + 1):
            counter = self._names.get((root, tuple(dirs[:i])))
            if counter is not None and counter[top] > 0:
                bases.append((root, tuple(dirs[:i]), parts))
        return any(self._descend(r, d, rest) for r, d, rest in bases)

    def _descend(self, root: str, directory: tuple[str, ...], parts: Sequence[str]) -> bool:
        for part in parts:
            counter = self._names.get((root, directory))
            if counter is None:
                return True  # ``directory`` is a plain module: the rest are attributes
            if counter[part] <= 0:
                return False
            directory = (*directory, part)
        return True

    def visible(self, name: str, root: str, rel: Rel) -> bool:
        """Whether ``name`` is a module of the roots that the file ``rel`` can import.

        A root is itself importable by its own name from its parent directory (a package
        root such as ``tests/`` imported as ``tests.support`` by a sibling tree). A file
        does not make its own name visible to itself: ``extensions/mccabe.py`` importing
        ``mccabe`` means the library, not itself."""
        parts = parts_of(rel)
        own = 1 if parts and module_entry(parts[-1]) == name else 0
        parts = parts[:-1]
        if self._top[name] - (own if not parts else 0) > 0 or name in self._root_names:
            return True
        for i in range(1, len(parts) + 1):
            counter = self._names.get((root, tuple(parts[:i])))
            mine = own if i == len(parts) else 0
            if counter is not None and counter[name] - mine > 0:
                return True
        return False


__all__ = ["MODULE_SUFFIXES", "LocalModules", "module_entry", "relative"]
