"""``todo``: a ``todo_marker`` gap for each text file under ``paths`` that holds marker lines.

A plugin monitor is a :class:`~kloros_stream.monitors.base.Monitor` subclass registered
under the entry point group ``kloros_stream.monitors``; its ``config_model`` validates its
``[monitors.todo]`` section. This one follows its directories with the service's own
recursive watcher, keeps its open gaps in a :class:`~kloros_stream.monitors.ledger.GapLedger`
(a restart announces nothing again) and counts what it does (``/metrics``).
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from kloros_stream.config import MonitorConfig
from kloros_stream.monitors.base import Monitor
from kloros_stream.monitors.ledger import GapLedger
from kloros_stream.sources.tree import TreeEvents, scan_once
from kloros_stream.sources.watcher import FileEvent, FileEventKind

GAP_TYPE = "todo_marker"
MAX_READ_BYTES = 1_048_576
MAX_LINES_IN_FACTS = 10


class TodoConfig(MonitorConfig):
    """``[monitors.todo]``."""

    paths: list[Path] = Field(default_factory=lambda: [Path("notes")])
    marker: str = Field(default="TODO", min_length=1)
    suffixes: list[str] = Field(default_factory=lambda: [".md", ".txt"])


def marker_lines(text: str, marker: str) -> list[str]:
    """The lines holding ``marker`` (pure)."""
    return [line.strip() for line in text.splitlines() if marker in line]


class TodoMonitor(Monitor[TodoConfig]):
    """Text files with TODO markers."""

    name = "todo"
    ecosystem = "notes"
    config_model = TodoConfig

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self.ledger = GapLedger(ctx, self.ecosystem)

    def _include(self, path: Path) -> bool:
        return path.suffix in self.cfg.suffixes

    def check(self, path: Path, observed_at: float | None) -> None:
        """(Re)judge one file: open, update or resolve its gap."""
        self.ctx.status.count("files_read")
        try:
            with open(path, "rb") as fh:
                text = fh.read(MAX_READ_BYTES).decode("utf-8", "replace")
        except OSError:
            text = ""
        lines = marker_lines(text, self.cfg.marker)
        if lines:
            self.ledger.set(
                GAP_TYPE, str(path), gap_category="notes", observed_at=observed_at,
                gap_reason=f"{path.name} has {len(lines)} '{self.cfg.marker}' line(s)",
                lines=lines[:MAX_LINES_IN_FACTS], count=len(lines),
            )
        else:
            self.ledger.clear(GAP_TYPE, str(path), observed_at=observed_at,
                              gap_reason=f"no '{self.cfg.marker}' left in {path.name}")
        self.ledger.save()

    def on_event(self, event: FileEvent) -> None:
        if event.kind is FileEventKind.MODIFIED:
            return  # CLOSED follows
        if event.kind is FileEventKind.MOVED and event.src is not None:
            self.ledger.clear(GAP_TYPE, str(event.src), gap_reason="the file moved",
                              observed_at=event.observed_at)
        if event.kind is FileEventKind.DELETED:
            self.ledger.clear(GAP_TYPE, str(event.path), gap_reason="the file is gone",
                              observed_at=event.observed_at)
            self.ledger.save()
            return
        self.check(event.path, event.observed_at)

    async def run(self) -> None:
        started = time.monotonic()
        roots = list(self.cfg.paths)
        include = lambda _root, path: self._include(path)  # noqa: E731
        try:
            if self.ctx.one_shot:
                async for _root, event in scan_once(roots, [], include):
                    self.check(event.path, event.observed_at)
                self.ledger.reconcile()
                return
            async with TreeEvents(roots, exclude=[], include=include,
                                  on_error=self.watch_error) as events:
                async for _root, event in events.initial():
                    self.check(event.path, event.observed_at)
                self.ledger.reconcile()
                self.ctx.status.details["initial_scan_s"] = round(time.monotonic() - started, 3)
                async for _root, event in events.live():
                    self.ctx.touch(event.observed_at)
                    self.on_event(event)
        finally:
            self.ledger.flush()
