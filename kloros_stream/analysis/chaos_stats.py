"""Per-scenario self-healing statistics from chaos history entries.

Pure: entries in, transitions out; no I/O, no clock.

An entry (one JSON line of the chaos history) is normalised by :func:`normalize_entry`:

* ``healed``: the top-level boolean ``healed``, else KLoROS's ``outcome.healed``;
* scenario: ``scenario``, else ``spec_id`` (a non-empty string or a number);
* last error: ``error``, else ``outcome.error``, else ``outcome.reason`` (clipped);
* ``target`` and ``mode`` (KLoROS chaos specs) are kept when present.

Entries without a boolean healed flag or a scenario are not healing results and are
skipped. :class:`ChaosStats` keeps, per scenario, the totals, the failure count and the
last ``recovery_runs`` results. Scenarios with an open gap are the monitor's level and
are never evicted (a distinct failure is never forgotten unannounced); of the others at
most ``max_scenarios`` are kept (least recently seen evicted first). A failure opens the
scenario's gap (every failure is reported again with fresh totals); an open gap is
resolved once the window of the last ``recovery_runs`` results is full and its healing
rate is at least ``recovery_rate``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_ERROR_CHARS = 500
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ChaosEntry:
    scenario: str
    healed: bool
    error: str | None = None
    target: str | None = None
    mode: str | None = None


def normalize_entry(record: Any) -> ChaosEntry | None:
    """The healing result in ``record``, or None if it is not one (see module docstring)."""
    if not isinstance(record, dict):
        return None
    outcome = record.get("outcome")
    outcome = outcome if isinstance(outcome, dict) else {}
    healed = record.get("healed")
    if not isinstance(healed, bool):
        healed = outcome.get("healed")
    if not isinstance(healed, bool):
        return None
    scenario = _name(record.get("scenario")) or _name(record.get("spec_id"))
    if scenario is None:
        return None
    error = next(
        (e for e in (record.get("error"), outcome.get("error"), outcome.get("reason")) if e),
        None,
    )
    return ChaosEntry(
        scenario=scenario,
        healed=healed,
        error=_clip(str(error)) if error is not None else None,
        target=_name(record.get("target")),
        mode=_name(record.get("mode")),
    )


def _name(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


class Transition(StrEnum):
    FAILED = "failed"
    """A healing failure: publish (or refresh) the scenario's gap."""
    RECOVERED = "recovered"
    """The open gap's scenario heals again: publish its resolution."""


@dataclass(slots=True)
class ScenarioStats:
    total: int = 0
    failures: int = 0
    recent: deque[bool] = field(default_factory=deque)
    last_error: str | None = None
    target: str | None = None
    mode: str | None = None
    open: bool = False
    """A healing_failure gap is announced and not yet resolved."""

    @property
    def healing_rate(self) -> float:
        return (self.total - self.failures) / self.total if self.total else 1.0

    @property
    def recent_rate(self) -> float:
        return sum(self.recent) / len(self.recent) if self.recent else 1.0

    def facts(self) -> dict[str, Any]:
        """The scenario's numbers as gap facts."""
        return {
            "total": self.total,
            "failures": self.failures,
            "healing_rate": round(self.healing_rate, 4),
            "recent_runs": len(self.recent),
            "recent_healing_rate": round(self.recent_rate, 4),
            "last_error": self.last_error,
            **({"target": self.target} if self.target else {}),
            **({"mode": self.mode} if self.mode else {}),
        }


class ChaosStats:
    """Per-scenario statistics: open ones all kept, healthy ones bounded (LRU)."""

    def __init__(self, *, max_scenarios: int, recovery_runs: int, recovery_rate: float) -> None:
        self.max_scenarios = max_scenarios
        self.recovery_runs = recovery_runs
        self.recovery_rate = recovery_rate
        self.evicted = 0
        self._scenarios: OrderedDict[str, ScenarioStats] = OrderedDict()
        self._closed: OrderedDict[str, None] = OrderedDict()
        """Names of the scenarios without an open gap, least recently seen first."""

    def __len__(self) -> int:
        return len(self._scenarios)

    def get(self, scenario: str) -> ScenarioStats | None:
        return self._scenarios.get(scenario)

    def open_scenarios(self) -> list[str]:
        return [name for name, s in self._scenarios.items() if s.open]

    def observe(self, entry: ChaosEntry) -> Transition | None:
        """Account one healing result; the transition it causes, if any."""
        stats = self._touch(entry.scenario)
        stats.total += 1
        stats.recent.append(entry.healed)
        stats.target = entry.target or stats.target
        stats.mode = entry.mode or stats.mode
        if not entry.healed:
            stats.failures += 1
            stats.last_error = entry.error or stats.last_error
            stats.open = True
            self._closed.pop(entry.scenario, None)
            return Transition.FAILED
        if stats.open and self._recovered(stats):
            stats.open = False
            self._closed[entry.scenario] = None
            self._evict()
            return Transition.RECOVERED
        return None

    def _evict(self) -> None:
        while len(self._closed) > self.max_scenarios:
            name, _ = self._closed.popitem(last=False)
            del self._scenarios[name]
            self.evicted += 1

    def _recovered(self, stats: ScenarioStats) -> bool:
        return len(stats.recent) >= self.recovery_runs and stats.recent_rate >= self.recovery_rate

    def _touch(self, scenario: str) -> ScenarioStats:
        stats = self._scenarios.get(scenario)
        if stats is None:
            stats = ScenarioStats(recent=deque(maxlen=self.recovery_runs))
            self._scenarios[scenario] = stats
            self._closed[scenario] = None
            self._evict()
        else:
            self._scenarios.move_to_end(scenario)
            if scenario in self._closed:
                self._closed.move_to_end(scenario)
        return stats

    # -- persistence ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain data for a checkpoint (oldest scenario first)."""
        return {
            "version": STATE_VERSION,
            "evicted": self.evicted,
            "scenarios": [
                [
                    name,
                    s.total,
                    s.failures,
                    "".join("1" if h else "0" for h in s.recent),
                    s.last_error,
                    s.open,
                    s.target,
                    s.mode,
                ]
                for name, s in self._scenarios.items()
            ],
        }

    def load_json(self, data: Any) -> int:
        """Restore from :meth:`to_json` output; malformed rows are skipped. Rows loaded."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return 0
        loaded = 0
        for row in data.get("scenarios") or []:
            try:
                name, total, failures, recent, last_error, is_open, target, mode = row
                stats = ScenarioStats(
                    total=int(total),
                    failures=int(failures),
                    recent=deque((c == "1" for c in str(recent)), maxlen=self.recovery_runs),
                    last_error=last_error,
                    target=target,
                    mode=mode,
                    open=bool(is_open),
                )
            except (TypeError, ValueError):
                continue
            self._scenarios[str(name)] = stats
            self._scenarios.move_to_end(str(name))
            self._closed.pop(str(name), None)
            if not stats.open:
                self._closed[str(name)] = None
            loaded += 1
        self.evicted = int(data.get("evicted") or 0)
        self._evict()
        return loaded
