"""capability_discovery: required executables and modules, and imports that resolve nowhere.

Event sources (no polling):

* the ``PATH`` directories of the service process, watched flat with inotify (create,
  delete, move, chmod): installing or removing a required tool raises or resolves its
  ``missing_tool`` gap at once;
* the install directories on ``sys.path`` (site-packages, ``PYTHONPATH`` entries), watched
  flat: a package directory, ``.dist-info``/``.egg-info`` or module appearing or vanishing
  re-resolves the modules (``missing_library``);
* with ``scan_imports``, the integration roots (``[monitors.integration] roots/exclude``,
  whether or not that monitor is enabled), through their
  :class:`~kloros_stream.sources.index.SourceIndex` (shared with the other source-tree
  monitors; each file parsed once there, never here): the module-level required
  imports of every ``.py`` file that resolve neither to an installed module, the standard
  library, nor a module of the roots are ``missing_library`` gaps, one per module, with
  the importing files in the facts. Guarded imports (``try/except ImportError``) are not.

The ``PATH`` and site directories are watched with
:class:`~kloros_stream.sources.flatwatch.FlatWatcher`; open gaps are kept in a
:class:`~kloros_stream.monitors.ledger.GapLedger`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog

from ..analysis.capabilities import (
    MAX_FILES_IN_FACTS,
    ImportIndex,
    ModuleResolver,
    find_executable,
    path_dirs,
    relative,
    site_dirs,
)
from ..analysis.missing_imports import ImportLines, missing_facts, missing_reason
from ..analysis.module_paths import PathResolver, install_dirs
from ..config import CapabilityDiscoveryConfig
from ..sources.flatwatch import FlatWatcher
from ..sources.folds import FoldCheckpoint
from ..sources.index import FileRecord, Item, SourceSpec, Subscription
from ..sources.index_journal import spec_key
from ..sources.interpreter import InterpreterError, probe
from ..sources.pacing import paced
from ..sources.watcher import FileEvent, FileEventKind
from .base import Monitor, MonitorContext, MonitorUnavailable
from .ledger import GapLedger

log = structlog.get_logger(__name__)


# -- the monitor ------------------------------------------------------------------------------
class CapabilityDiscoveryMonitor(Monitor[CapabilityDiscoveryConfig]):
    """Required tools and modules, and unresolved imports of the integration roots."""

    name = "capability_discovery"
    ecosystem = "capabilities"
    config_model = CapabilityDiscoveryConfig
    reads = ("integration",)

    def __init__(self, ctx: MonitorContext, *, path_value: str | None = None) -> None:
        super().__init__(ctx)
        integration = ctx.config.monitors.integration
        self.roots = [Path(os.path.abspath(r)) for r in integration.roots]
        self.spec = SourceSpec.of(ctx.config, integration.roots, integration.exclude)
        self.path_dirs = path_dirs(os.environ.get("PATH", "") if path_value is None else path_value)
        self.site_dirs = site_dirs()
        self.resolver = ModuleResolver()
        self.index = ImportIndex(self.resolver)
        self.files: dict[str, FileRecord | None] = {}
        """Absolute path -> the record applied (None: seen, not yet loaded)."""
        self.evidence = ImportLines()
        """Importing lines quoted by ``missing_library`` gaps, per file content."""
        self.ledger = GapLedger(ctx, self.ecosystem)
        self.folds = FoldCheckpoint(ctx.checkpoints, "import_index", spec_key(self.spec),
                                    code=(__name__,))
        """The import index and evidence as of the last clean stop (reused when no file
        changed; the resolver is never saved: every module is checked again)."""
        self._folded = False
        """The initial scan is done: :attr:`index` is the fold of :attr:`files`."""

    # -- run ------------------------------------------------------------------------------
    async def run(self) -> None:
        cfg = self.cfg
        if not (cfg.required_executables or cfg.required_modules or cfg.scan_imports):
            raise MonitorUnavailable(
                "nothing to check: no required_executables, no required_modules, scan_imports off"
            )
        assert self.ctx.sources is not None
        async with contextlib.AsyncExitStack() as stack:
            sub = None
            if cfg.scan_imports:
                sub = await stack.enter_async_context(
                    self.ctx.sources.subscribe(
                        self.spec, self.watch_error, status=self.ctx.status))
            if cfg.python:  # its site directories are the ones to watch
                await self._use_interpreter(cfg.python)
            watcher = None
            if not self.ctx.one_shot and (targets := self._dir_targets()):
                # Watched before the scan: a change meanwhile waits in the watcher, and
                # nothing is checked twice to catch up.
                watcher = await stack.enter_async_context(
                    FlatWatcher(targets, on_error=self.watch_error))
                self.ctx.status.details["watched_dirs"] = [str(d) for d in watcher.watched]
            await self._scan(sub)
            if self.ctx.one_shot:
                return
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._follow_dirs(watcher))
                    if sub is not None:
                        tg.create_task(self._follow_sources(sub))
            finally:
                self.ledger.flush()
                self._save_fold()
                # A stopped instance is not used again (a restart makes a new one): its
                # state is freed now (gc.freeze() left it to reference counting).
                self.index, self.evidence = ImportIndex(self.resolver), ImportLines()
                self.files = {}

    async def _scan(self, sub: Subscription | None) -> None:
        started = time.monotonic()
        if sub is not None:
            items = await sub.initial()
            if not await self._restore(items):
                async for root, event, record in paced(items):
                    self.on_file_event(root, event, record)
            self._folded = True
        self.check_tools()
        await self._check_all_modules()
        self.ledger.reconcile()
        self._update_details(initial_scan_s=round(time.monotonic() - started, 3))
        self.log.info(
            "capability_scan_done",
            executables=len(self.cfg.required_executables),
            modules=len(self._all_modules()),
            files=len(self.files),
            open_gaps=len(self.ledger.open),
        )

    async def _restore(self, items: list[Item]) -> bool:
        """Take the import index saved at the last clean stop if it is the fold of these
        records (no file changed since); False if there is none to take."""
        if self.ctx.one_shot or self.files:
            return False
        records = {r.path: r for _root, _event, r in items if r is not None}
        state = await self.folds.load(records)
        if state is None:
            return False
        index, evidence = state if len(state) == 2 else (0, 0)
        if not isinstance(index, ImportIndex) or not isinstance(evidence, ImportLines):
            self.log.error("capability_fold_invalid", kind=type(state).__name__)
            return False
        index.resolver = self.resolver
        index.share_imports(records.values())
        self.index, self.evidence, self.files = index, evidence, dict(records)
        self.log.info("capability_fold_restored", files=len(records))
        return True

    def _save_fold(self) -> None:
        """Save the import index and evidence (a clean stop after the initial scan), when
        it is exactly the fold of the records applied."""
        if self.ctx.one_shot or not self._folded or not self.cfg.scan_imports:
            return
        records = {p: r for p, r in self.files.items() if r is not None}
        if len(records) != len(self.files) or not self.index.local.is_fold():
            self.log.info("capability_fold_not_saved", reason="not the fold of the records")
            return
        self.evidence.keep(lambda path, module, digest: self.ledger.is_open(
            "missing_library", module) and getattr(records.get(path), "sha256", "") == digest)
        self.folds.save([self.index, self.evidence], records)

    async def _use_interpreter(self, python: str) -> None:
        """Resolve modules against the watched system's interpreter (probed once)."""
        try:
            info = await asyncio.to_thread(probe, python)
        except InterpreterError as err:
            raise MonitorUnavailable(f"[monitors.capability_discovery] python: {err}") from None
        self.site_dirs = install_dirs(info.path, info.stdlib_dirs)
        self.resolver = PathResolver(info.path, info.stdlib_names, info.editable)
        self.index.resolver = self.resolver
        self.ctx.status.details["python"] = {
            "executable": info.executable, "version": info.version_text,
        }

    def _update_details(self, **extra: Any) -> None:
        self.ctx.status.details.update(
            {
                "path_dirs": [str(d) for d in self.path_dirs],
                "site_dirs": [str(d) for d in self.site_dirs],
                "import_roots": [str(r) for r in self.roots] if self.cfg.scan_imports else [],
                "source_files": len(self.files),
                "imported_modules": len(self.index.modules),
                **extra,
            }
        )

    # -- checks ---------------------------------------------------------------------------
    def check_tools(self, observed_at: float | None = None) -> None:
        for name in self.cfg.required_executables:
            found = find_executable(name, self.path_dirs)
            if found is not None:
                self.ledger.clear(
                    "missing_tool",
                    name,
                    observed_at=observed_at,
                    gap_reason=f"'{name}' is now available at {found}",
                    path=str(found),
                )
            else:
                self.ledger.set(
                    "missing_tool",
                    name,
                    gap_category="tooling",
                    observed_at=observed_at,
                    gap_reason=f"required executable '{name}' is not on PATH",
                    searched=[str(d) for d in self.path_dirs],
                )
        self.ledger.save()

    def _all_modules(self) -> set[str]:
        return set(self.cfg.required_modules) | self.index.modules

    def check_modules(self, modules: Iterable[str], observed_at: float | None = None) -> None:
        required = set(self.cfg.required_modules)
        for module in sorted(modules):
            files = self.index.missing_for(module)
            is_required = module in required and not self.resolver.resolves(module)
            if files or is_required:
                reason = missing_reason(module, files, self.cfg.python)
                self.ledger.set(
                    "missing_library",
                    module,
                    gap_category="dependencies",
                    gap_reason=reason,
                    observed_at=observed_at,
                    files=files[:MAX_FILES_IN_FACTS],
                    file_count=len(files),
                    required=module in required,
                    **missing_facts(module, files, self.evidence, self._digest),
                )
            else:
                self.ledger.clear(
                    "missing_library",
                    module,
                    observed_at=observed_at,
                    gap_reason=f"module '{module}' now resolves",
                )
        self.ledger.save()

    def _digest(self, path: str) -> str:
        record = self.files.get(path)
        return record.sha256 if record is not None else ""

    # -- source files (records of the source index) ---------------------------------------
    def _apply(self, root: str, path: str, record: FileRecord | None) -> set[str]:
        self.files[path] = record
        facts = record.facts if record is not None else None
        return self.index.set_file(
            root, relative(path, root), facts.imports if facts is not None else None)

    def _remove(self, root: str, path: str) -> set[str]:
        self.files.pop(path, None)
        return self.index.remove_file(root, relative(path, root))

    def on_file_event(self, root: Path, event: FileEvent, record: FileRecord | None) -> set[str]:
        """Apply one event of the source index; returns the modules whose status may have
        changed. A file that does not parse keeps the imports it had (its record's facts)."""
        affected: set[str] = set()
        key_root = str(root)
        if event.kind is FileEventKind.MODIFIED:
            return affected  # wait for CLOSED: the writer is not done
        if event.kind is FileEventKind.MOVED and event.src is not None:
            affected |= self._remove(key_root, str(event.src))
        path = str(event.path)
        if event.kind is FileEventKind.DELETED:
            return affected | self._remove(key_root, path)
        if path in self.files and self.files[path] is record:
            return affected  # nothing new about this file
        return affected | self._apply(key_root, path, record)

    async def _follow_sources(self, sub: Subscription) -> None:
        async for root, event, record in sub.live():
            self._folded = False  # an error inside leaves no state to save
            affected = self.on_file_event(root, event, record)
            self._folded = True
            self.ctx.touch(event.observed_at)
            if affected:
                self.check_modules(affected, event.observed_at)
                self._update_details()


    # -- PATH and site directories --------------------------------------------------------
    async def _check_all_modules(self, observed_at: float | None = None) -> None:
        """Every module, paced (the event loop is handed back every few milliseconds)."""
        async for module in paced(sorted(self._all_modules())):
            self.check_modules((module,), observed_at)

    @property
    def _watch_modules(self) -> bool:
        return bool(self.cfg.required_modules or self.cfg.scan_imports)

    def _dir_targets(self) -> list[Path]:
        """The PATH and site directories to watch (flat)."""
        return ([*self.path_dirs] if self.cfg.required_executables else []) + (
            [*self.site_dirs] if self._watch_modules else []
        )

    async def _follow_dirs(self, watcher: FlatWatcher | None) -> None:
        if watcher is None:  # nothing to watch flat (empty PATH); the roots may still be
            await asyncio.Event().wait()
            return
        path_set = {Path(os.path.realpath(d)) for d in self.path_dirs}
        site_set = {Path(os.path.realpath(d)) for d in self.site_dirs}
        watch_modules = self._watch_modules
        async for batch in watcher.batches():
            observed_at = min(c.observed_at for c in batch)
            self.ctx.touch(observed_at)
            changed = {c.directory for c in batch}
            if changed & path_set:
                self.check_tools(observed_at)
            if changed & site_set and watch_modules:
                self.resolver.invalidate()
                await self._check_all_modules(observed_at)
