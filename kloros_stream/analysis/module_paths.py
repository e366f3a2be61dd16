"""Module resolution against another interpreter's ``sys.path``, by looking at files only.

The service's own finders answer for the service's Python; the watched system may run
another one (another version, another venv). :class:`PathResolver` answers whether a
dotted module name exists on a given search path the way CPython's path finder would find
it, without importing anything and without our own interpreter's assumptions:

* a top-level name in the interpreter's standard-library names always resolves;
* ``name/`` (a regular or namespace package), ``name.py``, ``name.pyc``, ``name.pyi``,
  ``name.so``/``name.pyd`` and any ``name.<tag>.so`` (extension modules of every ABI tag)
  in a search directory resolve;
* setuptools editable installs map a name to a source directory (the probe reads their
  finders' ``MAPPING``);
* a dotted name descends package directories (all portions of a namespace package); a
  part below a plain module is one of its attributes (``os.path``) and resolves.

Lookups are cached until :meth:`PathResolver.invalidate` (call it when a site directory
changes). :func:`install_dirs` picks the directories where installs land.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_SOURCE_SUFFIXES = (".py", ".pyc", ".pyi", ".so", ".pyd")


def install_dirs(entries: Iterable[str], stdlib_dirs: Iterable[str]) -> list[Path]:
    """The absolute, non-zip ``sys.path`` entries that are not the standard library itself
    (nor ``lib-dynload`` under it). Missing ones are kept: they may appear."""
    stdlib = set()
    for d in stdlib_dirs:
        try:
            stdlib.add(Path(d).resolve())
        except OSError:
            stdlib.add(Path(d))
    out: list[Path] = []
    for entry in entries:
        if not entry or entry.endswith((".zip", ".egg")):
            continue
        path = Path(entry)
        if not path.is_absolute() or path in out:
            continue
        try:
            resolved = path.resolve()
        except OSError:
            resolved = path
        if resolved in stdlib or (resolved.parent in stdlib and resolved.name == "lib-dynload"):
            continue
        out.append(path)
    return out


def _entries(directory: Path) -> frozenset[str] | None:
    try:
        return frozenset(os.listdir(directory))
    except OSError:
        return None


class PathResolver:
    """Whether a module exists on a search path (see the module docstring)."""

    def __init__(
        self,
        search_path: Iterable[str],
        stdlib_names: Iterable[str],
        editable: dict[str, str] | None = None,
    ) -> None:
        self.search_path = [Path(p) for p in search_path if p and not p.endswith(".zip")]
        self.stdlib_names = frozenset(stdlib_names)
        self.editable = dict(editable or {})
        self._listing: dict[Path, frozenset[str] | None] = {}
        self._cache: dict[str, bool] = {}

    def invalidate(self) -> None:
        self._listing.clear()
        self._cache.clear()

    def resolves(self, name: str) -> bool:
        found = self._cache.get(name)
        if found is None:
            found = self._cache[name] = self._find(name)
        return found

    def _listdir(self, directory: Path) -> frozenset[str] | None:
        if directory not in self._listing:
            self._listing[directory] = _entries(directory)
        return self._listing[directory]

    def _locate(self, name: str, directories: Iterable[Path]) -> tuple[bool, list[Path]]:
        """(found, package directories) for ``name`` in ``directories``."""
        found = False
        packages: list[Path] = []
        for directory in directories:
            names = self._listdir(directory)
            if not names:
                continue
            if name in names and (directory / name).is_dir():
                packages.append(directory / name)
                found = True
                continue
            if any(f"{name}{s}" in names for s in _SOURCE_SUFFIXES) or any(
                n.startswith(f"{name}.") and n.endswith((".so", ".pyd")) for n in names
            ):
                return True, packages  # a plain module shadows later portions
        return found, packages

    def _find(self, name: str) -> bool:
        parts = name.split(".")
        top = parts[0]
        if top in self.stdlib_names:
            return True
        found, packages = self._locate(top, self.search_path)
        if top in self.editable:
            target = Path(self.editable[top])
            found = True
            packages = [target, *packages] if target.is_dir() else packages
        if not found:
            return False
        for part in parts[1:]:
            if not packages:
                return True  # below a plain module: an attribute
            found, packages = self._locate(part, packages)
            if not found:
                return False
        return True
