"""The service: monitors -> bus -> CuriosityCore -> feed, with HTTP beside it.

Sources (the nine supervised monitors) publish to the drop-oldest bus; one consumer task
takes batches off the bus, turns them into questions and appends those to the feed (the
question store: feed + index, :mod:`.store`); a housekeeping task, woken only when there
is something to do, writes deferred counter updates, fsyncs, refreshes the snapshot,
retires old resolved questions and starts a compaction (in a thread) when garbage
dominates the feed. Shutdown stops the monitors first, then drains the bus into the feed
and closes it. Sinks (:mod:`.sinks`: history, snapshot, KLoROS feed file, ChemBus) are
called after the consumer and from housekeeping, each isolated from the others.

Operations (:class:`~.service_ops.Operations`): signal handlers, systemd notify (READY=1
once monitors and HTTP are up, STATUS=, WATCHDOG=1, STOPPING=1), SIGHUP reload
(:mod:`.reload`), /health. The start-up steps that can fail on the configuration are in
:mod:`.service_startup` (:class:`StartupError` re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from .bus import SignalBus
from .checkpoint import CheckpointStore, read_only_store
from .config import Config
from .consumers import ConsumerCollector, ConsumerDesk
from .core.curiosity import CuriosityCore
from .core.store import Selection
from .feed import QuestionFeed
from .metrics import build_registry
from .models import Signal
from .monitors import monitor_class
from .monitors.base import Monitor, MonitorContext, MonitorStatus, MonitorUnavailable
from .reconcile import Reconciler
from .sdnotify import Notifier
from .service_ops import Operations
from .service_startup import (
    StartupError,
    open_cluster,
    prepare_state_dir,
    recover_feed,
    start_http,
)
from .sinks import build_sinks
from .sources.index import SourceIndex
from .sources.indexes import SourceIndexes
from .store import FeedStore
from .stream import QuestionStream
from .supervisor import BackoffPolicy, Supervised

__all__ = ["MonitorFactory", "Service", "StartupError", "scan"]

log = structlog.get_logger("kloros_stream.service")

MonitorFactory = Callable[[MonitorContext], Monitor]
BATCH_LIMIT = 4096
HOUSEKEEPING_COALESCE_S = 1.0
MONITOR_STOP_TIMEOUT_S = 2.0
RETENTION_CHECK_S = 3600.0


def default_factory(name: str) -> MonitorFactory:
    return lambda ctx: monitor_class(name)(ctx)


class Service:
    def __init__(self, config: Config,
                 factories: dict[str, MonitorFactory] | None = None,
                 notifier: Notifier | None = None,
                 on_stop: Callable[[], None] | None = None,
                 stop_requested: Callable[[], bool] | None = None) -> None:
        self.config = config
        self.on_stop = on_stop
        """Called once when a stop is requested (the CLI arms its exit deadline there)."""
        self.stop_requested = stop_requested
        """Asked once the signal handlers are in place: True (a stop signal came while the
        process was starting) ends :meth:`run` before anything starts."""
        self.notifier = notifier or Notifier.from_env(unset_environment=True)
        self.factories = factories or {
            name: default_factory(name) for name in config.monitors.names()}
        self.monitor_names: tuple[str, ...] = tuple(self.factories)
        self.bus: SignalBus[Signal] = SignalBus(config.bus.maxsize)
        self.sinks = build_sinks(config, self.bus)
        self.feed = QuestionFeed(config.feed.path, compact_bytes=config.feed.compact_bytes)
        self.store = FeedStore(self.feed, retention_s=config.feed.retention_days * 86400)
        self.core = CuriosityCore(config.curiosity.suppress, config.feed.counter_flush_s,
                                  store=self.store)
        self._compaction: asyncio.Task[bool] | None = None
        self._retention_checked = time.monotonic()
        self.stream = QuestionStream(self.feed)
        self.feed.listeners.append(self.stream.on_written)
        self.feed.listeners.append(lambda _start, _lines: self.sinks.on_feed_written())
        self.desk = ConsumerDesk(self.core, self.store, on_change=lambda: self._dirty.set())
        self.checkpoints = CheckpointStore(config.service.state_dir)
        self.sources = SourceIndexes(self.checkpoints)
        self._dirty = asyncio.Event()
        self.cluster = open_cluster(config, self.core, self._write, self._dirty.set)
        if self.cluster is not None and not self.cluster.runs_monitors:
            self.factories, self.monitor_names = {}, ()  # a core-only node watches nothing
        self.statuses: dict[str, MonitorStatus] = {n: MonitorStatus() for n in self.monitor_names}
        self.supervised: dict[str, Supervised] = {}
        self.reconciler = Reconciler(
            self.bus, self.core, lambda: {n: s.monitor for n, s in self.supervised.items()})
        self._reconcile_task: asyncio.Task[None] | None = None
        self._committable = 0
        """The bus sequence number through which the consumer applied signals."""
        self._feed_failed = False
        self.started_at = time.monotonic()
        self.port: int | None = None
        self._stop = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.ops = Operations(self)
        self.consumer_errors = 0
        self.feed_write_errors = 0
        self.registry, self.latency = build_registry(self)  # last: it reads the fields above
        self.registry.register(ConsumerCollector(self.desk, self.stream.stats))

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        """Run until :meth:`request_stop` (or SIGTERM/SIGINT), then shut down cleanly."""
        self.ops.install_signal_handlers()
        if self.stop_requested is not None and self.stop_requested():
            log.info("service_stopped_early", reason="stop signal during start-up")
            return
        prepare_state_dir(self.config)
        recover_feed(self.store, self.core)
        try:
            self._runner, self.port = await start_http(self)
        except StartupError:
            self.store.close()
            raise
        self.desk.start()
        await self.sinks.start(self.open_json)
        self._consumer = asyncio.create_task(self._consume(), name="consumer")
        self._housekeeper = asyncio.create_task(self._housekeep(), name="housekeeping")
        if self.cluster is None:  # distributed: the local view is not this host's level
            self._reconcile_task = asyncio.create_task(self.reconciler.run(), name="reconciler")
        if self.cluster is not None:
            self.cluster.start()
        for name in self.monitor_names:
            self.start_monitor(name)
        log.info("service_ready", port=self.port,
                 monitors={n: s.state for n, s in self.statuses.items()},
                 questions=self.core.counts()[1])
        self.ops.start()
        self.notifier.ready(status=self.status_line(0.0))
        await self._stop.wait()
        await self._shutdown()

    def request_stop(self) -> None:
        if not self._stop.is_set() and self.on_stop is not None:
            self.on_stop()
        self._stop.set()

    def request_reload(self) -> None:
        self.ops.reload_requested.set()

    def start_monitor(self, name: str) -> None:
        """Start ``name`` under its supervisor (or mark it disabled)."""
        status = self.statuses[name]
        if not self.config.monitors.get(name).enabled:
            status.state = "disabled"
            return
        ctx = MonitorContext(
            name=name,
            config=self.config,
            publisher=self.bus,
            checkpoints=self.checkpoints.child(name),
            status=status,
            on_level_ready=self.reconciler.level_ready,
            sources=self.sources,
        )
        factory = self.factories[name]
        sup = Supervised(name, lambda: factory(ctx), status,
                         BackoffPolicy.from_config(self.config.supervisor))
        self.supervised[name] = sup
        sup.start()

    async def stop_monitor(self, name: str) -> bool:
        """Cancel a monitor and wait for it; False if it did not stop in time."""
        sup = self.supervised.pop(name, None)
        if sup is None:
            return True
        try:
            await asyncio.wait_for(sup.stop(), MONITOR_STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("monitor_stop_timeout", monitor=name)
            return False
        return True

    async def _shutdown(self) -> None:
        log.info("service_stopping")
        self.notifier.stopping()
        self.reconciler.heap.close()
        await self.ops.stop()
        stopped = await asyncio.gather(*(self.stop_monitor(n) for n in list(self.supervised)))
        if not all(stopped):
            # A straggler may still publish and checkpoint; its signals after the drain
            # below would be lost, so its checkpoints must not move past them.
            self.checkpoints.freeze()
        await self.desk.stop()
        tasks = [t for t in (self._consumer, self._housekeeper, self._reconcile_task)
                 if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # waits without swallowing our own cancellation
        if self._compaction is not None:
            self.store.abort_compaction()
            await asyncio.wait([self._compaction])
        drained = self._process(self.bus.take_nowait())
        if self.cluster is not None:
            await self.cluster.stop()  # the edge's buffer keeps what was not yet sent
        self.core.due_updates(time.time(), force=True)
        self._write()
        self._commit(self.bus.taken_through)
        self.sinks.refresh(self.open_json, time.time())
        questions = self.core.counts()[1]
        self.store.close()
        await self.sinks.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        self.notifier.close()
        log.info("service_stopped", drained=drained, questions=questions,
                 feed_lines=self.feed.lines_written, dropped=self.bus.total_dropped)

    # -- the consumer --------------------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            batch = await self.bus.take(BATCH_LIMIT)
            through = self.bus.taken_through
            try:
                self._process(batch)
            except Exception:  # the consumer must outlive any one batch
                self.consumer_errors += 1
                log.exception("consumer_batch_failed", signals=len(batch))
            self._commit(through)

    def _commit(self, through: int) -> None:
        """Acknowledge delivery through ``through`` to waiting monitors, once every line
        due for those signals is written to the feed (else when a later write succeeds)."""
        self._committable = max(self._committable, through)
        if not self._feed_failed:
            self.bus.commit(self._committable)

    def _process(self, batch: list[Signal]) -> int:
        """Apply a batch of signals to the core and append the due lines to the feed."""
        self.sinks.on_signals(batch)
        if self.cluster is not None:  # distributed: to the edge's buffer, then JetStream
            self.cluster.accept(batch)
            return len(batch)
        now = time.time()
        written: list[float] = []
        questions: list[Any] = []
        for sig in batch:
            try:
                q = self.core.handle(sig, now)  # a due line goes into the store's buffer
                if q is not None:
                    written.append(sig.observed_at)
                    questions.append(q)
            except Exception:
                self.consumer_errors += 1
                log.exception("signal_rejected", monitor=sig.monitor, facts=sig.facts)
                # a lost edge (a store error, say): repaired from the monitor's level
                self.reconciler.request(sig.monitor, "consumer_error")
        if written or self.core.pending_count:
            self._dirty.set()  # housekeeping: fsync, snapshot, deferred counters, retries
        if written or self._feed_failed:
            try:
                self.store.flush(settle=False)
            except OSError:
                self.feed_write_errors += 1
                self._feed_failed = True
                log.exception("feed_write_failed", path=str(self.feed.path),
                              buffered_lines=len(written))
                return len(batch)
            self._feed_failed = False
            done = time.time()
            for observed in written:
                self.latency.observe(max(0.0, done - observed))
            # Index the lines after their latency is taken; the index is committed by
            # housekeeping (woken above) about once a second: a crash before that only
            # leaves it behind the feed, which the next start reads on from.
            self.store.settle()
            self.sinks.on_questions(questions)
        return len(batch)

    def _write(self) -> None:
        """Write what the core put into the store, then commit the index; a write that
        succeeds after a failed one acknowledges the signals held back."""
        self.store.flush()
        if self._feed_failed:  # the lines are in the feed: acknowledge them
            self._feed_failed = False
            self._commit(self._committable)
        self.store.commit()

    # -- housekeeping (woken only when there is something to do) --------------------------
    async def _housekeep(self) -> None:
        while True:
            due = self.core.next_due()
            timeout = None if due is None else max(0.0, due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout)
            self._dirty.clear()
            await asyncio.sleep(HOUSEKEEPING_COALESCE_S)
            now = time.time()
            try:
                self.core.due_updates(now)
                self._write()
                await self.feed.sync_async()
                self.sinks.refresh(self.open_json, now)
                self._retire(now)
                await self.store.checkpoint()
                if self.store.needs_compaction and (
                        self._compaction is None or self._compaction.done()):
                    self._compaction = asyncio.create_task(self.store.compact(),
                                                           name="compaction")
            except (OSError, sqlite3.Error):  # a full disk, say: retried after the pause
                self.feed_write_errors += 1
                log.exception("feed_housekeeping_failed", path=str(self.feed.path))
                self._dirty.set()  # buffered lines are kept: try again after the pause

    def open_json(self) -> list[bytes]:
        """The open questions' JSON, highest priority first (what the file sinks write)."""
        items = map(self.core.json, self.core.select(Selection(status="open")))
        return [j for j in items if j is not None]

    def _retire(self, now: float) -> None:
        """Resolved questions past the retention leave the views (checked hourly)."""
        if time.monotonic() - self._retention_checked >= RETENTION_CHECK_S:
            self._retention_checked = time.monotonic()
            if self.store.expire(now):
                self.store.commit()

    # -- views ---------------------------------------------------------------------------
    @property
    def consumer_running(self) -> bool:
        return self._consumer is not None and not self._consumer.done()

    def status_line(self, signals_per_s: float) -> str:
        """One line for systemd's STATUS= (see :meth:`.Operations.status_line`)."""
        return self.ops.status_line(signals_per_s)

    async def reload(self) -> bool:
        """Re-read the config file and apply it; an invalid one is rejected, the old kept."""
        return await self.ops.reload()

    def health(self) -> tuple[dict[str, Any], int]:
        """The /health report and its HTTP status (see :meth:`.Operations.health`)."""
        return self.ops.health()


