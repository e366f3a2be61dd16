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
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Protocol

import structlog

from .compact import set_state_shared
from .local_modules import LocalModules, Rel, module_entry, relative
from .module_paths import install_dirs
from .pysource import ImportSplit, SourceError, parse_module, split_imports, top_level

if TYPE_CHECKING:
    from ..sources.records import FileRecord

log = structlog.get_logger(__name__)

STDLIB_MODULES: frozenset[str] = frozenset(sys.stdlib_module_names) | frozenset(
    sys.builtin_module_names
)
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


class ImportIndex:
    """Required imports per source file, and which of them resolve nowhere.

    Files are keyed by ``(root, path relative to root)``. A module is *missing* for a file
    when it is not installed (the resolver), not in the standard library, and not a module
    of the roots visible from that file (:class:`LocalModules`).
    """

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.local = LocalModules()
        self._imports: dict[tuple[str, str], frozenset[str]] = {}
        """(root, POSIX path relative to it) -> the file's required imports."""
        self._dotted: dict[tuple[str, str], frozenset[str]] = {}
        self._importers: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._dotted_by_part: dict[str, set[str]] = defaultdict(set)
        """Part -> the dotted modules ever imported that have it (``a.b`` under a and b)."""
        self._unseen: dict[str, list[str]] = {}
        """Module -> the files that see it nowhere in the roots (what :meth:`missing_for`
        returns when the resolver does not find it), kept until its importers or the
        roots' names it consists of change (:meth:`_changed_names`)."""

    def __getstate__(self) -> dict[str, object]:
        """Everything but the resolver (a saved fold gets the resolver of its time)."""
        return {k: v for k, v in self.__dict__.items() if k != "resolver"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.resolver = ModuleResolver()

    @property
    def modules(self) -> set[str]:
        return set(self._importers)  # a module nobody imports is not kept

    def set_file(self, root: str, rel: Rel, imports: FileImports | None) -> set[str]:
        """Record a source file and its required imports (None: keep the imports it had,
        e.g. it does not parse right now). Returns the module names whose status may have
        changed."""
        rel = posix(rel)
        key = (root, rel)
        old = self._imports.get(key)
        packages: set[str] = set()
        affected: set[str] = set()
        if old is None:
            affected = self.local.add(root, rel, packages)
            self._changed_names(root, rel)
        new = old if imports is None else imports.required
        new = frozenset() if new is None else new
        old_dotted = self._dotted.get(key, frozenset())
        new_dotted = old_dotted if imports is None else imports.dotted
        if self._unseen:
            for module in (new ^ (old or frozenset())) | (new_dotted ^ old_dotted):
                self._unseen.pop(module, None)
        self._dotted[key] = new_dotted
        for module in old_dotted - new_dotted:
            self._drop_importer(module, key)
        for module in new_dotted:
            self._importers[module].add(key)
            for part in module.split("."):
                self._dotted_by_part[part].add(module)
        if affected or packages:  # dotted imports through these names may resolve now
            affected |= self._dotted_modules(affected | packages)
        for module in (old or frozenset()) - new:
            self._drop_importer(module, key)
        for module in new:
            self._importers[module].add(key)
        self._imports[key] = new
        return affected | set(old or ()) | set(new) | old_dotted | new_dotted

    def remove_file(self, root: str, rel: Rel) -> set[str]:
        rel = posix(rel)
        key = (root, rel)
        old = self._imports.pop(key, None)
        if old is None:
            return set()
        dotted = self._dotted.pop(key, frozenset())
        for module in old | dotted:
            self._drop_importer(module, key)
            self._unseen.pop(module, None)
        packages: set[str] = set()
        gone = self.local.discard(root, rel, packages)
        self._changed_names(root, rel)
        changed = gone | packages
        return set(old) | set(dotted) | gone | (self._dotted_modules(changed) if changed else set())

    def _drop_importer(self, module: str, key: tuple[str, str]) -> None:
        """``key`` no longer imports ``module``; a module nobody imports is forgotten (the
        index stays the size of what the tree imports now, however long it runs)."""
        files = self._importers.get(module)
        if files is None:
            return
        files.discard(key)
        if files:
            return
        del self._importers[module]
        self._unseen.pop(module, None)
        for part in module.split("."):
            modules = self._dotted_by_part.get(part)
            if modules is not None:
                modules.discard(module)
                if not modules:
                    del self._dotted_by_part[part]

    def share_imports(self, records: Iterable[FileRecord]) -> None:
        """After a load: hold the records' own import sets (equal to the ones loaded,
        which are then freed) instead of copies."""
        imports, dotted = self._imports, self._dotted
        for record in records:
            if record.facts is not None:
                key = (record.root, relative(record.path, record.root))
                if key in imports:
                    imports[key] = record.facts.imports.required
                    dotted[key] = record.facts.imports.dotted

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
        return self._unseen_by(module, files)

    def _missing_dotted(self, module: str, files: set[tuple[str, str]]) -> list[str]:
        """Files importing ``a.b.c`` where ``a`` is a module of the roots (visible from the
        file) but ``a.b.c`` exists neither there nor installed. A dotted import of a
        library that is not in the roots is left to its top-level name."""
        out = self._unseen_by(module, files)
        if out and self.resolver.resolves(module):
            return []
        return out

    def _unseen_by(self, module: str, files: set[tuple[str, str]]) -> list[str]:
        """The files of ``files`` (``module``'s importers) that find ``module`` nowhere in
        the roots: a pure function of the importers and of the roots' names that
        ``module`` consists of, so kept in :attr:`_unseen` until one of those changes."""
        out = self._unseen.get(module)
        if out is None:
            if "." in module:
                parts = module.split(".")
                out = self._where(parts[0], files, lambda root, rel: self.local.visible(
                    parts[0], root, rel) and not self.local.has_path(parts, root, rel))
            else:
                out = self._where(module, files, lambda root, rel: not self.local.visible(
                    module, root, rel))
            self._unseen[module] = out
        return list(out)

    def _changed_names(self, root: str, rel: str) -> None:
        """A file was counted in or out of the roots: every count it changed is of a name
        on its path (its directories, its module, its root's name), so only the modules
        made of one of those names may see the roots differently now."""
        if not self._unseen:
            return
        parts = rel.split("/")
        names = {*parts[:-1], module_entry(parts[-1]) or parts[-1], PurePath(root).name}
        for name in names:
            self._unseen.pop(name, None)
            for module in self._dotted_by_part.get(name, ()):
                self._unseen.pop(module, None)

    @staticmethod
    def _where(
        name: str, files: set[tuple[str, str]], missing: Callable[[str, str], bool]
    ) -> list[str]:
        """The paths (sorted) of ``files`` for which ``missing`` holds, asked once per
        place: what a file sees of ``name`` depends on its root, its directory and
        whether the file is itself named ``name`` (a module imported by thousands of
        files in a few hundred directories costs a few hundred checks)."""
        answers: dict[tuple[str, str, bool], bool] = {}
        out: list[str] = []
        for root, rel in files:
            directory, _, base = rel.rpartition("/")
            place = (root, directory, module_entry(base) == name)
            answer = answers.get(place)
            if answer is None:
                answer = answers[place] = missing(root, rel)
            if answer:
                out.append(os.path.join(root, rel))
        return sorted(out)

    def missing(self) -> dict[str, list[str]]:
        """Every missing module with its importing files."""
        out = {}
        for module in sorted(self.modules):
            if files := self.missing_for(module):
                out[module] = files
        return out


def posix(rel: Rel) -> str:
    """A relative path as the POSIX string the index keys files by."""
    return rel if isinstance(rel, str) else rel.as_posix()


def read_imports(source: bytes, filename: str) -> FileImports | None:
    """:func:`file_imports`, logging and returning None for a file that does not parse."""
    try:
        return file_imports(source, filename)
    except SourceError as err:
        log.info("import_scan_skipped", path=filename, error=err.message, line=err.line)
        return None
