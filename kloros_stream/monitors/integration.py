"""integration monitor: orphaned queues and syntax errors in the source trees.

Each ``.py`` file under the roots is parsed once at start (in a worker thread, in batches,
results applied in the loop), then only when it changes: on CLOSED, MOVED, or a CREATED
that already has content (after a short settle delay, unless CLOSED comes first). A
MODIFIED alone is never parsed. The flows go to an incremental :class:`FlowIndex`; after
each event only the orphan changes it caused are published. Code is never imported.

The checkpoint keeps, per file, ``mtime_ns``, size, sha256 and flows, plus the gaps
already announced: a restart re-parses only files changed while the service was down and
announces only what changed.

Events come from :class:`~kloros_stream.sources.tree.TreeEvents` (settle timers from the
same module); checkpoint writes are coalesced by
:class:`~kloros_stream.monitors.ledger.Debouncer`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from ..analysis.flow_evidence import evidence_line
from ..analysis.flow_index import Channel, ChannelKind, FlowIndex, ProducerSite
from ..analysis.flows import FileFlows, FlowConfig, analyze_source
from ..analysis.pysource import SourceError, module_name
from ..config import IntegrationMonitorConfig
from ..sources.files import file_size, root_of
from ..sources.interpreter import SyntaxConfirmer
from ..sources.tree import SettleTimers, TreeEvents, scan_once
from ..sources.watcher import FileEvent, FileEventKind
from .base import Monitor, MonitorContext
from .ledger import Debouncer

CHECKPOINT = "index"
CHECKPOINT_FORMAT = 1
SAVE_DELAY_S = 2.0
"""Checkpoint writes are coalesced over this window (and done on exit)."""
INLINE_PARSE_BYTES = 256 * 1024
"""Live changes up to this size are parsed in the loop; larger ones in a worker thread."""
BATCH_FILES = 64
"""Files parsed per worker-thread batch during the initial scan."""
MAX_FACT_ITEMS = 10
MAX_CODE_LINES = 5
"""Producing statements quoted in an orphaned_queue question's facts."""


