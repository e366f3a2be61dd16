"""The test monitor: pytest-json-report and JUnit XML reports in ``results_dir`` -> gaps.

A report is parsed when a writer is done with it: IN_CLOSE_WRITE or a rename into place,
and when it is first seen (present at start, in a new subdirectory, after an inotify
overflow). Each failed or errored test and each collection error is a ``test_failure``
gap named by its nodeid; a test passing in a newer report resolves it (report times are
compared, so an older report never overrides; see :class:`FailureBook`).

A half-written report (:class:`ReportIncomplete`) is left for its next write; a corrupt
one is logged and skipped until it changes. Which report files (mtime, size) were
processed and which failures are open is checkpointed, so a restart re-announces nothing
and a pass after the restart still resolves a failure opened before it.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..analysis.test_failures import FailureBook, FailureChange
from ..analysis.test_reports import (
    ParsedReport,
    ReportError,
    ReportIncomplete,
    parse_report,
)
from ..analysis.test_storms import MAX_GROUP_TESTS, GapPlan, PlannedGap
from ..config import TestMonitorConfig
from ..sources.watcher import FileEvent, FileEventKind, RecursiveWatcher
from .base import Monitor

REPORT_SUFFIXES = (".json", ".xml")
EXCLUDE = (".*", "__pycache__")
MAX_REPORT_BYTES = 256 * 1024 * 1024
INLINE_PARSE_BYTES = 256 * 1024
"""Reports up to this size are parsed on the event loop (about 2 ms); larger ones in a
worker thread, so a big report never stalls the other monitors."""
MAX_PROCESSED = 4096
"""Report files remembered as processed (least recently processed forgotten first). A
forgotten file's mtime raises the *horizon*: an unchanged report not newer than it is
taken as processed, so a directory of thousands of old reports is not re-parsed (and old
failures not re-announced) at every start. A file copied in later with an old mtime
preserved (``cp -p``) would be missed."""
CHECKPOINT = "reports"
_PARSE_ON = frozenset(
    {FileEventKind.EXISTING, FileEventKind.CREATED, FileEventKind.CLOSED, FileEventKind.MOVED}
)


def is_report(path: Path) -> bool:
    return path.suffix.lower() in REPORT_SUFFIXES and not path.name.startswith(".")


@dataclass(slots=True)
class _Read:
    """A report file read in a worker thread: its identity and what it parsed into."""

    mtime_ns: int
    size: int
    stable: bool
    """The file did not change while it was read."""
    result: ParsedReport | ReportError | None
    """None: the file is gone or too large."""


def _read_report(path: Path) -> _Read:
    try:
        before = os.stat(path)
        if before.st_size > MAX_REPORT_BYTES:
            return _Read(before.st_mtime_ns, before.st_size, True, None)
        data = path.read_bytes()
        after = os.stat(path)
    except OSError:
        return _Read(0, 0, False, None)
    stable = (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)
    try:
        result: ParsedReport | ReportError = parse_report(data, path.name)
    except ReportError as err:
        result = err
    return _Read(after.st_mtime_ns, after.st_size, stable, result)


class TestResultsMonitor(Monitor[TestMonitorConfig]):
    """Follows test reports under ``[monitors.test] results_dir``."""

    __test__ = False  # not a pytest test class
    name: ClassVar[str] = "test"
    ecosystem: ClassVar[str] = "testing"
    config_model = TestMonitorConfig

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        cfg = self.cfg
        self.root = Path(cfg.results_dir)
        self.book = FailureBook()
        self.plan = GapPlan(cfg.group_threshold)
        self.processed: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.horizon_ns = 0
        self.counts = {"parsed": 0, "incomplete": 0, "invalid": 0, "skipped_large": 0}
        self._quiet = ctx.one_shot

    async def run(self) -> None:
        self._load_state()
        if self.ctx.one_shot:
            await self._scan_existing()
            self._publish_open()
            return
        async with RecursiveWatcher(
            self.root, exclude=EXCLUDE, include=is_report, on_error=self._watch_error
        ) as watcher:
            await self._scan_existing()
            self.ctx.level_ready()
            async for event in watcher:
                await self._on_event(event)

    # -- events ---------------------------------------------------------------------------
    async def _on_event(self, event: FileEvent) -> None:
        if event.kind is FileEventKind.DELETED:
            self._forget(event.path)
            return
        if event.kind is FileEventKind.MOVED and event.src is not None:
            self._forget(event.src)
        if event.kind in _PARSE_ON:
            self.ctx.touch(event.observed_at)
            if await self._process(event.path, event.observed_at):
                await self._save_state()

    async def _scan_existing(self) -> None:
        """Reports already present, oldest first (the watcher's EXISTING then skip them)."""
        paths = await asyncio.to_thread(self._list_reports)
        changed = False
        try:
            for path in paths:
                changed |= await self._process(path, None)
        finally:
            if changed:
                await self._save_state()

    def _list_reports(self) -> list[Path]:
        found: list[tuple[int, str, Path]] = []
        for directory, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
            for name in files:
                path = Path(directory, name)
                if is_report(path):
                    try:
                        found.append((path.stat().st_mtime_ns, str(path), path))
                    except OSError:
                        continue
        return [p for _, _, p in sorted(found)]

    async def _process(self, path: Path, observed_at: float | None) -> bool:
        """Parse ``path`` unless already processed as is; True if the state changed."""
        key = self._key(path)
        try:
            st = os.stat(path)
        except OSError:
            return False
        seen = self.processed.get(key)
        if seen == (st.st_mtime_ns, st.st_size) or (
            seen is None and st.st_mtime_ns <= self.horizon_ns
        ):
            return False
        if st.st_size <= INLINE_PARSE_BYTES:
            read = _read_report(path)
        else:
            read = await asyncio.to_thread(_read_report, path)
        if read.result is None:
            if read.stable and read.size > MAX_REPORT_BYTES:
                self.counts["skipped_large"] += 1
                self.log.warning("test_report_too_large", path=str(path), bytes=read.size)
                self._remember(key, read)
                return True
            return False
        if isinstance(read.result, ReportIncomplete) or not read.stable:
            self.counts["incomplete"] += 1
            self.log.debug("test_report_incomplete", path=str(path), reason=str(read.result))
            return False
        if isinstance(read.result, ReportError):
            self.counts["invalid"] += 1
            self.log.warning("test_report_invalid", path=str(path), error=str(read.result))
            self._remember(key, read)
            return True
        report = read.result
        at = report.created if report.created is not None else read.mtime_ns / 1e9
        self.counts["parsed"] += 1
        changes = self.book.apply(report, at, key)
        self.log.info(
            "test_report_parsed",
            path=str(path),
            format=report.format,
            tests=len(report.cases),
            collection_errors=len(report.collection_errors),
            changes=len(changes),
        )
        self._remember(key, read)
        self._apply_plan(changes, key, at, observed_at)
        self._update_details()
        return True

    # -- publishing -----------------------------------------------------------------------
    def _apply_plan(
        self, changes: list[FailureChange], source: str, at: float, observed_at: float | None
    ) -> None:
        """Publish and resolve the gaps the open failures call for after one report."""
        touched = {c.nodeid for c in changes if c.opened}
        passed = {c.nodeid: c for c in changes if not c.opened}
        publish, resolve = self.plan.update(self.book.open, touched)
        if self._quiet:
            return
        for gap in resolve:
            self._resolve_gap(gap, passed, source, at, observed_at)
        for gap in publish:
            self._publish_gap(gap, observed_at)

    def _publish_gap(self, gap: PlannedGap, observed_at: float | None) -> None:
        entries = [self.book.open[n] for n in gap.tests if n in self.book.open]
        if not entries:
            return
        first = entries[0]
        facts = {k: v for k, v in first.items() if k != "at"}
        facts["report_time"] = max(e["at"] for e in entries)
        if gap.fingerprint is not None:
            facts |= {
                "kind": "group",
                "member_kinds": sorted({e["kind"] for e in entries}),
                "fingerprint": gap.fingerprint,
                "count": len(gap.tests),
                "tests": list(gap.tests[:MAX_GROUP_TESTS]),
                "example_test": gap.tests[0],
            }
            facts.pop("duration", None)
        self.ctx.gap(
            gap_type="test_failure",
            gap_name=gap.name,
            gap_category="quality",
            gap_reason=_reason(facts),
            ecosystem=self.ecosystem,
            observed_at=observed_at,
            **facts,
        )

    def _resolve_gap(
        self,
        gap: PlannedGap,
        passed: dict[str, FailureChange],
        source: str,
        at: float,
        observed_at: float | None,
    ) -> None:
        if gap.fingerprint is not None:
            facts: dict[str, Any] = {
                "kind": "group", "outcome": "passed", "fingerprint": gap.fingerprint,
                "count": len(gap.tests), "tests": list(gap.tests[:MAX_GROUP_TESTS]),
            }
            reason = f"all {len(gap.tests)} tests of the group pass or fail otherwise now"
        elif gap.name in passed:
            facts = {k: v for k, v in passed[gap.name].facts.items() if k != "at"}
            reason = f"{facts['outcome']} in a newer report ({facts['report']})"
        else:
            entry = self.book.open.get(gap.name, {})
            facts = {"kind": entry.get("kind", "test"), "outcome": entry.get("outcome", "")}
            group = self.plan.published.get(f"group:{entry.get('cause')}")
            reason = (
                f"now one of the {len(group.tests)} tests of '{group.name}'"
                if group is not None else "no longer failing on its own"
            )
            facts["grouped_into"] = group.name if group is not None else None
        facts |= {"report": source, "report_time": at}
        self.ctx.resolve(
            gap_type="test_failure",
            gap_name=gap.name,
            gap_category="quality",
            gap_reason=reason,
            ecosystem=self.ecosystem,
            observed_at=observed_at,
            **facts,
        )

    def level(self) -> set[tuple[str, str]]:
        """The test_failure gaps published and open now (single tests and groups)."""
        return {("test_failure", gap.name) for gap in self.plan.published.values()}

    def reannounce(self, keys: Iterable[tuple[str, str]]) -> int:
        names = {name for _, name in keys}
        gaps = [g for g in self.plan.published.values() if g.name in names]
        for gap in gaps:
            self._publish_gap(gap, None)
        return len(gaps)

    def _publish_open(self) -> None:
        for gap in self.plan.published.values():
            self._publish_gap(gap, None)

    def _watch_error(self, message: str) -> None:
        """The inotify watch limit was hit: say so in /health (the watches held are kept)."""
        self.ctx.status.details["watch_error"] = message
        self.ctx.status.last_error = message

    # -- state ----------------------------------------------------------------------------
    def _key(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def _remember(self, key: str, read: _Read) -> None:
        self.processed[key] = (read.mtime_ns, read.size)
        self.processed.move_to_end(key)
        while len(self.processed) > MAX_PROCESSED:
            _, (mtime_ns, _) = self.processed.popitem(last=False)
            self.horizon_ns = max(self.horizon_ns, mtime_ns)

    def _forget(self, path: Path) -> None:
        self.processed.pop(self._key(path), None)

    def _load_state(self) -> None:
        data = self.ctx.checkpoints.load(CHECKPOINT)
        if not isinstance(data, dict):
            return
        self.book.load_json(data.get("book"))
        self.plan.load_json(data.get("published"), self.book.open)
        horizon = data.get("horizon_ns")
        self.horizon_ns = horizon if isinstance(horizon, int) else 0
        for row in data.get("processed") or []:
            if isinstance(row, list) and len(row) == 3:
                key, mtime_ns, size = row
                if isinstance(mtime_ns, int) and isinstance(size, int):
                    self.processed[str(key)] = (mtime_ns, size)
        self.log.info(
            "test_state_loaded",
            open_failures=len(self.book.open),
            processed_reports=len(self.processed),
        )
        self._update_details()

    async def _save_state(self) -> None:
        """Once our signals left the bus; saved even when cancelled while waiting."""
        if self.ctx.one_shot:
            return
        try:
            await self.ctx.delivered()
        finally:
            data = {
                "book": self.book.to_json(),
                "processed": [[k, m, s] for k, (m, s) in self.processed.items()],
                "horizon_ns": self.horizon_ns,
                "published": self.plan.to_json(),
            }
            self.ctx.checkpoints.save(CHECKPOINT, data)

    def _update_details(self) -> None:
        groups = sum(1 for g in self.plan.published.values() if g.fingerprint)
        self.ctx.status.details.update(
            reports=dict(self.counts), open_failures=len(self.book.open), open_groups=groups
        )


def _reason(facts: dict[str, Any]) -> str:
    if facts["kind"] == "group":
        return f"{facts['count']} tests fail with one cause"
    if facts["kind"] == "collection":
        return "collection error: the tests in it cannot run"
    if facts["outcome"] == "error":
        return "test errored (setup or teardown failed)"
    return "test failed"
