"""ScanProgress: done/total and a rate handed to its publisher, logs at most every N s."""

from __future__ import annotations

from typing import Any

import structlog.testing

from kloros_stream.progress import ScanProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_published_and_logged_at_most_every_interval() -> None:
    clock, published = Clock(), []
    log = structlog.get_logger("t")
    progress = ScanProgress(published.append, log, log_every_s=5.0, clock=clock)
    with structlog.testing.capture_logs() as logs:
        progress.start(1000)
        for _ in range(10):  # 100 files per second for 10 s
            clock.now += 1.0
            progress.advance(100)
        progress.finish()
    assert published[0] == {"phase": "initial_scan", "what": "files", "done": 0,
                            "total": 1000, "rate_per_s": 0.0}
    assert published[-1] == {"phase": "done", "what": "files", "done": 1000, "total": 1000,
                             "rate_per_s": 100.0}
    events: list[dict[str, Any]] = [e for e in logs if e["event"] == "scan_progress"]
    assert [e["done"] for e in events] == [500, 1000]  # at 5 s and at 10 s, not each step
    assert events[0]["rate_per_s"] == 100.0 and events[0]["total"] == 1000
    finished = [e for e in logs if e["event"] == "scan_finished"]
    assert finished == [{"event": "scan_finished", "what": "files", "done": 1000,
                         "duration_s": 10.0, "rate_per_s": 100.0, "log_level": "info"}]


def test_more_work_than_counted_grows_the_total() -> None:
    published: list[dict[str, Any]] = []
    progress = ScanProgress(published.append, structlog.get_logger("t"), clock=Clock())
    progress.start(2)
    progress.advance(3)
    assert published[-1]["total"] == 3
    progress.grow(4)
    assert published[-1]["total"] == 7
