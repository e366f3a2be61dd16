"""Level-triggered reconciliation: a monitor's open gaps (its level) against the feed.

Monitors announce edges (opened, resolved); an edge lost on the way (dropped by a full
bus, cut from a torn or deleted feed, or announced just before a kill -9 that kept the
checkpoint from recording it) would leave the feed wrong for good. So the service compares
what a monitor sees open *now* (:meth:`Monitor.level`) with the open questions of that
monitor, and repairs the difference: a gap open in the level whose question is missing or
resolved is announced again (by the monitor, with its current facts); an open question the
level lacks is resolved (unless its gap type is an event, like an exception).

When: after a monitor's initial scan (start-up, restart: the monitor calls
``ctx.level_ready()``), after any of its signals was dropped, and after a feed repair.
:func:`plan` is pure; :class:`Reconciler` runs the repairs in one task of the service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from .bus import SignalBus
from .core.store import QuestionEntry
from .escape import clean
from .heap import HeapSettler
from .models import CAPABILITY_GAP_RESOLVED, CuriosityQuestion, QuestionStatus, Signal
from .monitors.base import GapKey, Monitor

if TYPE_CHECKING:
    from .core.curiosity import CuriosityCore

log = structlog.get_logger("kloros_stream.reconcile")

DROP_SETTLE_S = 1.0
"""After a drop, wait this long without another before reconciling (floods coalesce)."""
RESOLVED_REASON = "no longer present (reconciled with the monitor's open gaps)"


@dataclass
class Plan:
    reannounce: list[GapKey] = field(default_factory=list)
    """Level keys (as the monitor names them) whose question is missing or resolved."""
    resolve: list[QuestionEntry] = field(default_factory=list)
    """Open questions of the monitor that its level lacks."""


def plan(level: Iterable[GapKey], open_entries: Iterable[QuestionEntry],
         event_gap_types: frozenset[str] = frozenset()) -> Plan:
    """What to repair so the open questions of a monitor (``open_entries``) equal its
    level."""
    mine = {(e.gap_type, e.gap_name): e for e in open_entries
            if e.status != QuestionStatus.RESOLVED.value}
    out = Plan()
    seen: set[GapKey] = set()
    for gap_type, gap_name in level:
        key = (gap_type, clean(gap_name))  # names are published cleaned
        seen.add(key)
        if key not in mine:
            out.reannounce.append((gap_type, gap_name))
    for key, entry in mine.items():
        if key not in seen and key[0] not in event_gap_types:
            out.resolve.append(entry)
    return out


def resolution(monitor: str, entry: QuestionEntry, q: CuriosityQuestion | None) -> Signal:
    """The CAPABILITY_GAP_RESOLVED the monitor would have sent for ``entry`` (``q``: the
    whole question, for its category, ecosystem and fingerprint, if it can be read)."""
    meta = q.metadata if q is not None else {}
    facts: dict[str, Any] = {
        "gap_type": entry.gap_type,
        "gap_name": entry.gap_name,
        "gap_category": str(meta.get("gap_category") or ""),
        "gap_reason": RESOLVED_REASON,
        "reconciled": True,
    }
    fingerprint = (meta.get("facts") or {}).get("fingerprint")
    if fingerprint:
        facts["fingerprint"] = fingerprint
    incident = f"{facts['gap_type']}:{fingerprint or facts['gap_name']}"
    return Signal(signal=CAPABILITY_GAP_RESOLVED, ecosystem=str(meta.get("ecosystem") or ""),
                  facts=facts, incident_id=incident, monitor=monitor)


class Reconciler:
    """Runs reconciliations on request, one monitor at a time, in one task.

    ``monitors()`` gives the current monitor instance per name; a request for a monitor
    whose level is not ready (no ``level_ready`` since its last start) waits for it.
    """

    def __init__(self, bus: SignalBus[Signal], core: CuriosityCore,
                 monitors: Callable[[], Mapping[str, Monitor | None]]) -> None:
        self.bus = bus
        self.core = core
        self.monitors = monitors
        self.ready: dict[str, Monitor] = {}
        self._requests: dict[str, set[str]] = {}
        self._wake = asyncio.Event()
        self._drop_at = 0.0
        self.totals = {"runs": 0, "reannounced": 0, "resolved": 0}
        self.heap = HeapSettler()
        bus.drop_listeners.append(self._dropped)

    def level_ready(self, name: str) -> None:
        self.heap.level_built()  # what the scan built is frozen; what it freed, returned
        monitor = self.monitors().get(name)
        if monitor is not None:
            self.ready[name] = monitor
            self.request(name, "initial_scan")

    def request(self, name: str, reason: str) -> None:
        self._requests.setdefault(name, set()).add(reason)
        self._wake.set()

    def request_all(self, reason: str) -> None:
        for name in self.ready:
            self.request(name, reason)

    def _dropped(self, monitor: str) -> None:
        self._drop_at = time.monotonic()
        if "bus_drop" not in self._requests.get(monitor, ()):
            self.request(monitor, "bus_drop")

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (wait := DROP_SETTLE_S - (time.monotonic() - self._drop_at)) > 0:
                await asyncio.sleep(wait)  # a flood: repair once it is over
            requests, self._requests = self._requests, {}
            for name, reasons in sorted(requests.items()):
                try:
                    await self.reconcile(name, reasons)
                except Exception:
                    log.exception("reconcile_failed", monitor=name)

    async def reconcile(self, name: str, reasons: Iterable[str] = ()) -> Plan | None:
        """Repair the feed for ``name``; None if its level is not known now."""
        monitor = self.ready.get(name)
        if monitor is None or self.monitors().get(name) is not monitor:
            return None
        await self.bus.room()
        await self.bus.delivered_all(name)  # its signals so far are in the core
        if self.monitors().get(name) is not monitor:
            return None
        level = monitor.level()
        if level is None:
            return None
        todo = plan(level, self.core.open_entries(name), monitor.event_gap_types)
        reannounced = resolved = 0
        part = max(1, self.bus.maxsize // 4)
        for start in range(0, max(len(todo.reannounce), len(todo.resolve)), part):
            await self.bus.room()  # repairs are paced like any burst: none is dropped
            if self.monitors().get(name) is not monitor:
                break
            # no await from here to the publish: the level is read again and only what
            # still holds is repaired (the monitor's own signals meanwhile come first)
            now = monitor.level() or set()
            again = [k for k in todo.reannounce[start:start + part] if k in now]
            reannounced += monitor.reannounce(again) if again else 0
            cleaned = {(t, clean(n)) for t, n in now}
            for entry in todo.resolve[start:start + part]:
                if (entry.gap_type, entry.gap_name) not in cleaned:
                    self.bus.publish(resolution(name, entry, self.core.get(entry.id)))
                    resolved += 1
        self.totals["runs"] += 1
        self.totals["reannounced"] += reannounced
        self.totals["resolved"] += resolved
        event = "reconciled" if reannounced or resolved else "reconciled_clean"
        (log.warning if event == "reconciled" else log.info)(
            event, monitor=name, reasons=sorted(reasons), level=len(level),
            reannounced=reannounced, resolved=resolved)
        return todo
