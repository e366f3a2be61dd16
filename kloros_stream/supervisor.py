"""Supervision of monitors, in the manner of an OTP supervisor (one-for-one).

Each monitor runs in a task of its own. A crash is logged with its traceback and the
monitor restarted after a capped exponential backoff with jitter (reset once it has run
stably); more than ``breaker_restarts`` crashes within ``breaker_window_s`` open the
breaker: state ``failed``, no more restarts. :class:`MonitorUnavailable` is not a crash:
the state is ``unavailable`` with the reason, and the start is retried rarely. One
monitor's failure never touches another.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from .config import SupervisorConfig
from .monitors.base import Monitor, MonitorStatus, MonitorUnavailable

log = structlog.get_logger("kloros_stream.supervisor")


@dataclass(frozen=True)
class BackoffPolicy:
    initial_s: float
    max_s: float
    stable_after_s: float
    breaker_restarts: int
    breaker_window_s: float
    unavailable_retry_s: float
    breaker_retry_s: float = 60.0
    breaker_retry_max_s: float = 1800.0

    @classmethod
    def from_config(cls, cfg: SupervisorConfig) -> BackoffPolicy:
        return cls(cfg.backoff_initial_s, cfg.backoff_max_s, cfg.stable_after_s,
                   cfg.breaker_restarts, cfg.breaker_window_s, cfg.unavailable_retry_s,
                   cfg.breaker_retry_s, cfg.breaker_retry_max_s)

    def half_open_delay(self, retries: int) -> float:
        """Wait before half-open try number ``retries + 1``: doubling, capped."""
        return min(self.breaker_retry_max_s, self.breaker_retry_s * 2 ** retries)

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Backoff before restart number ``attempt`` (1-based): doubling, capped, with
        +/-25% jitter so monitors that crashed together don't restart together."""
        base = min(self.max_s, self.initial_s * 2 ** (attempt - 1))
        return base * (0.75 + 0.5 * rng())


class Supervised:
    """One monitor under supervision."""

    def __init__(self, name: str, factory: Callable[[], Monitor], status: MonitorStatus,
                 policy: BackoffPolicy) -> None:
        self.name = name
        self.factory = factory
        self.status = status
        self.policy = policy
        self.crashes: deque[float] = deque()
        self.task: asyncio.Task[None] | None = None
        self.monitor: Monitor | None = None
        """The running instance (None between a crash and the next start)."""
        self.breaker_retries = 0
        self.log = log.bind(monitor=name)

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self._loop(), name=f"monitor:{self.name}")
        return self.task

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})  # never swallows the caller's own cancellation

    async def _loop(self) -> None:
        attempt = 0
        while True:
            self.status.state = "starting" if self.status.restarts == 0 else "restarting"
            started = time.monotonic()
            closer = None
            try:
                self.monitor = monitor = self.factory()
                self.status.state = "running"
                self.log.info("monitor_started", restarts=self.status.restarts)
                if self.status.breaker is not None:  # half-open: closes once it ran stably
                    closer = asyncio.get_running_loop().call_later(
                        self.policy.stable_after_s, self._close_breaker)
                await monitor.run()
                raise RuntimeError("run() returned; a monitor follows its source until cancelled")
            except asyncio.CancelledError:
                if closer is not None:
                    closer.cancel()
                raise
            except MonitorUnavailable as err:
                self.status.state = "unavailable"
                self.status.last_error = str(err)
                self.log.warning("monitor_unavailable", reason=str(err),
                                 retry_in_s=self.policy.unavailable_retry_s)
                await asyncio.sleep(self.policy.unavailable_retry_s)
                continue
            except Exception as err:
                if closer is not None:
                    closer.cancel()
                self.monitor = None
                now = time.monotonic()
                self.status.last_error = f"{type(err).__name__}: {err}"
                self.log.error("monitor_crashed", error=self.status.last_error,
                               traceback=traceback.format_exc())
                if now - started >= self.policy.stable_after_s:
                    attempt = 0
                    self._close_breaker()
                self.crashes.append(now)
                while self.crashes and now - self.crashes[0] > self.policy.breaker_window_s:
                    self.crashes.popleft()
                if len(self.crashes) > self.policy.breaker_restarts or self.status.breaker:
                    await self._breaker_open()
                    attempt = 0
                    continue
                attempt += 1
                delay = self.policy.delay(attempt)
                self.status.state = "restarting"
                self.status.restarts += 1
                self.log.warning("monitor_restarting", attempt=attempt, delay_s=round(delay, 3))
                await asyncio.sleep(delay)

    async def _breaker_open(self) -> None:
        """State ``failed`` until the half-open try is due; then one restart is tried."""
        delay = self.policy.half_open_delay(self.breaker_retries)
        if self.status.breaker is None:
            self.status.last_error = (
                f"{len(self.crashes)} crashes within {self.policy.breaker_window_s:g}s;"
                f" last: {self.status.last_error}")
        self.status.state = "failed"
        self.status.breaker = {
            "opened_at": (self.status.breaker or {}).get("opened_at", time.time()),
            "retries": self.breaker_retries,
            "next_retry_at": time.time() + delay,
            "next_retry_in_s": round(delay, 3),
        }
        self.log.error("monitor_failed", reason=self.status.last_error,
                       half_open_in_s=round(delay, 3), retries=self.breaker_retries)
        await asyncio.sleep(delay)
        self.breaker_retries += 1
        self.crashes.clear()
        self.status.restarts += 1
        self.log.warning("monitor_half_open", attempt=self.breaker_retries)

    def _close_breaker(self) -> None:
        if self.status.breaker is not None:
            self.log.info("monitor_breaker_closed", retries=self.breaker_retries)
        self.status.breaker = None
        self.breaker_retries = 0
