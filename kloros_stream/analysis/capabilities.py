"""What the environment can do: executables on PATH, importable modules, and the imports of
a source tree that resolve nowhere.

Nothing here imports or runs the code it looks at. Module resolution asks the import
system's finders for a *spec* of a top-level name (``find_spec`` on a top-level name does
not import anything), never bypassing to ``sys.modules``, so a module uninstalled after
the service imported it is still seen as gone. Executable lookup and spec lookup touch the
filesystem (``stat``); everything else is pure.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Protocol

import structlog

from .compact import set_state_shared
from .module_paths import install_dirs
from .pysource import ImportSplit, SourceError, parse_module, split_imports, top_level

log = structlog.get_logger(__name__)

STDLIB_MODULES: frozenset[str] = frozenset(sys.stdlib_module_names) | frozenset(
    sys.builtin_module_names
)
MODULE_SUFFIXES: tuple[str, ...] = (".py", ".pyi", ".pyc", ".so", ".pyd")
MAX_FILES_IN_FACTS = 20
"""Bound on the importing files listed in a ``missing_library`` gap."""


# -- executables ---------------------------------------------------------------------------
def path_dirs(path_value: str | None) -> list[Path]:
    """The directories of a ``PATH`` value, in order, without empties or repeats."""
    out: list[Path] = []
    for part in (path_value or "").split(os.pathsep):
        if part and Path(part) not in out:
            out.append(Path(part))
    return out


def is_executable(path: Path) -> bool:
    """A regular file (or a link to one) that we may execute."""
    try:
        return path.is_file() and os.access(path, os.X_OK)
    except OSError:
        return False


def find_executable(name: str, dirs: Sequence[Path]) -> Path | None:
    """Where ``name`` is found on ``dirs`` (first match), or None. A name with a ``/`` is
    a path and is checked as is."""
    if "/" in name:
        path = Path(name)
        return path if is_executable(path) else None
    for directory in dirs:
        candidate = directory / name
        if is_executable(candidate):
            return candidate
    return None


# -- modules -------------------------------------------------------------------------------
class ModuleResolver:
    """Whether a module is installed, without importing it; results cached until
    :meth:`invalidate` (call it when a site-packages directory changes). A top-level name
    of the standard library always resolves (``winreg`` on Linux is a platform switch,
    not a missing library).

    Asks every finder on ``sys.meta_path`` (built-ins, frozen, ``sys.path`` entries,
    editable-install finders) for a spec. A dotted name is resolved part by part with the
    path finder over the parent's search locations, which also imports nothing.
    """

    def __init__(self) -> None:
        self._cache: dict[str, bool] = {}

    def invalidate(self) -> None:
        importlib.invalidate_caches()
        self._cache.clear()

    def resolves(self, name: str) -> bool:
        found = self._cache.get(name)
        if found is None:
            found = self._cache[name] = name in STDLIB_MODULES or self._find(name)
        return found

    def _find(self, name: str) -> bool:
        parts = name.split(".")
        spec = _top_level_spec(parts[0])
        if spec is None:
            return False
        for i in range(1, len(parts)):
            if spec.submodule_search_locations is None:
                return True  # a plain module: ``os.path``, ``six.moves`` are its attributes
            try:
                locations = list(spec.submodule_search_locations)
                spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), locations)
            except Exception as err:  # a finder's own failure: treat as not found
                log.debug("module_spec_failed", module=name, error=repr(err))
                return False
            if spec is None:
                return False
        return True


def _top_level_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(name, None)
        except Exception as err:  # a third-party finder failing must not crash us
            log.debug("module_spec_failed", module=name, finder=repr(finder), error=repr(err))
            continue
        if spec is not None:
            return spec
    return None


def site_dirs(entries: Iterable[str] | None = None) -> list[Path]:
    """The directories on ``sys.path`` (or ``entries``) where installs land: absolute,
    not the standard library itself (nor its lib-dynload), not zip files. Missing ones are
    kept (they may appear)."""
    stdlib = str(Path(os.__file__).resolve().parent)
    return install_dirs(sys.path if entries is None else entries, [stdlib])


class Resolver(Protocol):
    """Whether a module is installed: :class:`ModuleResolver` (the service's own Python) or
    :class:`~kloros_stream.analysis.module_paths.PathResolver` (the watched system's)."""

    def resolves(self, name: str) -> bool: ...

    def invalidate(self) -> None: ...


# -- imports of a source tree ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FileImports:
    """Top-level module names a file imports at module level, split like ``pysource``."""

    required: frozenset[str]
    optional: frozenset[str]
    dotted: frozenset[str] = frozenset()
    """Required imports of a dotted path (``import a.b.c``, ``from a.b import x``)."""

    def __setstate__(self, state: list[object]) -> None:
        set_state_shared(self, state)  # from a parse process: empty containers shared


def file_imports(source: bytes, filename: str = "<source>") -> FileImports:
    """The top-level names ``source`` imports; raises :class:`SourceError` if it does not
    parse (the caller keeps the file's previous imports)."""
    return imports_of(split_imports(parse_module(source, filename)))


def imports_of(split: ImportSplit) -> FileImports:
    """The :class:`FileImports` of a module's import split (pure)."""
    required = frozenset(top_level(m) for m in split.required)
    return FileImports(
        required=required,
        optional=frozenset(top_level(m) for m in split.optional) - required,
        dotted=frozenset(m for m in split.required if "." in m),
    )


def _module_entry(name: str) -> str | None:
    """The importable name a file gives its directory (``x.py``, ``x.cpython-311-...so``)."""
    for suffix in MODULE_SUFFIXES:
        if name.endswith(suffix):
            stem = name[: -len(suffix)].split(".", 1)[0]
            return stem if stem.isidentifier() else None
    return None


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

    @staticmethod
    def _entries(rel: PurePath) -> list[tuple[tuple[str, ...], str]]:
        parts = rel.parts
        stem = _module_entry(parts[-1]) if parts else None
        entries = [(tuple(parts[:i]), parts[i]) for i in range(len(parts) - 1)]
        return entries + ([(tuple(parts[:-1]), stem)] if stem else [])

    def add(self, root: str, rel: PurePath) -> set[str]:
        """Count a file; returns the names that became visible somewhere."""
        new: set[str] = set()
        for directory, name in self._entries(rel):
            counter = self._names[(root, directory)]
            if counter[name] == 0:
                new.add(name)
            counter[name] += 1
            if not directory:
                self._top[name] += 1
        if root not in self._roots:
            self._roots[root] = PurePath(root).name
            self._root_names.add(self._roots[root])
        return new

    def discard(self, root: str, rel: PurePath) -> set[str]:
        """Uncount a file; returns the names that vanished somewhere."""
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
        return gone

    def knows_root(self, root: str) -> bool:
        return root in self._roots

    def has_path(self, parts: Sequence[str], root: str, rel: PurePath) -> bool:
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
        dirs = rel.parts[:-1]
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

    def visible(self, name: str, root: str, rel: PurePath) -> bool:
        """Whether ``name`` is a module of the roots that the file ``rel`` can import.

        A root is itself importable by its own name from its parent directory (a package
        root such as ``tests/`` imported as ``tests.support`` by a sibling tree). A file
        does not make its own name visible to itself: ``extensions/mccabe.py`` importing
        ``mccabe`` means the library, not itself."""
        own = 1 if _module_entry(rel.name) == name else 0
        parts = rel.parts[:-1]
        if self._top[name] - (own if not parts else 0) > 0 or name in self._root_names:
            return True
        for i in range(1, len(parts) + 1):
            counter = self._names.get((root, tuple(parts[:i])))
            mine = own if i == len(parts) else 0
            if counter is not None and counter[name] - mine > 0:
                return True
        return False


class ImportIndex:
    """Required imports per source file, and which of them resolve nowhere.

    Files are keyed by ``(root, path relative to root)``. A module is *missing* for a file
    when it is not installed (the resolver), not in the standard library, and not a module
    of the roots visible from that file (:class:`LocalModules`).
    """

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.local = LocalModules()
        self._imports: dict[tuple[str, PurePath], frozenset[str]] = {}
        self._dotted: dict[tuple[str, PurePath], frozenset[str]] = {}
        self._importers: dict[str, set[tuple[str, PurePath]]] = defaultdict(set)
        self._dotted_by_part: dict[str, set[str]] = defaultdict(set)
        """Part -> the dotted modules ever imported that have it (``a.b`` under a and b)."""

    @property
    def modules(self) -> set[str]:
        return {m for m, files in self._importers.items() if files}

    def set_file(self, root: str, rel: PurePath, imports: FileImports | None) -> set[str]:
        """Record a source file and its required imports (None: keep the imports it had,
        e.g. it does not parse right now). Returns the module names whose status may have
        changed."""
        key = (root, rel)
        old = self._imports.get(key)
        affected: set[str] = set()
        if old is None:
            new_root = not self.local.knows_root(root)
            affected = self.local.add(root, rel)
            if new_root:
                affected.add(PurePath(root).name)
        new = old if imports is None else imports.required
        new = frozenset() if new is None else new
        old_dotted = self._dotted.get(key, frozenset())
        new_dotted = old_dotted if imports is None else imports.dotted
        self._dotted[key] = new_dotted
        for module in old_dotted - new_dotted:
            self._importers[module].discard(key)
        for module in new_dotted:
            self._importers[module].add(key)
            for part in module.split("."):
                self._dotted_by_part[part].add(module)
        if affected:  # new names in the roots: dotted imports of them may resolve now
            affected |= self._dotted_modules(affected)
        for module in (old or frozenset()) - new:
            self._importers[module].discard(key)
        for module in new:
            self._importers[module].add(key)
        self._imports[key] = new
        return affected | set(old or ()) | set(new) | old_dotted | new_dotted

    def remove_file(self, root: str, rel: PurePath) -> set[str]:
        key = (root, rel)
        old = self._imports.pop(key, None)
        if old is None:
            return set()
        dotted = self._dotted.pop(key, frozenset())
        for module in old | dotted:
            self._importers[module].discard(key)
        gone = self.local.discard(root, rel)
        return set(old) | set(dotted) | gone | (self._dotted_modules(gone) if gone else set())

    def _dotted_modules(self, names: set[str]) -> set[str]:
        """Imported dotted modules with one of ``names`` as a part: the only ones whose
        resolution a change of those names can change."""
        out: set[str] = set()
        for name in names:
            out.update(m for m in self._dotted_by_part.get(name, ()) if self._importers.get(m))
        return out

    def missing_for(self, module: str) -> list[str]:
        """The files (``root/rel`` strings, sorted) for which ``module`` resolves nowhere;
        empty if it resolves for all of them."""
        files = self._importers.get(module)
        if files and "." in module:
            return self._missing_dotted(module, files)
        if not files or self.resolver.resolves(module):
            return []
        return sorted(
            str(PurePath(root) / rel)
            for root, rel in files
            if not self.local.visible(module, root, rel)
        )

    def _missing_dotted(self, module: str, files: set[tuple[str, PurePath]]) -> list[str]:
        """Files importing ``a.b.c`` where ``a`` is a module of the roots (visible from the
        file) but ``a.b.c`` exists neither there nor installed. A dotted import of a
        library that is not in the roots is left to its top-level name."""
        parts = module.split(".")
        out = [
            str(PurePath(root) / rel)
            for root, rel in files
            if self.local.visible(parts[0], root, rel)
            and not self.local.has_path(parts, root, rel)
        ]
        if out and self.resolver.resolves(module):
            return []
        return sorted(out)

    def missing(self) -> dict[str, list[str]]:
        """Every missing module with its importing files."""
        out = {}
        for module in sorted(self.modules):
            if files := self.missing_for(module):
                out[module] = files
        return out


def read_imports(source: bytes, filename: str) -> FileImports | None:
    """:func:`file_imports`, logging and returning None for a file that does not parse."""
    try:
        return file_imports(source, filename)
    except SourceError as err:
        log.info("import_scan_skipped", path=filename, error=err.message, line=err.line)
        return None
