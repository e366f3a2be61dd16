"""capability_discovery: required executables and modules, and imports that resolve nowhere.

Event sources (no polling):

* the ``PATH`` directories of the service process, watched flat with inotify (create,
  delete, move, chmod): installing or removing a required tool raises or resolves its
  ``missing_tool`` gap at once;
* the install directories on ``sys.path`` (site-packages, ``PYTHONPATH`` entries), watched
  flat: a package directory, ``.dist-info``/``.egg-info`` or module appearing or vanishing
  re-resolves the modules (``missing_library``);
* with ``scan_imports``, the integration roots (``[monitors.integration] roots/exclude``,
  whether or not that monitor is enabled), watched recursively: the module-level required
  imports of every ``.py`` file that resolve neither to an installed module, the standard
  library, nor a module of the roots are ``missing_library`` gaps, one per module, with
  the importing files in the facts. Guarded imports (``try/except ImportError``) are not.

Also home of two helpers the other environment monitors share: :class:`FlatWatcher`
(non-recursive inotify over many directories, waiting for missing ones) and
:class:`GapLedger` (announce only changes; resolve after a restart what went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import orjson
import structlog
from asyncinotify import Event, Inotify, Mask, Watch

from ..analysis.capabilities import (
    MAX_FILES_IN_FACTS,
    MODULE_SUFFIXES,
    ImportIndex,
    ModuleResolver,
    find_executable,
    path_dirs,
    read_imports,
    site_dirs,
)
from ..config import CapabilityDiscoveryConfig
from ..sources.watcher import FileEvent, FileEventKind, RecursiveWatcher
from .base import Monitor, MonitorContext, MonitorUnavailable

log = structlog.get_logger(__name__)


# -- shared helper: the gaps a monitor has announced ------------------------------------------
SAVE_DELAY_S = 0.2
"""Delay before the open-gap checkpoint is written (coalesces bursts of changes)."""


class GapLedger:
    """The open gaps of one monitor: publishes a gap when it opens or its facts change and
    a resolution when it closes; remembers (checkpoint ``open_gaps``) what was open, so
    after a restart :meth:`reconcile` resolves the gaps that went away meanwhile."""

    CHECKPOINT = "open_gaps"

    def __init__(self, ctx: MonitorContext, ecosystem: str) -> None:
        self.ctx = ctx
        self.ecosystem = ecosystem
        self.open: dict[tuple[str, str], str] = {}
        self.previous: set[tuple[str, str]] = set()
        saved = ctx.checkpoints.load(self.CHECKPOINT)
        if isinstance(saved, dict) and isinstance(saved.get("open"), list):
            self.previous = {
                (str(p[0]), str(p[1])) for p in saved["open"] if isinstance(p, list) and len(p) == 2
            }
        self._dirty = False
        self._flushing: asyncio.Task[None] | None = None
        self._lock = threading.Lock()

    def is_open(self, gap_type: str, gap_name: str) -> bool:
        return (gap_type, gap_name) in self.open

    def names(self, gap_type: str) -> set[str]:
        return {name for t, name in self.open if t == gap_type}

    def set(
        self,
        gap_type: str,
        gap_name: str,
        *,
        gap_category: str,
        gap_reason: str,
        observed_at: float | None = None,
        **facts: Any,
    ) -> bool:
        """Open (or update) a gap; publishes only if it is new or its facts changed."""
        digest = hashlib.sha256(
            orjson.dumps(
                [gap_category, gap_reason, facts], option=orjson.OPT_SORT_KEYS, default=str
            )
        ).hexdigest()
        key = (gap_type, gap_name)
        if self.open.get(key) == digest:
            return False
        self.open[key] = digest
        self._dirty = True
        self.ctx.gap(
            gap_type=gap_type,
            gap_name=gap_name,
            gap_category=gap_category,
            gap_reason=gap_reason,
            ecosystem=self.ecosystem,
            observed_at=observed_at,
            **facts,
        )
        return True

    def clear(
        self,
        gap_type: str,
        gap_name: str,
        *,
        gap_reason: str,
        observed_at: float | None = None,
        **facts: Any,
    ) -> bool:
        """Resolve a gap if it is open (or was open before the restart)."""
        key = (gap_type, gap_name)
        if key not in self.open and key not in self.previous:
            return False
        self.open.pop(key, None)
        self.previous.discard(key)
        self._dirty = True
        self.ctx.resolve(
            gap_type=gap_type,
            gap_name=gap_name,
            ecosystem=self.ecosystem,
            gap_reason=gap_reason,
            observed_at=observed_at,
            **facts,
        )
        return True

    def keep(self, gap_type: str) -> None:
        """Carry the previous run's open gaps of ``gap_type`` over unchanged (this run
        cannot judge them yet); the next :meth:`set` republishes, :meth:`clear` resolves."""
        for key in [k for k in self.previous if k[0] == gap_type]:
            self.open.setdefault(key, "")
            self.previous.discard(key)

    def reconcile(self, gap_reason: str = "no longer present after a restart") -> None:
        """After the initial scan: resolve what was open before and is not open now."""
        for gap_type, gap_name in sorted(self.previous - set(self.open)):
            self.clear(gap_type, gap_name, gap_reason=gap_reason)
        self.previous.clear()
        self.save()

    def save(self) -> None:
        """Persist soon: the checkpoint (an fsynced file) is written in a thread at most
        every :data:`SAVE_DELAY_S`, off the path from an event to its signal."""
        if not self._dirty or self.ctx.one_shot or self._flushing is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flushing = loop.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(SAVE_DELAY_S)
            while self._dirty:
                self._dirty = False
                await asyncio.to_thread(self._write, self._snapshot())
        finally:
            self._flushing = None

    def _snapshot(self) -> dict[str, Any]:
        return {"open": [list(k) for k in sorted(self.open)]}

    def flush(self) -> None:
        """Persist now (at shutdown)."""
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        if self._dirty and not self.ctx.one_shot:
            self._dirty = False
            self._write(self._snapshot())

    def _write(self, data: dict[str, Any]) -> None:
        with self._lock:  # a cancelled flush's thread may still be writing
            self.ctx.checkpoints.save(self.CHECKPOINT, data)


# -- shared helper: flat inotify over many directories ----------------------------------------
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


# -- shared helper: the initial walk ----------------------------------------------------------
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


# -- the monitor ------------------------------------------------------------------------------
def _is_module_file(path: Path) -> bool:
    return path.name.endswith(MODULE_SUFFIXES)


@dataclass(frozen=True, slots=True)
class _Scanned:
    root: str
    rel: PurePath
    signature: tuple[int, int] | None
    imports: Any


class CapabilityDiscoveryMonitor(Monitor):
    """Required tools and modules, and unresolved imports of the integration roots."""

    name = "capability_discovery"
    ecosystem = "capabilities"

    def __init__(self, ctx: MonitorContext, *, path_value: str | None = None) -> None:
        super().__init__(ctx)
        cfg = ctx.section
        assert isinstance(cfg, CapabilityDiscoveryConfig)
        self.cfg = cfg
        integration = ctx.config.monitors.integration
        self.roots = [Path(os.path.abspath(r)) for r in integration.roots]
        self.exclude = list(integration.exclude)
        self.max_file_bytes = integration.max_file_bytes
        self.path_dirs = path_dirs(os.environ.get("PATH", "") if path_value is None else path_value)
        self.site_dirs = site_dirs()
        self.resolver = ModuleResolver()
        self.index = ImportIndex(self.resolver)
        self.signatures: dict[tuple[str, PurePath], tuple[int, int] | None] = {}
        self.ledger = GapLedger(ctx, self.ecosystem)
        self._reconciled_roots: set[str] = set()
        self._watchers: dict[str, RecursiveWatcher] = {}

    # -- run ------------------------------------------------------------------------------
    async def run(self) -> None:
        cfg = self.cfg
        if not (cfg.required_executables or cfg.required_modules or cfg.scan_imports):
            raise MonitorUnavailable(
                "nothing to check: no required_executables, no required_modules, scan_imports off"
            )
        started = time.monotonic()
        if cfg.scan_imports:
            for scanned in await asyncio.to_thread(self._initial_scan):
                self._apply(scanned)
        self.check_tools()
        self.check_modules(self._all_modules())
        self.ledger.reconcile()
        self._update_details(initial_scan_s=round(time.monotonic() - started, 3))
        self.log.info(
            "capability_scan_done",
            executables=len(cfg.required_executables),
            modules=len(self._all_modules()),
            files=len(self.signatures),
            open_gaps=len(self.ledger.open),
        )
        if self.ctx.one_shot:
            return
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._follow_dirs())
                if cfg.scan_imports:
                    for root in self.roots:
                        tg.create_task(self._follow_root(root))
        finally:
            self.ledger.flush()

    def _update_details(self, **extra: Any) -> None:
        self.ctx.status.details.update(
            {
                "path_dirs": [str(d) for d in self.path_dirs],
                "site_dirs": [str(d) for d in self.site_dirs],
                "import_roots": [str(r) for r in self.roots] if self.cfg.scan_imports else [],
                "source_files": len(self.signatures),
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
                reason = (
                    f"module '{module}' is imported by {len(files)} file(s) but is not installed"
                    if files
                    else f"required module '{module}' is not installed"
                )
                self.ledger.set(
                    "missing_library",
                    module,
                    gap_category="dependencies",
                    gap_reason=reason,
                    observed_at=observed_at,
                    files=files[:MAX_FILES_IN_FACTS],
                    file_count=len(files),
                    required=module in required,
                )
            else:
                self.ledger.clear(
                    "missing_library",
                    module,
                    observed_at=observed_at,
                    gap_reason=f"module '{module}' now resolves",
                )
        self.ledger.save()

    # -- source files ---------------------------------------------------------------------
    def _initial_scan(self) -> list[_Scanned]:
        """Runs in a thread: read and parse every module file of the roots."""
        out = []
        for root in self.roots:
            for path in walk_files(root, self.exclude, _is_module_file):
                out.append(self._scan_file(root, path))
        return out

    def _scan_file(self, root: Path, path: Path) -> _Scanned:
        signature = file_signature(path)
        imports = None
        if path.suffix == ".py" and signature is not None:
            if signature[1] > self.max_file_bytes:
                log.info(
                    "import_scan_skipped",
                    path=str(path),
                    reason="file too large",
                    size=signature[1],
                )
            else:
                try:
                    imports = read_imports(path.read_bytes(), str(path))
                except OSError as err:
                    log.info("import_scan_skipped", path=str(path), error=str(err))
        return _Scanned(str(root), PurePath(path.relative_to(root)), signature, imports)

    def _apply(self, scanned: _Scanned) -> set[str]:
        self.signatures[(scanned.root, scanned.rel)] = scanned.signature
        return self.index.set_file(scanned.root, scanned.rel, scanned.imports)

    def _remove(self, root: str, rel: PurePath) -> set[str]:
        self.signatures.pop((root, rel), None)
        return self.index.remove_file(root, rel)

    def on_file_event(self, root: Path, event: FileEvent) -> set[str]:
        """Apply one watcher event; returns the modules whose status may have changed."""
        affected: set[str] = set()
        key_root = str(root)
        if event.kind is FileEventKind.MODIFIED:
            return affected  # wait for CLOSED: the writer is not done
        if event.kind is FileEventKind.MOVED and event.src is not None:
            affected |= self._remove(key_root, PurePath(event.src.relative_to(root)))
        rel = PurePath(event.path.relative_to(root))
        if event.kind is FileEventKind.DELETED:
            return affected | self._remove(key_root, rel)
        if event.kind is not FileEventKind.EXISTING:
            self._reconcile_root(root)
        elif (key_root, rel) in self.signatures and self.signatures[
            (key_root, rel)
        ] == file_signature(event.path):
            return affected  # unchanged since the initial scan
        return affected | self._apply(self._scan_file(root, event.path))

    def _reconcile_root(self, root: Path) -> None:
        """At the first live event of a root the watcher's own scan is complete: drop the
        files the initial walk saw that vanished before the watch existed."""
        key = str(root)
        if key in self._reconciled_roots:
            return
        self._reconciled_roots.add(key)
        watcher = self._watchers.get(key)
        if watcher is None:
            return
        known = {PurePath(p.relative_to(root)) for p in watcher.known_files}
        for r, rel in list(self.signatures):
            if r == key and rel not in known and not (root / rel).exists():
                self.check_modules(self._remove(r, rel))

    async def _follow_root(self, root: Path) -> None:
        async with RecursiveWatcher(
            root, exclude=self.exclude, include=_is_module_file, on_error=self._watch_error
        ) as watcher:
            self._watchers[str(root)] = watcher
            async for event in watcher:
                affected = self.on_file_event(root, event)
                if event.kind is not FileEventKind.EXISTING:
                    self.ctx.touch(event.observed_at)
                if affected:
                    self.check_modules(affected, event.observed_at)
                    self._update_details()

    def _watch_error(self, message: str) -> None:
        errors = self.ctx.status.details.setdefault("watch_errors", [])
        if message not in errors and len(errors) < 20:
            errors.append(message)

    # -- PATH and site directories --------------------------------------------------------
    def _catch_up(self, modules: bool) -> None:
        self.check_tools()
        if modules:
            self.resolver.invalidate()
            self.check_modules(self._all_modules())

    async def _follow_dirs(self) -> None:
        path_set = {Path(os.path.realpath(d)) for d in self.path_dirs}
        site_set = {Path(os.path.realpath(d)) for d in self.site_dirs}
        watch_modules = bool(self.cfg.required_modules or self.cfg.scan_imports)
        targets = ([*self.path_dirs] if self.cfg.required_executables else []) + (
            [*self.site_dirs] if watch_modules else []
        )
        if not targets:  # nothing to watch flat (empty PATH); the roots may still be
            await asyncio.Event().wait()
        async with FlatWatcher(targets, on_error=self._watch_error) as watcher:
            self.ctx.status.details["watched_dirs"] = [str(d) for d in watcher.watched]
            self._catch_up(watch_modules)  # changes between the initial scan and the watch
            async for batch in watcher.batches():
                observed_at = min(c.observed_at for c in batch)
                self.ctx.touch(observed_at)
                changed = {c.directory for c in batch}
                if changed & path_set:
                    self.check_tools(observed_at)
                if changed & site_set and watch_modules:
                    self.resolver.invalidate()
                    self.check_modules(self._all_modules(), observed_at)
