"""module_discovery monitor: a ``new_module`` gap for each module that appears.

The modules present at the first start are the baseline; the set of known modules is
checkpointed (an append-only journal, one line per module that changed:
:mod:`.module_journal`), so a module created while the service was down is announced at
the next start and nothing known is announced again. A non-test ``.py`` file that appears later
(created, or moved in from outside the roots) is announced once its content is complete
(CLOSED, or quiet for a moment), with a quick scan of it in the facts: public classes and
functions, the docstring's first line, imports. A rename within the tree is not a new
module (an open gap follows the file to its new name). A module that vanishes resolves
its gap. Test files (``test_*.py``, ``*_test.py``, ``conftest.py``, under ``tests/``) are
not modules. The code is parsed, never imported.

A root that vanishes (moved away, deleted whole, an unmounted share) forgets nothing: its
known modules are *suspended* (kept known, open gaps kept open), also across a restart. When
the root is a directory again (seen at its first event, or by a check every
:data:`ROOT_CHECK_S` while a root is missing: an empty root gives no event) each suspended
module still there stays known (not new), and each one missing is gone: its open gap
resolves and it is forgotten (if it comes back later it is a new module). A root put back
file by file rather than whole (``mkdir`` then copies) is judged at its first file, so the
modules copied after that one count as new. A DELETED for a file that is still there (its
root moved away and back before the event was handled) changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analysis.local_modules import relative
from ..analysis.pysource import ModuleSummary, module_name
from ..analysis.source_facts import DamagedFacts
from ..config import ModuleDiscoveryConfig
from ..sources.files import file_size, root_of
from ..sources.index import FileRecord, SourceSpec, Subscription
from ..sources.pacing import paced
from ..sources.tree import SETTLE_S, SettleTimers
from ..sources.watcher import FileEvent, FileEventKind
from .base import Monitor, MonitorContext
from .module_journal import ModuleJournal, State

EMPTY_SETTLE_S = 1.0
"""An empty new file is announced after this quiet period if no writer closes it."""
SAVE_DELAY_S = 2.0
ROOT_CHECK_S = 1.0
"""While a root with known modules is missing: how often to look whether it is back."""


def is_module(root: Path, path: Path) -> bool:
    """A non-test ``.py`` file under ``root``."""
    return is_module_path(str(root), str(path))


def is_module_path(root: str, path: str) -> bool:
    """:func:`is_module` of normalised absolute path strings (a whole tree is asked at a
    start: no path objects), with :func:`~..analysis.pysource.is_test_path`'s rules."""
    name = path.rpartition("/")[2]
    if not name.endswith(".py") or name == ".py":  # (``.py`` alone has no suffix)
        return False
    if name == "conftest.py" or name.startswith("test_") or name.endswith("_test.py"):
        return False
    rel = relative(path, root)
    if "test" not in rel:
        return True
    dirs = rel.split("/")[:-1]
    return "tests" not in dirs and "test" not in dirs


@dataclass(frozen=True, slots=True)
class Scanned:
    summary: ModuleSummary | None
    problem: str = ""


def scanned_of(record: FileRecord | None, max_bytes: int) -> Scanned:
    """What the source index knows of a file, as a quick scan (the index parsed it)."""
    if record is None:
        return Scanned(None, "unreadable: the file is gone")
    if record.skipped == "too_large":
        return Scanned(None, f"larger than {max_bytes} bytes: not scanned")
    if record.skipped:
        return Scanned(None, f"{record.skipped}: {record.detail}")
    if record.error is not None:
        message, line = record.error
        return Scanned(None, f"does not parse: {message} (line {line})")
    try:
        return Scanned(record.facts.summary if record.facts is not None else None)
    except DamagedFacts as err:
        return Scanned(None, str(err))


def module_view(root: Path, event: FileEvent) -> FileEvent | None:
    """The index's event as a watcher of modules only would report it (None: not about
    a module): a move between a module and a non-module name is a create or a delete."""
    dst = is_module(root, event.path)
    if event.kind is not FileEventKind.MOVED or event.src is None:
        return event if dst else None
    src = event.src.is_relative_to(root) and is_module(root, event.src)
    if src and dst:
        return event
    if src:
        return FileEvent(FileEventKind.DELETED, event.src, event.observed_at)
    if dst:
        return FileEvent(FileEventKind.CREATED, event.path, event.observed_at)
    return None


