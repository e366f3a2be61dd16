"""What an operator sees and does beside the pipeline: signals, systemd, reload, /health.

:class:`Operations` installs the signal handlers (they only set events; the work happens
in the service's tasks), runs the SIGHUP reloader and, under systemd, the watchdog and the
STATUS= line, applies a re-read config file (the diff is :mod:`.reload`'s), and builds the
/health report.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import structlog

from .config import Config, ConfigError, load_config
from .logs import configure_logging, json_for
from .reload import plan_reload
from .sdnotify import watchdog_loop
from .sinks import chembus_sink, history_sink
from .supervisor import BackoffPolicy

if TYPE_CHECKING:
    from .service import Service

log = structlog.get_logger("kloros_stream.service")

STATUS_INTERVAL_S = 5.0


class Operations:
    """The operations side of one :class:`~.service.Service`."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.reload_requested = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT request a stop, SIGHUP a reload."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.svc.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)

    def start(self) -> None:
        """The SIGHUP reloader; under systemd also the watchdog and the STATUS= line."""
        notifier = self.svc.notifier
        jobs = {"reloader": self._reloader()}
        if notifier.enabled:
            jobs["watchdog"] = watchdog_loop(notifier, healthy=lambda: self.svc.consumer_running)
            jobs["status"] = self._report_status()
        self._tasks = [asyncio.create_task(c, name=n) for n, c in jobs.items()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    # -- systemd STATUS= -----------------------------------------------------------------
    def status_line(self, signals_per_s: float) -> str:
        """One line for systemd's STATUS=: questions, signal rate, drops, monitor states."""
        svc = self.svc
        open_q, total = svc.core.counts()
        states = Counter(s.state for s in svc.statuses.values())
        monitors = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        return (
            f"{open_q} open questions ({total} total), "
            f"{signals_per_s:.1f} signals/s, {svc.bus.total_dropped} dropped; "
            f"monitors: {monitors}"
        )

    async def _report_status(self) -> None:
        core = self.svc.core
        handled, since = core.handled, time.monotonic()
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            now = time.monotonic()
            rate = (core.handled - handled) / max(now - since, 1e-6)
            handled, since = core.handled, now
            self.svc.notifier.status(self.status_line(rate))

    # -- SIGHUP reload -------------------------------------------------------------------
    async def _reloader(self) -> None:
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            try:
                await self.reload()
            except Exception:
                log.exception("reload_failed")
                self.svc.notifier.ready(status="reload failed, see the log")

    async def reload(self) -> bool:
        """Re-read the config file and apply it; an invalid one is rejected, the old kept."""
        svc = self.svc
        svc.notifier.reloading()
        log.info("reload_started", config=str(svc.config.source))
        try:
            if svc.config.source is None:
                raise ConfigError("running on built-in defaults: no config file to reload")
            new = load_config(svc.config.source)
        except ConfigError as err:
            log.error("reload_rejected", config=str(svc.config.source), reason=str(err))
            svc.notifier.ready(status=f"reload rejected, old config kept: {err}")
            return False
        plan = plan_reload(svc.config, new)
        old, svc.config = svc.config, plan.config
        mine = set(svc.monitor_names)
        await asyncio.gather(*(svc.stop_monitor(n) for n in plan.stop + plan.restart if n in mine))
        for name in set(plan.stop) & mine:
            svc.statuses[name].state = "disabled"
        await self._apply_settings(old, plan.config)
        for name in plan.start + plan.restart:
            if name in mine:
                svc.start_monitor(name)
        log.info(
            "reload_applied",
            started=plan.start,
            stopped=plan.stop,
            restarted=plan.restart,
            unchanged=plan.unchanged,
            changed=plan.changed,
        )
        if plan.needs_restart:
            log.warning("reload_needs_restart", keys=plan.needs_restart)
        svc.notifier.ready(status=self.status_line(0.0))
        return True

    async def _apply_settings(self, old: Config, new: Config) -> None:
        """The settings that take effect without restarting anything."""
        svc = self.svc
        svc.core.suppress = tuple(new.curiosity.suppress)
        svc.bus.maxsize = new.bus.maxsize
        policy = BackoffPolicy.from_config(new.supervisor)
        for sup in svc.supervised.values():
            sup.policy = policy
        if (new.service.log_level, new.service.log_format) != (
            old.service.log_level,
            old.service.log_format,
        ):
            configure_logging(new.service.log_level, json=json_for(new.service.log_format))
        if new.history != old.history:
            await svc.sinks.replace("history", history_sink(new), svc.open_json)
        if new.chembus != old.chembus:
            await svc.sinks.replace("chembus", chembus_sink(new, svc.bus), svc.open_json)

    # -- /health -------------------------------------------------------------------------
    def health(self) -> tuple[dict[str, Any], int]:
        """The /health report and its HTTP status (503 if a monitor failed or the consumer
        is down)."""
        svc = self.svc
        statuses = svc.statuses
        failed = [n for n, s in statuses.items() if s.state == "failed"]
        restarting = [n for n, s in statuses.items() if s.state == "restarting"]
        down = not svc.consumer_running
        sinks_failing = svc.sinks.failing
        report: dict[str, Any] = {
            "status": "degraded" if failed or restarting or down or sinks_failing else "ok",
            "uptime_s": round(time.monotonic() - svc.started_at, 3),
            "bus": {
                "depth": svc.bus.depth,
                "maxsize": svc.bus.maxsize,
                "published": svc.bus.total_published,
                "dropped": svc.bus.total_dropped,
            },
            "consumer": {
                "running": not down,
                "signals": svc.core.handled,
                "errors": svc.consumer_errors,
            },
            "questions": self._question_counts(),
            "reconcile": dict(svc.reconciler.totals),
            "monitors": {n: s.as_json() for n, s in statuses.items()},
        }
        if len(svc.sinks):
            report["sinks"] = svc.sinks.health()
        if svc.cluster is not None:
            report["cluster"] = svc.cluster.health()
        if failed or down:
            report["reason"] = (
                "consumer down"
                if down
                else "; ".join(f"{n}: {statuses[n].last_error}" for n in failed)
            )
        return report, (503 if failed or down else 200)

    def _question_counts(self) -> dict[str, Any]:
        """Open and total questions; with the index unreadable (a full disk, say) /health
        still answers, with the error."""
        try:
            return dict(zip(("open", "total"), self.svc.core.counts(), strict=True))
        except (OSError, sqlite3.Error) as err:
            return {"open": None, "total": None, "error": f"{type(err).__name__}: {err}"}