# -- one-shot scan -------------------------------------------------------------------------
class _Collector:
    def __init__(self) -> None:
        self.signals: list[Signal] = []

    def publish(self, item: Signal) -> None:
        self.signals.append(item)


async def scan(config: Config, factories: dict[str, MonitorFactory] | None = None,
               timeout_s: float = 120.0,
               on_progress: Callable[[SourceIndex], None] | None = None,
               ) -> tuple[list[Signal], dict[str, str]]:
    """Every enabled monitor's initial scan, once; nothing written to the feed or state.

    Returns the signals and, per monitor that could not scan, the reason.
    """
    factories = factories or {name: default_factory(name) for name in config.monitors.names()}
    sink = _Collector()
    problems: dict[str, str] = {}
    # one scan of each source tree for every monitor
    sources = SourceIndexes(one_shot=True, on_progress=on_progress)

    async def one(name: str) -> None:
        ctx = MonitorContext(name=name, config=config, publisher=sink,
                             checkpoints=read_only_store(), one_shot=True, sources=sources)
        try:
            await asyncio.wait_for(factories[name](ctx).run(), timeout_s)
        except MonitorUnavailable as err:
            problems[name] = f"unavailable: {err}"
        except TimeoutError:
            problems[name] = f"scan did not finish within {timeout_s:g}s"
        except Exception as err:
            log.exception("scan_failed", monitor=name)
            problems[name] = f"failed: {type(err).__name__}: {err}"

    names = [n for n in factories if config.monitors.get(n).enabled]
    await asyncio.gather(*(one(n) for n in names))
    return sink.signals, problems