class ModuleDiscoveryMonitor(Monitor[ModuleDiscoveryConfig]):
    """New Python modules in the source trees (``new_module``)."""

    name = "module_discovery"
    ecosystem = "discovery"
    config_model = ModuleDiscoveryConfig
    reads = (  # its source index parses with these
        "integration.max_file_bytes", "integration.emit_calls", "integration.subscribe_calls",
        "integration.subscriber_suffixes",
    )

    def __init__(self, ctx: MonitorContext) -> None:
        super().__init__(ctx)
        cfg = self.cfg
        self.roots = [Path(os.path.abspath(r)) for r in cfg.roots]
        self.spec = SourceSpec.of(ctx.config, cfg.roots, cfg.exclude)
        self.sub: Subscription | None = None
        self.known: set[str] | None = None
        """Absolute paths of known modules; None until a baseline exists."""
        self.open: dict[str, str] = {}
        """Absolute path -> gap name of announced, unresolved new modules."""
        self.pending: set[Path] = set()
        self.suspended: dict[Path, set[str]] = {}
        """Root -> known modules (absolute paths) kept while that root is missing."""
        self._root_check: asyncio.TimerHandle | None = None
        self.settle = SettleTimers(None)
        self.saver = ModuleJournal(
            ctx.checkpoints, self._state, delay=SAVE_DELAY_S, delivered=ctx.delivered,
            log=self.log,
        )
        self.announced = 0

    async def run(self) -> None:
        if self.ctx.one_shot:
            return  # a one-shot scan has no earlier baseline, so nothing is new
        self._load_checkpoint()
        assert self.ctx.sources is not None
        try:
            async with self.ctx.sources.subscribe(
                    self.spec, self.watch_error, status=self.ctx.status) as sub:
                self.sub = sub
                self.settle = SettleTimers(sub)
                await self._initial(sub)
                async for root, event, _record in sub.live():
                    view = module_view(root, event)
                    if view is not None:
                        await self._handle(root, view)
        finally:
            if self._root_check is not None:
                self._root_check.cancel()
            self.settle.cancel_all()
            self.saver.flush()

    async def _initial(self, sub: Subscription) -> None:
        started = time.monotonic()
        present: dict[str, Path] = {}
        latest: float | None = None
        async for root, event, record in paced(await sub.initial()):
            key = record.path if record is not None else str(event.path)  # (shared)
            if is_module_path(str(root), key):
                present[key] = event.path
                if latest is None or event.observed_at > latest:
                    latest = event.observed_at
        if latest is not None:
            self.ctx.touch(latest)
        now = time.time()
        if self.known is None:
            self.known = set(present)
            self.log.info("module_baseline", modules=len(self.known))
            self.saver.mark_all()
        else:
            for path in sorted(self.known - set(present)):
                root = root_of(Path(path), self.roots)
                if root is not None and not root.is_dir():
                    self._suspend(root, path)
                else:
                    self._vanished(path, now)
            for key in sorted(set(present) - self.known):
                await self._announce(
                    present[key], now, reason="appeared while the service was not running"
                )
        # Saved once the bus acknowledges the gaps just published are in the feed: a
        # kill -9 before that repeats them (deduplicated) but loses none.
        self.saver.mark()  # what loading left pending (a compaction), if anything
        self._update_status()
        self.ctx.status.details["initial_scan_s"] = round(time.monotonic() - started, 3)

    # -- events --------------------------------------------------------------------------
    async def _handle(self, root: Path, event: FileEvent) -> None:
        self.ctx.touch(event.observed_at)
        assert self.known is not None
        self._root_back(root, event.observed_at)
        kind, path, key = event.kind, event.path, str(event.path)
        if kind in (FileEventKind.CREATED, FileEventKind.EXISTING):
            if key not in self.known and path not in self.pending:
                self.pending.add(path)
                delay = SETTLE_S if file_size(path) else EMPTY_SETTLE_S
                self.settle.start(root, path, event.observed_at, delay)
        elif kind is FileEventKind.MODIFIED:
            self.settle.restart(path)
        elif kind is FileEventKind.CLOSED:
            if path in self.pending:
                self.settle.cancel(path)
                self.pending.discard(path)
                await self._announce(path, event.observed_at)
        elif kind is FileEventKind.MOVED:
            await self._moved(root, event)
        elif kind is FileEventKind.DELETED:
            self.settle.cancel(path)
            self.pending.discard(path)
            self._deleted(root, key, event.observed_at)
        self._update_status()

    async def _moved(self, root: Path, event: FileEvent) -> None:
        assert self.known is not None and event.src is not None
        src, dst = event.src, event.path
        if src in self.pending:
            self.settle.cancel(src)
            self.pending.discard(src)
            self.pending.add(dst)
            self.settle.start(root, dst, event.observed_at)
            return
        if str(src) not in self.known:
            self.pending.add(dst)
            self.settle.start(root, dst, event.observed_at)
            return
        self.known.discard(str(src))
        self.known.add(str(dst))
        old_gap = self.open.pop(str(src), None)
        if old_gap is not None:
            self._resolve(old_gap, event.observed_at, f"renamed to {self._name(dst)}")
            await self._announce(dst, event.observed_at, reason=f"renamed from {old_gap}")
        self.saver.mark(str(src))
        self.saver.mark(str(dst))

    def _deleted(self, root: Path, key: str, observed_at: float) -> None:
        """A module left the watcher's view: gone only if its root is there and it is not."""
        if os.path.lexists(key):
            return  # its root moved away and back: the watcher reports the file again
        if not root.is_dir():
            self._suspend(root, key)
        else:
            self._vanished(key, observed_at)

    def _suspend(self, root: Path, key: str) -> None:
        """The root of a known module is missing: keep the module until the root is back."""
        assert self.known is not None
        if key not in self.known:
            return
        self.suspended.setdefault(root, set()).add(key)
        if self._root_check is None:
            loop = asyncio.get_running_loop()
            self._root_check = loop.call_later(ROOT_CHECK_S, self._check_roots)

    def _root_back(self, root: Path, observed_at: float) -> None:
        """If ``root`` is a directory again, settle its suspended modules: those there stay
        known, those missing are gone."""
        if root not in self.suspended or not root.is_dir():
            return
        keys = self.suspended.pop(root)
        gone = sorted(k for k in keys if not os.path.lexists(k))
        self.log.info("module_root_back", root=str(root), modules=len(keys), gone=len(gone))
        for key in gone:
            self._vanished(key, observed_at)

    def _check_roots(self) -> None:
        """Timer while a root is missing (an empty root coming back gives no file event)."""
        self._root_check = None
        now = time.time()
        for root in list(self.suspended):
            self._root_back(root, now)
        self._update_status()
        if self.suspended:
            loop = asyncio.get_running_loop()
            self._root_check = loop.call_later(ROOT_CHECK_S, self._check_roots)

    def _vanished(self, key: str, observed_at: float) -> None:
        assert self.known is not None
        if key not in self.known:
            return
        self.known.discard(key)
        gap = self.open.pop(key, None)
        if gap is not None:
            self._resolve(gap, observed_at, "the module is gone")
        self.saver.mark(key)

    # -- publishing ----------------------------------------------------------------------
    async def _announce(self, path: Path, observed_at: float, reason: str = "") -> None:
        assert self.known is not None
        if not os.path.exists(path):
            return
        assert self.sub is not None
        scanned = scanned_of(await self.sub.load(path), self.spec.max_file_bytes)
        name = self._name(path)
        root = root_of(path, self.roots)
        rel = path.relative_to(root).as_posix() if root is not None else str(path)
        facts: dict[str, Any] = {"path": str(path), "file": rel}
        if scanned.summary is not None:
            facts.update(scanned.summary.as_facts())
            if scanned.summary.truncated:
                facts["truncated"] = True
        if scanned.problem:
            facts["scan_problem"] = scanned.problem
        self.ctx.gap(
            gap_type="new_module",
            gap_name=name,
            gap_category="capability_expansion",
            gap_reason=f"a new module appeared: {rel}" + (f" ({reason})" if reason else ""),
            ecosystem=self.ecosystem,
            observed_at=observed_at,
            **facts,
        )
        self.known.add(str(path))
        self.open[str(path)] = name
        self.announced += 1
        self.saver.mark(str(path))

    def _resolve(self, gap_name: str, observed_at: float, reason: str) -> None:
        self.ctx.resolve(
            gap_type="new_module",
            gap_name=gap_name,
            ecosystem=self.ecosystem,
            gap_category="capability_expansion",
            gap_reason=reason,
            observed_at=observed_at,
        )

    def _name(self, path: Path) -> str:
        root = root_of(path, self.roots)
        return module_name(path, root) if root is not None else path.stem

    def _update_status(self) -> None:
        self.ctx.status.details.update(
            modules=len(self.known or ()),
            open=len(self.open),
            pending=len(self.pending),
            suspended=sum(len(keys) for keys in self.suspended.values()),
            announced=self.announced,
        )


    # -- checkpoint ----------------------------------------------------------------------
    def _load_checkpoint(self) -> None:
        loaded = self.saver.load()
        if loaded is None:
            return
        self.known, opened = loaded
        self.open = {k: v for k, v in opened.items() if k in self.known}
        self.log.info("module_checkpoint_loaded", modules=len(self.known), open=len(self.open))

    def _state(self) -> State | None:
        return None if self.known is None else (self.known, self.open)
