"""Open test failures across reports: which nodeids fail now, and what changed.

Pure: parsed reports (:mod:`.test_reports`) in, changes out; the report's time is passed
in. Each failure carries its cause (:mod:`.test_storms`) so storms can be grouped.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .test_reports import ParsedReport
from .test_storms import Cause, FailureDetail

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class FailureChange:
    """A gap to publish (``opened``) or resolve, for one nodeid."""

    opened: bool
    nodeid: str
    facts: dict[str, Any]


class FailureBook:
    """Open test failures per nodeid, fed report by report in any order.

    Every nodeid remembers the time of the latest report that gave it a verdict (failing or
    passing; ``skipped`` gives none), so an older report never overrides a newer one, and
    the same run seen twice (another file, a rename, a re-parse after a crash) changes
    nothing. Open failures are bounded by ``max_open`` (oldest dropped) and persisted;
    verdict times are bounded by ``max_tracked`` and rebuilt from the open failures.
    """

    def __init__(self, max_open: int = 5_000, max_tracked: int = 50_000) -> None:
        self.max_open = max_open
        self.max_tracked = max_tracked
        self.open: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.dropped = 0
        self._verdict_at: OrderedDict[str, float] = OrderedDict()

    def apply(self, report: ParsedReport, at: float, source: str) -> list[FailureChange]:
        """Account one report made at ``at`` (epoch seconds), named ``source``."""
        changes: list[FailureChange] = []
        for case in report.cases:
            if case.failing:
                facts = {
                    "kind": "test",
                    "outcome": case.outcome,
                    "error": case.error,
                    "duration": case.duration,
                    **_cause_facts(case.cause, case.detail),
                }
                self._fail(case.nodeid, facts, at, source, changes)
            elif case.passing:
                self._pass(case.nodeid, case.outcome, at, source, changes)
        for err in report.collection_errors:
            facts = {
                "kind": "collection",
                "outcome": "error",
                "error": err.error,
                "duration": None,
                **_cause_facts(err.cause, err.detail),
            }
            self._fail(err.nodeid, facts, at, source, changes)
        for nodeid, entry in list(self.open.items()):
            if entry["kind"] == "collection" and nodeid in report.collected:
                self._pass(nodeid, "collected", at, source, changes)
        return changes

    def _fail(
        self,
        nodeid: str,
        facts: dict[str, Any],
        at: float,
        source: str,
        changes: list[FailureChange],
    ) -> None:
        last = self._verdict_at.get(nodeid)
        if last is not None and (at < last or (at == last and nodeid in self.open)):
            return
        self._seen(nodeid, at)
        entry = {**facts, "report": source, "at": at}
        self.open[nodeid] = entry
        self.open.move_to_end(nodeid)
        while len(self.open) > self.max_open:
            self.open.popitem(last=False)
            self.dropped += 1
        changes.append(FailureChange(True, nodeid, dict(entry)))

    def _pass(
        self, nodeid: str, outcome: str, at: float, source: str, changes: list[FailureChange]
    ) -> None:
        last = self._verdict_at.get(nodeid)
        if last is not None and at < last:
            return
        self._seen(nodeid, at)
        entry = self.open.pop(nodeid, None)
        if entry is not None:
            changes.append(
                FailureChange(
                    False,
                    nodeid,
                    {
                        "kind": entry["kind"],
                        "outcome": outcome,
                        "report": source,
                        "at": at,
                    },
                )
            )

    def _seen(self, nodeid: str, at: float) -> None:
        self._verdict_at[nodeid] = at
        self._verdict_at.move_to_end(nodeid)
        while len(self._verdict_at) > self.max_tracked:
            self._verdict_at.popitem(last=False)

    def to_json(self) -> dict[str, Any]:
        """What a restart needs: per open nodeid its kind, outcome, report and time."""
        keep = ("kind", "outcome", "report", "at", "cause", "cause_title")
        return {
            "version": STATE_VERSION,
            "open": [[k, {f: v.get(f) for f in keep}] for k, v in self.open.items()],
        }

    def load_json(self, data: Any) -> int:
        """Restore open failures from :meth:`to_json` output; malformed rows skipped."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return 0
        for row in data.get("open") or []:
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[1], dict)):
                continue
            nodeid, entry = str(row[0]), row[1]
            at = entry.get("at")
            if not isinstance(at, (int, float)) or entry.get("kind") not in ("test", "collection"):
                continue
            self.open[nodeid] = entry
            self._seen(nodeid, float(at))
        while len(self.open) > self.max_open:
            self.open.popitem(last=False)
        return len(self.open)


def _cause_facts(cause: Cause | None, detail: FailureDetail | None) -> dict[str, Any]:
    """A failure's cause and detail as facts (absent parts left out)."""
    out: dict[str, Any] = {}
    if cause is not None:
        out |= {"cause": cause.fingerprint, "cause_title": cause.title}
        if cause.location:
            out["crash_location"] = cause.location
    if detail is not None:
        if detail.statement:
            out["statement"] = detail.statement
        if detail.explanation:
            out["explanation"] = detail.explanation
    return out
