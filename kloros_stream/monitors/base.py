"""What every monitor is: a long-running coroutine that publishes gap signals.

A monitor gets a :class:`MonitorContext` (its config section, the whole config, a
checkpoint store of its own, a logger, and ``gap``/``resolve`` to publish) and implements
:meth:`Monitor.run`: do the initial scan, return at once if ``ctx.one_shot`` (the
``scan`` command), else follow events until cancelled. Raise :class:`MonitorUnavailable`
when the source does not exist here; any other exception is a crash the supervisor
restarts with backoff.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

import structlog

from ..checkpoint import CheckpointStore
from ..config import Config, MonitorConfig
from ..escape import clean_facts
from ..models import CAPABILITY_GAP, CAPABILITY_GAP_RESOLVED, Signal
from ..sources.indexes import SourceIndexes

GapKey = tuple[str, str]
"""``(gap_type, gap_name)``."""


class MonitorUnavailable(Exception):
    """The monitor's source does not exist on this host (not a crash: retried rarely)."""


class Publisher:
    """Anything with ``publish(signal)``: the bus, or a list sink for one-shot scans."""

    def publish(self, item: Signal) -> None:  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass
class MonitorStatus:
    """Live state of one monitor, read by ``/health``."""

    state: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    last_event_at: float | None = None
    signals: int = 0
    progress: dict[str, Any] | None = None
    """Long work in progress (an initial scan): phase, what, done, total, rate_per_s."""
    details: dict[str, Any] = field(default_factory=dict)
    """Monitor-specific facts for /health (hardware inventory, watch-limit errors, ...)."""
    breaker: dict[str, Any] | None = None
    """While the restart breaker is open: ``{"opened_at", "retries", "next_retry_at"}``."""
    counters: dict[str, int] = field(default_factory=dict)
    """Monitor-specific counters (lines read, malformed skipped, ...), exported in /metrics
    as ``kloros_stream_monitor_events_total{monitor, event}``."""

    def count(self, event: str, n: int = 1) -> None:
        self.counters[event] = self.counters.get(event, 0) + n

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "state": self.state,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_event_at": self.last_event_at,
            "signals": self.signals,
            **({"progress": self.progress} if self.progress is not None else {}),
            "details": self.details,
            "counters": self.counters,
        }
        if self.breaker is not None:
            data["breaker"] = self.breaker
        return data


@dataclass
class MonitorContext:
    name: str
    config: Config
    publisher: Publisher
    checkpoints: CheckpointStore
    status: MonitorStatus = field(default_factory=MonitorStatus)
    one_shot: bool = False
    log: Any = None
    on_level_ready: Callable[[str], None] | None = None
    """Set by the service: called by :meth:`level_ready` (it reconciles then)."""
    _drops_seen: int = 0
    sources: SourceIndexes | None = None
    """The source indexes shared by the monitors of the service (a private registry when
    none is given: unit tests of one monitor)."""

    def __post_init__(self) -> None:
        if self.sources is None:
            self.sources = SourceIndexes(self.checkpoints, one_shot=self.one_shot)
        if self.log is None:
            self.log = structlog.get_logger("kloros_stream.monitor").bind(monitor=self.name)

    @property
    def section(self) -> MonitorConfig:
        return self.config.monitors.get(self.name)

    def touch(self, when: float | None = None) -> None:
        """Record that a source event arrived (``last_event_at`` in /health): the latest
        time the monitor saw its source produce something, whether or not it was a gap."""
        when = time.time() if when is None else when
        last = self.status.last_event_at
        self.status.last_event_at = when if last is None else max(last, when)

    async def delivered(self) -> bool:
        """Return once every signal this monitor published so far was taken by the
        consumer and written to the feed, or dropped by a full bus. True if none of them
        was dropped since the previous call. Save a checkpoint that claims signals only
        after this. A publisher without acknowledgement (a scan's list) returns at once."""
        wait = getattr(self.publisher, "delivered_all", None)
        if wait is None:
            return True
        await wait(self.name)
        dropped = self.publisher.dropped.get(self.name, 0)  # type: ignore[attr-defined]
        clean, self._drops_seen = dropped == self._drops_seen, dropped
        return clean

    async def room(self) -> None:
        """Return once the bus is at most half full: call before each part of a burst, so
        a file source reads on only as fast as the consumer writes (backpressure)."""
        wait = getattr(self.publisher, "room", None)
        if wait is not None:
            await wait()

    def level_ready(self) -> None:
        """The initial scan is done and :meth:`Monitor.level` tells the gaps open now:
        the service reconciles the feed with it."""
        if self.on_level_ready is not None and not self.one_shot:
            self.on_level_ready(self.name)

    def gap(
        self,
        *,
        gap_type: str,
        gap_name: str,
        gap_category: str,
        gap_reason: str,
        ecosystem: str,
        observed_at: float | None = None,
        intensity: float = 1.0,
        **facts: Any,
    ) -> None:
        """Publish a CAPABILITY_GAP signal; extra keyword arguments become facts."""
        self._publish(
            CAPABILITY_GAP,
            ecosystem,
            observed_at,
            intensity,
            {
                "gap_type": gap_type,
                "gap_name": gap_name,
                "gap_category": gap_category,
                "gap_reason": gap_reason,
                **facts,
            },
        )

    def resolve(
        self,
        *,
        gap_type: str,
        gap_name: str,
        ecosystem: str,
        gap_category: str = "",
        gap_reason: str = "",
        observed_at: float | None = None,
        **facts: Any,
    ) -> None:
        """Publish CAPABILITY_GAP_RESOLVED for a gap that went away."""
        self._publish(
            CAPABILITY_GAP_RESOLVED,
            ecosystem,
            observed_at,
            1.0,
            {
                "gap_type": gap_type,
                "gap_name": gap_name,
                "gap_category": gap_category,
                "gap_reason": gap_reason or "the gap went away",
                **facts,
            },
        )

    def _publish(
        self,
        signal: str,
        ecosystem: str,
        observed_at: float | None,
        intensity: float,
        facts: dict[str, Any],
    ) -> None:
        now = time.time()
        facts = clean_facts(facts)
        self.publisher.publish(
            Signal(
                signal=signal,  # type: ignore[arg-type]
                ecosystem=ecosystem,
                intensity=intensity,
                facts=facts,
                incident_id=f"{facts['gap_type']}:{facts.get('fingerprint') or facts['gap_name']}",
                ts=now,
                monitor=self.name,
                observed_at=observed_at if observed_at is not None else now,
            )
        )
        self.status.signals += 1
        self.touch(observed_at if observed_at is not None else now)


