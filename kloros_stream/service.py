"""The service: monitors -> bus -> CuriosityCore -> feed, with HTTP beside it.

Sources (the nine supervised monitors) publish to the drop-oldest bus; one consumer task
takes batches off the bus, turns them into questions and appends those to the feed (the
question store: feed + index, :mod:`.store`); a housekeeping task, woken only when there
is something to do, writes deferred counter updates, fsyncs, refreshes the snapshot,
retires old resolved questions and starts a compaction (in a thread) when garbage
dominates the feed. Shutdown stops the monitors first,
then drains the bus into the feed and closes it.

Sinks (:mod:`.sinks`): every other way out (history, snapshot, KLoROS feed file, ChemBus)
is called after the consumer and from housekeeping, each isolated from the others.

Operations: every consumed signal is appended to the ``[history]`` log when it is set;
under systemd (``$NOTIFY_SOCKET``) the service sends READY=1 once monitors and HTTP are
up, a STATUS= line every few seconds, WATCHDOG=1 from the event loop and STOPPING=1 on
shutdown. SIGHUP re-reads the config file (RELOADING=1, then READY=1): see :mod:`.reload`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from .bus import SignalBus
from .checkpoint import CheckpointStore, read_only_store
from .config import Config, ConfigError, load_config
from .consumers import ConsumerCollector, ConsumerDesk
from .core.curiosity import CuriosityCore
from .core.store import Selection
from .feed import QuestionFeed
from .http_consumers import TokenFileError
from .logs import configure_logging, json_for
from .metrics import build_registry
from .models import Signal
from .monitors import monitor_class
from .monitors.base import Monitor, MonitorContext, MonitorStatus, MonitorUnavailable
from .reconcile import Reconciler
from .reload import plan_reload
from .sdnotify import Notifier, watchdog_loop
from .sinks import build_sinks, chembus_sink, history_sink
from .sources.index import SourceIndex
from .sources.indexes import SourceIndexes
from .store import FeedStore
from .stream import QuestionStream
from .supervisor import BackoffPolicy, Supervised
from .web import build_app

log = structlog.get_logger("kloros_stream.service")

MonitorFactory = Callable[[MonitorContext], Monitor]
BATCH_LIMIT = 4096
HOUSEKEEPING_COALESCE_S = 1.0
MONITOR_STOP_TIMEOUT_S = 2.0
STATUS_INTERVAL_S = 5.0
RETENTION_CHECK_S = 3600.0


class StartupError(Exception):
    """The service cannot start with this configuration; the message names the key."""


def default_factory(name: str) -> MonitorFactory:
    return lambda ctx: monitor_class(name)(ctx)


def open_cluster(svc: Service) -> Any:
    """The ``[cluster]`` node (see docs/distributed.md), or None in the embedded default."""
    if not svc.config.cluster.role:
        return None
    from .cluster.node import ClusterNode  # nats-py is imported only in distributed mode

    def write() -> None:
        svc._write()
        svc._dirty.set()

    return ClusterNode(svc.config.cluster, svc.config.service.state_dir, svc.core, write,
                       svc._dirty.set)


class Service:
    def __init__(self, config: Config,
                 factories: dict[str, MonitorFactory] | None = None,
                 notifier: Notifier | None = None,
                 on_stop: Callable[[], None] | None = None) -> None:
        self.config = config
        self.on_stop = on_stop
        """Called once when a stop is requested (the CLI arms its exit deadline there)."""
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
        self.cluster = open_cluster(self)
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
        self._reload_requested = asyncio.Event()
        self._ops_tasks: list[asyncio.Task[None]] = []
        self.consumer_errors = 0
        self.feed_write_errors = 0
        self.registry, self.latency = build_registry(self)  # last: it reads the fields above
        self.registry.register(ConsumerCollector(self.desk, self.stream.stats))

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        """Run until :meth:`request_stop` (or SIGTERM/SIGINT), then shut down cleanly."""
        self._install_signal_handlers()
        self._prepare_state_dir()
        self._recover_feed()
        try:
            await self._start_http()
        except StartupError:
            self.store.close()
            raise
        self.desk.start()
        await self.sinks.start(self._open_json)
        self._consumer = asyncio.create_task(self._consume(), name="consumer")
        self._housekeeper = asyncio.create_task(self._housekeep(), name="housekeeping")
        if self.cluster is None:  # distributed: the local view is not this host's level
            self._reconcile_task = asyncio.create_task(self.reconciler.run(), name="reconciler")
        if self.cluster is not None:
            self.cluster.start()
        for name in self.monitor_names:
            self._start_monitor(name)
        log.info("service_ready", port=self.port,
                 monitors={n: s.state for n, s in self.statuses.items()},
                 questions=self.core.counts()[1])
        self._start_ops_tasks()
        self.notifier.ready(status=self.status_line(0.0))
        await self._stop.wait()
        await self._shutdown()

    def request_stop(self) -> None:
        if not self._stop.is_set() and self.on_stop is not None:
            self.on_stop()
        self._stop.set()

    def request_reload(self) -> None:
        self._reload_requested.set()

    def _install_signal_handlers(self) -> None:
        """The handlers only set an event; the work happens in :meth:`run`."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _prepare_state_dir(self) -> None:
        try:
            self.config.service.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StartupError(f"service.state_dir: cannot create "
                               f"{self.config.service.state_dir}: {err}") from None

    def _recover_feed(self) -> None:
        try:
            got = self.store.open(time.time())
        except OSError as err:
            raise StartupError(f"feed.path: cannot open {self.feed.path}: {err}") from None
        self.core.recovered(time.time())
        log.info("feed_recovered", path=str(self.feed.path), lines=got.lines_read,
                 questions=got.questions, invalid_lines=got.invalid_lines,
                 torn_bytes=got.torn_bytes, index_rebuilt=got.rebuilt, retired=got.expired,
                 seconds=round(got.seconds, 3))

    async def _start_http(self) -> None:
        try:
            app = build_app(self)
        except TokenFileError as err:
            raise StartupError(str(err)) from None
        # A client that goes away cancels its handler: a stream subscriber leaves at once.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                     keepalive_timeout=self.config.http.idle_timeout_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http.host, self.config.http.port)
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            raise StartupError(f"http.port: cannot listen on {self.config.http.host}:"
                               f"{self.config.http.port}: {err}") from None
        addresses = self._runner.addresses
        self.port = addresses[0][1] if addresses else self.config.http.port
        log.info("http_listening", host=self.config.http.host, port=self.port)

    def _start_monitor(self, name: str) -> None:
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

    async def _stop_monitor(self, name: str) -> bool:
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
        for task in self._ops_tasks:
            task.cancel()
        if self._ops_tasks:
            await asyncio.wait(self._ops_tasks)
        stopped = await asyncio.gather(*(self._stop_monitor(n) for n in list(self.supervised)))
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
        self.sinks.refresh(self._open_json, time.time())
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
                self.feed.sync()
                self.sinks.refresh(self._open_json, now)
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

    def _open_json(self) -> list[bytes]:
        """The open questions' JSON, highest priority first (what the file sinks write)."""
        items = map(self.core.json, self.core.select(Selection(status="open")))
        return [j for j in items if j is not None]

    def _retire(self, now: float) -> None:
        """Resolved questions past the retention leave the views (checked hourly)."""
        if time.monotonic() - self._retention_checked >= RETENTION_CHECK_S:
            self._retention_checked = time.monotonic()
            if self.store.expire(now):
                self.store.commit()

    # -- operations: systemd notify, SIGHUP reload -----------------------------------------
    def _start_ops_tasks(self) -> None:
        """The SIGHUP reloader; under systemd also the watchdog and the STATUS= line."""
        jobs = {"reloader": self._reloader()}
        if self.notifier.enabled:
            jobs["watchdog"] = watchdog_loop(self.notifier, healthy=lambda: self.consumer_running)
            jobs["status"] = self._report_status()
        self._ops_tasks = [asyncio.create_task(c, name=n) for n, c in jobs.items()]

    def status_line(self, signals_per_s: float) -> str:
        """One line for systemd's STATUS=: questions, signal rate, drops, monitor states."""
        open_q, total = self.core.counts()
        states = Counter(s.state for s in self.statuses.values())
        monitors = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        return (f"{open_q} open questions ({total} total), "
                f"{signals_per_s:.1f} signals/s, {self.bus.total_dropped} dropped; "
                f"monitors: {monitors}")

    async def _report_status(self) -> None:
        handled, since = self.core.handled, time.monotonic()
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            now = time.monotonic()
            rate = (self.core.handled - handled) / max(now - since, 1e-6)
            handled, since = self.core.handled, now
            self.notifier.status(self.status_line(rate))

    async def _reloader(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            try:
                await self.reload()
            except Exception:
                log.exception("reload_failed")
                self.notifier.ready(status="reload failed, see the log")

    async def reload(self) -> bool:
        """Re-read the config file and apply it; an invalid one is rejected, the old kept."""
        self.notifier.reloading()
        log.info("reload_started", config=str(self.config.source))
        try:
            if self.config.source is None:
                raise ConfigError("running on built-in defaults: no config file to reload")
            new = load_config(self.config.source)
        except ConfigError as err:
            log.error("reload_rejected", config=str(self.config.source), reason=str(err))
            self.notifier.ready(status=f"reload rejected, old config kept: {err}")
            return False
        plan = plan_reload(self.config, new)
        old, self.config = self.config, plan.config
        mine = set(self.monitor_names)
        await asyncio.gather(*(self._stop_monitor(n) for n in plan.stop + plan.restart
                               if n in mine))
        for name in set(plan.stop) & mine:
            self.statuses[name].state = "disabled"
        await self._apply_settings(old, plan.config)
        for name in plan.start + plan.restart:
            if name in mine:
                self._start_monitor(name)
        log.info("reload_applied", started=plan.start, stopped=plan.stop,
                 restarted=plan.restart, unchanged=plan.unchanged, changed=plan.changed)
        if plan.needs_restart:
            log.warning("reload_needs_restart", keys=plan.needs_restart)
        self.notifier.ready(status=self.status_line(0.0))
        return True

    async def _apply_settings(self, old: Config, new: Config) -> None:
        """The settings that take effect without restarting anything."""
        self.core.suppress = tuple(new.curiosity.suppress)
        self.bus.maxsize = new.bus.maxsize
        policy = BackoffPolicy.from_config(new.supervisor)
        for sup in self.supervised.values():
            sup.policy = policy
        if (new.service.log_level, new.service.log_format) != (
                old.service.log_level, old.service.log_format):
            configure_logging(new.service.log_level, json=json_for(new.service.log_format))
        if new.history != old.history:
            await self.sinks.replace("history", history_sink(new), self._open_json)
        if new.chembus != old.chembus:
            await self.sinks.replace("chembus", chembus_sink(new, self.bus), self._open_json)

    # -- views ---------------------------------------------------------------------------
    @property
    def consumer_running(self) -> bool:
        return self._consumer is not None and not self._consumer.done()

    def _question_counts(self) -> dict[str, Any]:
        """Open and total questions; with the index unreadable (a full disk, say) /health
        still answers, with the error."""
        try:
            return dict(zip(("open", "total"), self.core.counts(), strict=True))
        except (OSError, sqlite3.Error) as err:
            return {"open": None, "total": None, "error": f"{type(err).__name__}: {err}"}

    def health(self) -> tuple[dict[str, Any], int]:
        """The /health report and its HTTP status (503 if a monitor failed or the consumer
        is down)."""
        failed = [n for n, s in self.statuses.items() if s.state == "failed"]
        restarting = [n for n, s in self.statuses.items() if s.state == "restarting"]
        down = not self.consumer_running
        sinks_failing = self.sinks.failing
        report: dict[str, Any] = {
            "status": "degraded" if failed or restarting or down or sinks_failing else "ok",
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "bus": {
                "depth": self.bus.depth,
                "maxsize": self.bus.maxsize,
                "published": self.bus.total_published,
                "dropped": self.bus.total_dropped,
            },
            "consumer": {"running": not down, "signals": self.core.handled,
                         "errors": self.consumer_errors},
            "questions": self._question_counts(),
            "reconcile": dict(self.reconciler.totals),
            "monitors": {n: s.as_json() for n, s in self.statuses.items()},
        }
        if len(self.sinks):
            report["sinks"] = self.sinks.health()
        if self.cluster is not None:
            report["cluster"] = self.cluster.health()
        if failed or down:
            report["reason"] = ("consumer down" if down else
                                "; ".join(f"{n}: {self.statuses[n].last_error}" for n in failed))
        return report, (503 if failed or down else 200)


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
