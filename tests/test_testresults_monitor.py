"""TestResultsMonitor on a real results directory with real inotify and real pytest runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from kloros_stream.checkpoint import read_only_store
from kloros_stream.monitors import testresults
from kloros_stream.monitors.testresults import TestResultsMonitor
from kloros_stream.sources.watcher import FileEvent, FileEventKind
from tests.support.fakes import ListPublisher, make_context, running_monitor
from tests.support.inputs import json_report, write_atomic
from tests.support.pytest_runs import run_pytest
from tests.support.scripted import wait_until

CONFIG = {"monitors": {"test": {"results_dir": "results"}}}


def running(
    tmp_path: Path, publisher: ListPublisher | None = None
) -> contextlib.AbstractAsyncContextManager[tuple[TestResultsMonitor, ListPublisher]]:
    return running_monitor(TestResultsMonitor, tmp_path, CONFIG, publisher=publisher)


def names(signals: list[Any]) -> list[str]:
    return [s.gap_name for s in signals]


async def test_failures_are_gaps_and_a_newer_pass_resolves(tmp_path: Path) -> None:
    results = tmp_path / "results"
    async with running(tmp_path) as (monitor, pub):
        await asyncio.sleep(0.1)
        write_atomic(
            results / "r1.json",
            json_report(
                100,
                ("tests/test_c.py",),
                tests_a__test_x="failed",
                tests_a__test_y="passed",
                tests_a__test_z="error",
                tests_a__test_s="skipped",
            ),
        )
        await pub.wait_for(lambda s: len(s) == 3)
        assert sorted(names(pub.gaps("test_failure"))) == [
            "tests/test_c.py",
            "tests_a::test_x",
            "tests_a::test_z",
        ]
        x = next(s for s in pub.gaps() if s.gap_name == "tests_a::test_x")
        assert x.ecosystem == "testing" and x.monitor == "test"
        assert x.facts["error"] == "AssertionError: tests_a__test_x broke"
        assert x.facts["duration"] == 0.26 and x.facts["report"] == "r1.json"
        assert x.facts["outcome"] == "failed" and x.facts["gap_category"] == "quality"
        c = next(s for s in pub.gaps() if s.gap_name == "tests/test_c.py")
        assert c.facts["kind"] == "collection" and c.facts["error"] == "ImportError: nope"
        # A later run, written in place: x passes, z still errors, c collects again.
        (results / "r2.json").write_bytes(
            json_report(
                200,
                tests_a__test_x="passed",
                tests_a__test_z="error",
                **{"tests/test_c.py__test_k": "passed"},
            )
        )
        await pub.wait_for(lambda s: len(pub.resolutions()) == 2)
        assert sorted(names(pub.resolutions())) == ["tests/test_c.py", "tests_a::test_x"]
        assert monitor.ctx.status.details["open_failures"] == 1


async def test_an_older_report_never_overrides_a_newer_one(tmp_path: Path) -> None:
    results = tmp_path / "results"
    async with running(tmp_path) as (monitor, pub):
        write_atomic(results / "new.json", json_report(200, m__t="passed"))
        await wait_until(lambda: "new.json" in monitor.processed)
        write_atomic(results / "old.json", json_report(100, m__t="failed"))
        await wait_until(lambda: "old.json" in monitor.processed)
        assert pub.signals == []
        write_atomic(results / "newer.json", json_report(300, m__t="failed"))
        await pub.wait_for(lambda s: len(s) == 1)
        assert pub.gaps()[0].facts["report"] == "newer.json"


async def test_half_written_and_corrupt_reports_are_retried(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    data = json_report(100, m__t="failed")
    async with running(tmp_path) as (monitor, pub):
        with (results / "r.json").open("wb") as fh:  # a writer that closes half-way
            fh.write(data[: len(data) // 2])
        await wait_until(lambda: monitor.counts["incomplete"] >= 1)
        with (results / "r.json").open("ab") as fh:
            fh.write(data[len(data) // 2 :])
        await pub.wait_for(lambda s: len(s) == 1)
        # Binary garbage and a foreign JSON file: logged and skipped, then fixed.
        (results / "junk.xml").write_bytes(os.urandom(4096).replace(b"<", b"x"))
        (results / "other.json").write_bytes(b'{"not": "a report"}')
        await wait_until(lambda: monitor.counts["invalid"] >= 2)
        (results / "junk.xml").write_bytes(
            b'<testsuite><testcase classname="pkg.test_j" name="t"><error message="e"/>'
            b"</testcase></testsuite>"
        )
        await pub.wait_for(lambda s: len(s) == 2)
        assert pub.gaps()[-1].gap_name == "pkg/test_j.py::t"
        assert pub.gaps()[-1].facts["outcome"] == "error"


async def test_real_pytest_junit_report_in_a_new_subdirectory(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "test_sample.py").write_text(
        "def test_good():\n    assert 1\n\ndef test_bad():\n    assert 1 + 1 == 3, 'arithmetic'\n"
    )
    report = tmp_path / "results" / "ci" / "run-1" / "junit.xml"
    async with running(tmp_path) as (_, pub):
        await asyncio.sleep(0.1)
        await asyncio.to_thread(
            run_pytest, proj, f"--junitxml={report}", "test_sample.py", timeout=120
        )
        await pub.wait_for(lambda s: len(s) >= 1, timeout=15)
        assert names(pub.gaps()) == ["test_sample.py::test_bad"]
        assert "arithmetic" in pub.gaps()[0].facts["error"]
        assert pub.gaps()[0].facts["report"] == "ci/run-1/junit.xml"


async def test_restart_announces_nothing_and_a_later_pass_resolves(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_atomic(results / "r1.json", json_report(100, m__a="failed", m__b="failed"))
    async with running(tmp_path) as (_, pub):
        await pub.wait_for(lambda s: len(s) == 2)
    pub2 = ListPublisher()
    async with running(tmp_path, publisher=pub2) as (monitor, _):
        await wait_until(lambda: len(monitor.book.open) == 2)  # restored from the checkpoint
        write_atomic(results / "r2.json", json_report(200, m__a="passed"))
        await pub2.wait_for(lambda s: len(s) == 1)
        assert names(pub2.resolutions()) == ["m::a"]  # and r1 was not re-announced
        assert pub2.gaps() == []


async def test_reports_present_at_start_are_applied_oldest_first(tmp_path: Path) -> None:
    results = tmp_path / "results"
    junit = b'<testsuite><testcase classname="m" name="t"%s</testcase></testsuite>'
    write_atomic(results / "b-old.xml", junit % b'><failure message="f"/>')
    write_atomic(results / "a-new.xml", junit % b">")
    os.utime(results / "b-old.xml", (1000, 1000))
    os.utime(results / "a-new.xml", (2000, 2000))
    async with running(tmp_path) as (monitor, pub):
        await pub.wait_for(lambda s: len(s) == 2)
        assert [(s.signal, s.gap_name) for s in pub.signals] == [
            ("CAPABILITY_GAP", "m.py::t"),
            ("CAPABILITY_GAP_RESOLVED", "m.py::t"),
        ]
        assert not monitor.book.open
    # The scan command sees the same directory as "nothing open".
    ctx, scan_pub = make_context("test", tmp_path, CONFIG, one_shot=True)
    ctx.checkpoints = read_only_store()
    await asyncio.wait_for(TestResultsMonitor(ctx).run(), 10)
    assert scan_pub.signals == []


async def test_one_shot_scan_publishes_current_failures(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_atomic(results / "x" / "r1.json", json_report(100, m__a="failed", m__b="failed"))
    write_atomic(results / "x" / "r2.json", json_report(200, m__a="passed"))
    ctx, pub = make_context("test", tmp_path, CONFIG, one_shot=True)
    ctx.checkpoints = read_only_store()
    await asyncio.wait_for(TestResultsMonitor(ctx).run(), 10)
    assert names(pub.signals) == ["m::b"]
    assert pub.signals[0].facts["report"] == "x/r1.json"


async def test_missing_results_dir_is_waited_for(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, pub):
        await asyncio.sleep(0.2)
        write_atomic(tmp_path / "results" / "deep" / "r.json", json_report(1, m__a="failed"))
        await pub.wait_for(lambda s: len(s) == 1)


async def test_rescan_after_overflow_reannounces_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_atomic(results / "r1.json", json_report(100, m__a="failed"))
    async with running(tmp_path) as (monitor, pub):
        await pub.wait_for(lambda s: len(s) == 1)
        # What the watcher emits after IN_Q_OVERFLOW: EXISTING for every file, again.
        for _ in range(3):
            await monitor._on_event(FileEvent(FileEventKind.EXISTING, results / "r1.json", 1.0))
        # A report that changed while events were lost is picked up by the rescan.
        (results / "r1.json").write_bytes(json_report(300, m__a="passed"))
        await monitor._on_event(FileEvent(FileEventKind.EXISTING, results / "r1.json", 2.0))
        await pub.wait_for(lambda s: len(s) == 2)
        assert [s.signal for s in pub.signals] == ["CAPABILITY_GAP", "CAPABILITY_GAP_RESOLVED"]


async def test_many_reports_are_bounded_and_not_reparsed_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(testresults, "MAX_PROCESSED", 3)
    results = tmp_path / "results"
    for i in range(8):
        write_atomic(results / f"r{i}.json", json_report(100 + i, **{f"m__t{i}": "failed"}))
        os.utime(results / f"r{i}.json", (1000 + i, 1000 + i))
    async with running(tmp_path) as (monitor, pub):
        await pub.wait_for(lambda s: len(s) == 8)
        await wait_until(lambda: monitor.horizon_ns == 1004 * 10**9)
        assert len(monitor.processed) == 3
    pub2 = ListPublisher()
    async with running(tmp_path, publisher=pub2) as (monitor, _):
        write_atomic(results / "late.json", json_report(500, m__t0="passed"))
        await pub2.wait_for(lambda s: len(s) == 1)
        assert names(pub2.resolutions()) == ["m::t0"]  # and none of r0..r7 re-announced
        assert monitor.counts["parsed"] == 1
