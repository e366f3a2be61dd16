"""Progress of long work (an initial scan of a large tree): done / total and a rate.

A :class:`ScanProgress` is advanced by whoever does the work; each change hands a small
dict to ``publish`` (the source index mirrors it into its subscribers' monitor status,
``/health`` shows it as ``monitors.<name>.progress``; ``scan`` drives a progress bar with
it) and it logs ``scan_progress`` at most every ``log_every_s`` seconds, then
``scan_finished`` once. No timer of its own: nothing happens unless work is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class ScanProgress:
    def __init__(self, publish: Callable[[dict[str, Any]], None], log: Any, *,
                 what: str = "files",
                 log_every_s: float = 5.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._publish_to = publish
        self._log = log
        self._what = what
        self._every = log_every_s
        self._clock = clock
        self._started = 0.0
        self._last_log = 0.0
        self.done = 0
        self.total = 0

    def start(self, total: int) -> None:
        """Work of ``total`` units begins (it may grow: :meth:`grow`)."""
        self._started = self._last_log = self._clock()
        self.done, self.total = 0, total
        self._publish("initial_scan")

    def grow(self, n: int) -> None:
        """More work was found than first counted (files created during the scan)."""
        self.total += n
        self._publish("initial_scan")

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.total = max(self.total, self.done)
        now = self._clock()
        self._publish("initial_scan")
        if now - self._last_log >= self._every:
            self._last_log = now
            self._log.info("scan_progress", what=self._what, done=self.done,
                           total=self.total, rate_per_s=self.rate(now))

    def finish(self) -> None:
        now = self._clock()
        self._publish("done")
        self._log.info("scan_finished", what=self._what, done=self.done,
                       duration_s=round(now - self._started, 3), rate_per_s=self.rate(now))

    def rate(self, now: float | None = None) -> float:
        elapsed = (self._clock() if now is None else now) - self._started
        return round(self.done / elapsed, 1) if elapsed > 0 else 0.0

    def _publish(self, phase: str) -> None:
        self._publish_to({"phase": phase, "what": self._what, "done": self.done,
                          "total": self.total, "rate_per_s": self.rate()})
