"""The exception monitor on a real namespaced systemd-journald (root only; skipped with the
reason otherwise; the `journald` fixture is in conftest.py) and through a real
``kloros-stream run``: a crashing service is one question per bug, a restart resumes at its
cursor, journalctl killed mid-stream, journalctl missing, a log file source."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from kloros_stream.monitors.exception import ExceptionMonitor
from tests.support.fakes import running_monitor
from tests.support.inputs import append_lines, traceback_lines
from tests.support.journald import NamespacedJournald, wait_until
from tests.support.scripted import wait_until as async_wait_until
from tests.support.service import ServiceProcess, questions_of, write_config

SERVICE = """
import json
def load(jobs, job_id):
    return jobs[job_id]
print("worker ready, 0 errors so far", flush=True)
load({}, "job-%d" % %(n)d)
"""


def crash(journald: NamespacedJournald, n: int, unit: str = "kloros-worker.service") -> int:
    return journald.run_service(SERVICE.replace("%(n)d", str(n)), identifier="worker", unit=unit)


@pytest.mark.journald
async def test_real_journald_service_crash(journald: NamespacedJournald, tmp_path: Path) -> None:
    data = {"monitors": {"exception": {"namespace": journald.namespace}}}
    async with running_monitor(ExceptionMonitor, tmp_path, data) as (monitor, pub):
        await async_wait_until(lambda: monitor.follower is not None and bool(monitor.follower.pid))
        pid = await asyncio.to_thread(crash, journald, 1)
        await asyncio.to_thread(
            journald.emit,
            ["<3>disk /dev/sdb failed", "<6>all good"],
            identifier="disk",
            unit="kloros-disk.service",
            level_prefix=True,
        )
        await asyncio.to_thread(
            journald.emit, ["boom"], identifier="other", unit="sshd.service", priority=2
        )
        await pub.wait_for(lambda s: len(s) >= 2, timeout=15)
        await asyncio.sleep(1.0)  # anything else would have arrived by now
    gaps = pub.gaps()
    assert sorted(s.gap_name for s in gaps) == ["KeyError: 'job-1'", "err: disk /dev/sdb failed"]
    tb = next(s for s in gaps if s.gap_name.startswith("KeyError")).facts
    assert tb["pid"] == pid and tb["unit"] == "kloros-worker.service"
    assert tb["identifier"] == "worker" and tb["complete"] is True
    assert tb["traceback"].startswith("Traceback (most recent call last):")


def e2e_config(tmp_path: Path, **section: Any) -> Path:
    return write_config(
        tmp_path, {"monitors": {"exception": section}, "feed": {"counter_flush_s": 0.2}}
    )


def exceptions(svc: ServiceProcess) -> list[dict[str, Any]]:
    return questions_of(list(svc.questions().values()), "exception")


def bug(q: dict[str, Any]) -> str:
    return re.sub(r"\d+", "N", q["metadata"]["gap_name"])


def journalctl_child(svc: ServiceProcess) -> psutil.Process | None:
    assert svc.proc is not None
    for child in psutil.Process(svc.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.name() == "journalctl" and "--follow" in child.cmdline():
                return child
    return None


@pytest.mark.e2e
@pytest.mark.journald
def test_e2e_one_question_per_bug(journald: NamespacedJournald, tmp_path: Path) -> None:
    path = e2e_config(tmp_path, namespace=journald.namespace)
    with ServiceProcess(path) as svc:
        crash(journald, 1)
        crash(journald, 2)
        journald.emit(
            ["error: 0 failures in the last hour"],
            identifier="worker",
            unit="kloros-worker.service",
        )
        feed = svc.wait_feed(
            lambda f: any(q["metadata"]["occurrences"] == 2 for q in questions_of(f, "exception")),
            timeout=20,
        )
        [q] = questions_of(feed, "exception")
        assert bug(q) == "KeyError: 'job-N'"  # the latest occurrence's name
        assert q["metadata"]["facts"]["unit"] == "kloros-worker.service"
        health = svc.health()["monitors"]["exception"]
        assert health["state"] == "running"
        assert health["counters"]["traceback_occurrences"] == 2


@pytest.mark.e2e
@pytest.mark.journald
def test_e2e_restart_with_cursor_neither_repeats_nor_skips(
    journald: NamespacedJournald, tmp_path: Path
) -> None:
    path = e2e_config(tmp_path, namespace=journald.namespace)
    with ServiceProcess(path) as svc:
        crash(journald, 1)
        svc.wait_feed(lambda f: len(questions_of(f, "exception")) == 1, timeout=20)
        assert svc.stop() == 0
        crash(journald, 2)  # while the service is down
        journald.emit(
            ["queue consumer died"], identifier="queue", priority=3, unit="kloros-queue.service"
        )
        svc.start()
        feed = svc.wait_feed(
            lambda f: (
                len(questions_of(f, "exception")) == 2
                and any(q["metadata"]["occurrences"] == 2 for q in questions_of(f, "exception"))
            ),
            timeout=20,
        )
        time.sleep(1.0)  # a replay of the first run's entries would have been counted now
        feed = exceptions(svc)
        counts = sorted((bug(q), q["metadata"]["occurrences"]) for q in feed)
        assert counts == [("KeyError: 'job-N'", 2), ("err: queue consumer died", 1)]


@pytest.mark.e2e
@pytest.mark.journald
def test_e2e_journalctl_killed_mid_stream(journald: NamespacedJournald, tmp_path: Path) -> None:
    path = e2e_config(tmp_path, namespace=journald.namespace)
    with ServiceProcess(path) as svc:
        crash(journald, 1)
        svc.wait_feed(lambda f: len(questions_of(f, "exception")) == 1, timeout=20)
        child = wait_until(lambda: journalctl_child(svc), what="journalctl child")
        child.send_signal(signal.SIGKILL)
        journald.emit(
            ["lost while down?"], identifier="queue", priority=3, unit="kloros-queue.service"
        )
        wait_until(
            lambda: (c := journalctl_child(svc)) is not None and c.pid != child.pid,
            timeout=15,
            what="journalctl restarted",
        )
        crash(journald, 2)
        svc.wait_feed(
            lambda f: (
                {(bug(q), q["metadata"]["occurrences"]) for q in questions_of(f, "exception")}
                == {("KeyError: 'job-N'", 2), ("err: lost while down?", 1)}
            ),
            timeout=20,
        )
        health = svc.health()["monitors"]["exception"]
        assert health["state"] == "running"
        assert health["counters"]["journalctl_restarts"] == 1


@pytest.mark.e2e
def test_e2e_missing_journalctl_is_unavailable_in_health(tmp_path: Path) -> None:
    path = e2e_config(tmp_path, journalctl=str(tmp_path / "no" / "journalctl"))
    with ServiceProcess(path) as svc:
        wait_until(
            lambda: svc.health()["monitors"]["exception"]["state"] == "unavailable",
            what="exception monitor unavailable",
        )
        status, body = svc.get("/health")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok"
        error = health["monitors"]["exception"]["last_error"]
        assert "No such file or directory" in error and "journalctl" in error


@pytest.mark.e2e
def test_e2e_log_file_source(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    append_lines(log, ["INFO starting"])
    path = e2e_config(tmp_path, journal=False, log_files=["worker.log"])
    with ServiceProcess(path) as svc:
        append_lines(log, traceback_lines("KeyError: 'job 1'"))
        append_lines(log, ["INFO error rate 0%", *traceback_lines("KeyError: 'job 2'", 77)])
        feed = svc.wait_feed(
            lambda f: any(q["metadata"]["occurrences"] == 2 for q in questions_of(f, "exception")),
            timeout=20,
        )
        [q] = questions_of(feed, "exception")
        assert q["metadata"]["facts"]["path"] == str(log)