# -- per-file state ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FileMeta:
    mtime_ns: int
    size: int
    sha256: str
    error: tuple[str, int | None] | None = None
    """(message, line) while the file does not parse."""

    def to_json(self) -> dict[str, Any]:
        return {
            "mtime_ns": self.mtime_ns,
            "size": self.size,
            "sha256": self.sha256,
            "error": list(self.error) if self.error else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileMeta:
        err = data.get("error")
        return cls(
            int(data["mtime_ns"]),
            int(data["size"]),
            str(data["sha256"]),
            (str(err[0]), None if err[1] is None else int(err[1])) if err else None,
        )


@dataclass(frozen=True, slots=True)
class Loaded:
    """The outcome of reading and analysing one file (computed off the loop)."""

    path: Path
    status: str
    """``parsed``, ``same`` (content hash unchanged), ``error`` (does not parse),
    ``too_large``, ``missing``, ``unreadable`` or ``analysis_failed``."""
    meta: FileMeta | None = None
    flows: FileFlows | None = None
    detail: str = ""


def load_file(
    path: Path, module: str, previous: FileMeta | None, max_bytes: int, config: FlowConfig
) -> Loaded:
    """Read, hash and analyse one file. Pure apart from reading it; safe in a thread."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_size > max_bytes:
                return Loaded(path, "too_large", detail=str(st.st_size))
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        return Loaded(path, "missing")
    except OSError as err:
        return Loaded(path, "unreadable", detail=str(err))
    if len(data) > max_bytes:
        return Loaded(path, "too_large", detail=str(len(data)))
    digest = hashlib.sha256(data).hexdigest()
    if previous is not None and previous.sha256 == digest:
        meta = FileMeta(st.st_mtime_ns, len(data), digest, previous.error)
        return Loaded(path, "same", meta)
    try:
        flows = analyze_source(data, module, config, filename=str(path))
    except SourceError as err:
        meta = FileMeta(st.st_mtime_ns, len(data), digest, (err.message, err.line))
        return Loaded(path, "error", meta)
    except Exception as err:  # an analyser bug must not crash-loop the monitor on one file
        return Loaded(path, "analysis_failed", detail=repr(err))
    return Loaded(path, "parsed", FileMeta(st.st_mtime_ns, len(data), digest), flows)


def _load_batch(
    jobs: list[tuple[Path, str, FileMeta | None]], max_bytes: int, config: FlowConfig
) -> list[Loaded]:
    return [load_file(p, m, prev, max_bytes, config) for p, m, prev in jobs]


def _is_python(path: Path) -> bool:
    return path.suffix == ".py"


# -- the monitor ---------------------------------------------------------------------------
class IntegrationMonitor(Monitor):
    """Orphaned queues/topics (``orphaned_queue``) and unparseable files (``syntax_error``)."""

    name = "integration"
    ecosystem = "architecture"

    def __init__(self, ctx: MonitorContext) -> None:
        super().__init__(ctx)
        cfg = ctx.section
        assert isinstance(cfg, IntegrationMonitorConfig)
        self.cfg = cfg
        self.roots = [Path(os.path.abspath(r)) for r in cfg.roots]
        self.flow_config = FlowConfig.from_section(cfg)
        self.index = FlowIndex(prefix_match=cfg.prefix_match)
        self.meta: dict[str, FileMeta] = {}
        self.announced_orphans: set[Channel] = set()
        self.announced_errors: dict[str, str] = {}
        """Absolute path -> gap name of announced syntax errors."""
        self.evidence: dict[Channel, list[str]] = {}
        """Producing statements last announced per orphan (kept in memory)."""
        self.confirmer = SyntaxConfirmer(ctx.config.monitors.capability_discovery.python)
        """Confirms a syntax error with the watched system's interpreter (H10b)."""
        self.settle = SettleTimers(None)
        self.saver = Debouncer(SAVE_DELAY_S, self._snapshot, self._write, self.log)
        self.stats = {
            "parsed": 0,
            "reused": 0,
            "too_large": 0,
            "unreadable": 0,
            "analysis_failed": 0,
            "errors": 0,
        }

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        if self.ctx.one_shot:
            await self._one_shot()
            return
        self._load_checkpoint()
        try:
            async with TreeEvents(
                self.roots,
                exclude=self.cfg.exclude,
                include=lambda _root, p: _is_python(p),
                on_error=self._watch_error,
            ) as events:
                self.settle = SettleTimers(events)
                await self._initial(events)
                async for root, event in events.live():
                    await self._handle(root, event)
        finally:
            self.settle.cancel_all()
            self.saver.flush()

    async def _one_shot(self) -> None:
        paths = [
            event.path
            async for _root, event in scan_once(
                self.roots, self.cfg.exclude, lambda _root, p: _is_python(p)
            )
        ]
        await self._load_many(paths, trust_stat=False)
        self._reconcile_all(time.time())

    async def _initial(self, events: TreeEvents) -> None:
        started = time.monotonic()
        seen: set[str] = set()
        batch: list[Path] = []
        async for _root, event in events.initial():
            self.ctx.touch(event.observed_at)
            seen.add(str(event.path))
            batch.append(event.path)
            if len(batch) >= BATCH_FILES:
                await self._load_many(batch, trust_stat=True)
                batch = []
        await self._load_many(batch, trust_stat=True)
        for path in [p for p in self.meta if p not in seen]:
            self._forget(path)
        self._reconcile_all(time.time())
        self.ctx.status.details["initial_scan_s"] = round(time.monotonic() - started, 3)
        # Saved after the debounce delay, not at once: the gaps just published reach the
        # feed first, so a kill -9 in between repeats them (deduplicated) but loses none.
        self.saver.mark()
        self.ctx.level_ready()
        self.log.info(
            "integration_initial_scan",
            files=len(self.meta),
            orphans=len(self.announced_orphans),
            syntax_errors=len(self.announced_errors),
            **self.stats,
        )

    # -- loading -------------------------------------------------------------------------
    def _job(self, path: Path) -> tuple[Path, str, FileMeta | None] | None:
        root = root_of(path, self.roots)
        if root is None:
            return None
        return path, module_name(path, root), self.meta.get(str(path))

    def _unchanged_on_disk(self, path: Path) -> bool:
        meta = self.meta.get(str(path))
        if meta is None:
            return False
        try:
            st = os.stat(path)
        except OSError:
            return False
        return st.st_mtime_ns == meta.mtime_ns and st.st_size == meta.size

    async def _load_many(self, paths: list[Path], *, trust_stat: bool) -> None:
        """Load files in worker-thread batches; results applied here, in the loop."""
        jobs = []
        for path in paths:
            if trust_stat and self._unchanged_on_disk(path):
                self.stats["reused"] += 1
                continue
            job = self._job(path)
            if job is not None:
                jobs.append(job)
        for start in range(0, len(jobs), BATCH_FILES):
            chunk = jobs[start : start + BATCH_FILES]
            results = await anyio.to_thread.run_sync(
                _load_batch, chunk, self.cfg.max_file_bytes, self.flow_config,
                abandon_on_cancel=True,
            )
            for loaded in results:
                self._apply(loaded)

    async def _load_one(self, path: Path) -> set[Channel]:
        job = self._job(path)
        if job is None:
            return set()
        size = file_size(path)
        if size is not None and size > INLINE_PARSE_BYTES:
            loaded = await anyio.to_thread.run_sync(
                load_file, *job, self.cfg.max_file_bytes, self.flow_config,
                abandon_on_cancel=True,
            )
        else:
            loaded = load_file(*job, self.cfg.max_file_bytes, self.flow_config)
        return self._apply(loaded)

    def _apply(self, loaded: Loaded) -> set[Channel]:
        """Record one load result; the channels whose orphan state may have changed."""
        key = str(loaded.path)
        if loaded.status == "same":
            assert loaded.meta is not None
            self.meta[key] = loaded.meta
            self.stats["reused"] += 1
            return set()
        if loaded.status in ("too_large", "unreadable", "analysis_failed"):
            self.stats[loaded.status] += 1
            self.log.warning(
                "source_file_skipped",
                path=key,
                reason=loaded.status,
                detail=loaded.detail,
                max_file_bytes=self.cfg.max_file_bytes,
            )
            return set()
        if loaded.status == "missing":
            return set()  # gone meanwhile; its DELETED follows
        assert loaded.meta is not None
        self.meta[key] = loaded.meta
        if loaded.status == "error":
            # Keep the last good flows: the syntax error is the problem, not an orphan.
            self.stats["errors"] += 1
            return set()
        assert loaded.flows is not None
        self.stats["parsed"] += 1
        delta = self.index.update(key, loaded.flows)
        return {*delta.appeared, *delta.resolved}

    def _forget(self, path: str) -> set[Channel]:
        self.meta.pop(path, None)
        delta = self.index.remove(path)
        return {*delta.appeared, *delta.resolved}

    # -- events --------------------------------------------------------------------------
    async def _handle(self, root: Path, event: FileEvent) -> None:
        self.ctx.touch(event.observed_at)
        kind, path = event.kind, event.path
        changed: set[Channel] = set()
        paths = {str(path)}
        if kind is FileEventKind.CLOSED:
            self.settle.cancel(path)
            changed = await self._load_one(path)
        elif kind is FileEventKind.EXISTING:
            if not self._unchanged_on_disk(path):
                changed = await self._load_one(path)
        elif kind is FileEventKind.CREATED:
            if file_size(path):
                self.settle.start(root, path, event.observed_at)
        elif kind is FileEventKind.MOVED:
            if event.src is not None:
                self.settle.cancel(event.src)
                changed = self._forget(str(event.src))
                paths.add(str(event.src))
            changed |= await self._load_one(path)
        elif kind is FileEventKind.DELETED:
            self.settle.cancel(path)
            changed = self._forget(str(path))
        else:  # MODIFIED: wait for CLOSED (or the settle timer, restarted)
            self.settle.restart(path)
            return
        self._publish_orphans(changed, event.observed_at)
        self._refresh_evidence(paths, changed, event.observed_at)
        self._publish_errors(paths, event.observed_at)
        self.saver.mark()
        self._update_status()

    # -- publishing ----------------------------------------------------------------------
    def _reconcile_all(self, observed_at: float) -> None:
        self._publish_orphans(set(self.index.orphans()) | self.announced_orphans, observed_at)
        self._publish_errors(
            set(self.announced_errors) | {p for p, m in self.meta.items() if m.error},
            observed_at,
        )
        self._update_status()

    def _publish_orphans(self, channels: set[Channel], observed_at: float) -> None:
        for channel in sorted(channels):
            orphan = self.index.is_orphan(channel)
            if orphan and channel not in self.announced_orphans:
                self._gap_orphan(channel, observed_at)
                self.announced_orphans.add(channel)
            elif not orphan and channel in self.announced_orphans:
                gone = self.index.producer_count(channel) == 0
                self.ctx.resolve(
                    gap_type="orphaned_queue",
                    gap_name=channel.name,
                    ecosystem=self.ecosystem,
                    gap_category="integration",
                    gap_reason="its producer went away" if gone else "it has a consumer now",
                    observed_at=observed_at,
                    channel_kind=channel.kind.value,
                    **self._consumer_fact(channel, gone),
                )
                self.announced_orphans.discard(channel)
                self.evidence.pop(channel, None)

    def _gap_orphan(self, channel: Channel, observed_at: float) -> None:
        sites = self.index.producers(channel, limit=MAX_FACT_ITEMS)
        files: list[str] = []
        for site in sites:
            rel = self._relative(site.path)
            if rel not in files:
                files.append(rel)
        lines = [self._code(s) for s in sites[:MAX_CODE_LINES]]
        self.evidence[channel] = lines
        if channel.kind is ChannelKind.TOPIC:
            reason = f"bus topic '{channel.name}' is emitted but nothing subscribes to it"
        else:
            reason = f"'{channel.name}' is populated but never consumed"
        self.ctx.gap(
            gap_type="orphaned_queue",
            gap_name=channel.name,
            gap_category="integration",
            gap_reason=reason,
            ecosystem=self.ecosystem,
            observed_at=observed_at,
            channel_kind=channel.kind.value,
            producers=list(dict.fromkeys(f"{s.module}:{s.function}" for s in sites)),
            sites=[f"{self._relative(s.path)}:{s.line}" for s in sites],
            files=files,
            producer_files=self.index.producer_count(channel),
            producer_lines=lines,
        )

    def _code(self, site: ProducerSite) -> str:
        """``path:line: statement`` read from the watched tree (never imported)."""
        try:
            with open(site.path, "rb") as fh:
                source = fh.read(self.cfg.max_file_bytes).decode("utf-8", "replace")
        except OSError:
            source = None
        return evidence_line(self._relative(site.path), site.line, source)

    def _consumer_fact(self, channel: Channel, gone: bool) -> dict[str, str]:
        site = None if gone else self.index.consumer(channel)
        return {"consumer_line": self._code(site)} if site is not None else {}

    def _refresh_evidence(
        self, paths: set[str], changed: set[Channel], observed_at: float
    ) -> None:
        """An announced orphan whose producing code changed is announced again with the
        new code: the question's evidence follows the code."""
        for channel in sorted(self.announced_orphans - changed):
            sites = self.index.producers(channel, MAX_FACT_ITEMS)
            if not any(site.path in paths for site in sites):
                continue
            lines = [self._code(s) for s in sites[:MAX_CODE_LINES]]
            if self.index.is_orphan(channel) and lines != self.evidence.get(channel):
                self._gap_orphan(channel, observed_at)

    def _publish_errors(self, paths: set[str], observed_at: float) -> None:
        for path in sorted(paths):
            meta = self.meta.get(path)
            error = meta.error if meta is not None else None
            announced = self.announced_errors.get(path)
            if error is None:
                self.confirmer.forget(path)
            if error is not None and announced is None:
                if not self.confirmer.is_error(path):
                    continue  # valid for the watched interpreter: named in /health only
                name = self._relative(path)
                message, line = error
                self.ctx.gap(
                    gap_type="syntax_error",
                    gap_name=name,
                    gap_category="integration",
                    gap_reason=f"{name} does not parse: {message}",
                    ecosystem=self.ecosystem,
                    observed_at=observed_at,
                    path=path,
                    line=line,
                    message=message,
                )
                self.announced_errors[path] = name
            elif error is None and announced is not None:
                self.ctx.resolve(
                    gap_type="syntax_error",
                    gap_name=announced,
                    ecosystem=self.ecosystem,
                    gap_category="integration",
                    gap_reason="the file parses now" if meta else "the file is gone",
                    observed_at=observed_at,
                    path=path,
                )
                del self.announced_errors[path]

    def level(self) -> set[tuple[str, str]]:
        """Orphaned queues and syntax errors open now (announced and still seen)."""
        return {("orphaned_queue", c.name) for c in self.announced_orphans} | {
            ("syntax_error", name) for name in self.announced_errors.values()}

    def reannounce(self, keys: Iterable[tuple[str, str]]) -> int:
        wanted = set(keys)
        count = 0
        for channel in sorted(self.announced_orphans):
            if ("orphaned_queue", channel.name) in wanted:
                self._gap_orphan(channel, time.time())
                count += 1
        errors = [path for path, name in self.announced_errors.items()
                  if ("syntax_error", name) in wanted]
        for path in errors:
            del self.announced_errors[path]
            self._publish_errors({path}, time.time())
            count += 1
        return count

    def _relative(self, path: str) -> str:
        p = Path(path)
        root = root_of(p, self.roots)
        return p.relative_to(root).as_posix() if root is not None else path

    def _update_status(self) -> None:
        self.ctx.status.details.update(
            files=len(self.meta),
            orphans=len(self.announced_orphans),
            syntax_errors=len(self.announced_errors),
            **self.stats,
            **self.confirmer.details(self._relative),
        )

    def _watch_error(self, message: str) -> None:
        self.ctx.status.details["watch_error"] = message

    # -- checkpoint ----------------------------------------------------------------------
    def _load_checkpoint(self) -> None:
        data = self.ctx.checkpoints.load(CHECKPOINT)
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            return
        try:
            self.index, skipped = FlowIndex.from_json(data.get("index"), self.cfg.prefix_match)
            for path, raw in (data.get("files") or {}).items():
                meta = FileMeta.from_json(raw)
                if meta.error is not None or path in self.index:
                    self.meta[path] = meta
            self.announced_orphans = {
                Channel(ChannelKind(kind), str(name))
                for kind, name in data.get("announced_orphans") or []
            }
            self.announced_errors = {
                str(k): str(v) for k, v in (data.get("announced_errors") or {}).items()
            }
        except (KeyError, TypeError, ValueError, IndexError) as err:
            self.log.error("integration_checkpoint_invalid", error=str(err))
            self.index, self.meta = FlowIndex(prefix_match=self.cfg.prefix_match), {}
            self.announced_orphans, self.announced_errors = set(), {}
            return
        for path in skipped:
            self.meta.pop(path, None)
        self.log.info(
            "integration_checkpoint_loaded",
            files=len(self.meta),
            orphans=len(self.announced_orphans),
            skipped=len(skipped),
        )

    def _snapshot(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "files": {p: m.to_json() for p, m in self.meta.items()},
            "index": self.index.to_json(),
            "announced_orphans": [[c.kind.value, c.name] for c in sorted(self.announced_orphans)],
            "announced_errors": dict(self.announced_errors),
        }

    def _write(self, data: dict[str, Any]) -> None:
        self.ctx.checkpoints.save(CHECKPOINT, data)