C = TypeVar("C", bound=MonitorConfig)

MAX_WATCH_ERRORS = 20


class Monitor(ABC, Generic[C]):
    """Base class of the nine monitors (and of plugin monitors).

    ``config_model`` is the pydantic model of the monitor's ``[monitors.<name>]`` section;
    ``self.cfg`` is that section, typed. ``reads`` names the other settings the monitor
    reads (``"integration"`` for a whole section, ``"integration.roots"`` for one key):
    declared here once, it decides which monitors a reload restarts.
    """

    name: ClassVar[str]
    ecosystem: ClassVar[str]
    config_model: ClassVar[type[MonitorConfig]] = MonitorConfig
    reads: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: MonitorContext) -> None:
        self.ctx = ctx
        self.log = ctx.log
        section = ctx.section
        if not isinstance(section, self.config_model):
            raise TypeError(f"[monitors.{ctx.name}] is a {type(section).__name__}, "
                            f"{type(self).__name__} needs {self.config_model.__name__}")
        self.cfg: C = cast(C, section)

    def watch_error(self, message: str) -> None:
        """A watcher could not watch something (inotify limit, unreadable directory): named
        in /health (``details.watch_errors``, bounded) and counted (``watch_errors``)."""
        self.ctx.status.count("watch_errors")
        errors = self.ctx.status.details.setdefault("watch_errors", [])
        if message not in errors and len(errors) < MAX_WATCH_ERRORS:
            errors.append(message)

    event_gap_types: ClassVar[frozenset[str]] = frozenset()
    """Gap types that are events (exceptions): re-announced from the level when their
    question is missing, never resolved because the level lacks them."""

    @abstractmethod
    async def run(self) -> None:
        """Initial scan, then (unless ``ctx.one_shot``) follow events until cancelled."""

    def level(self) -> set[GapKey] | None:
        """The gaps open now, or None if this monitor keeps no level (then nothing is
        reconciled for it). Asked only after :meth:`MonitorContext.level_ready`. By
        default: the open gaps of the monitor's ``ledger`` (a GapLedger), if it has one."""
        ledger = getattr(self, "ledger", None)
        return ledger.level() if ledger is not None else None

    def reannounce(self, keys: Iterable[GapKey]) -> int:
        """Publish these open gaps of :meth:`level` again, with their current facts (their
        questions are missing or resolved). Returns how many were published."""
        ledger = getattr(self, "ledger", None)
        return ledger.reannounce(keys) if ledger is not None else 0
