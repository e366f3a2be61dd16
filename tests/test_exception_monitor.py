"""ExceptionMonitor: what counts as an exception, fingerprints, cursor and replay safety,
unavailability, log files; then end to end through a real ``kloros-stream run`` on a real
namespaced journald (root only; skipped with the reason otherwise)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from kloros_stream.models import Signal
from kloros_stream.monitors.base import MonitorUnavailable
from kloros_stream.monitors.exception import ExceptionMonitor, FingerprintMemory
from tests.support.fakes import ListPublisher, make_context
from tests.support.journald import (
    NamespacedJournald,
    calls,
    scripted_journalctl,
    wait_until,
)
from tests.support.scripted import wait_until as async_wait_until
from tests.support.service import ServiceProcess, questions_of, write_config


# -- a journal as journalctl -o json prints it ----------------------------------------------
class Journal:
    """Builds journal entries with increasing cursors."""

    def __init__(self) -> None:
        self.n = 0
        self.entries: list[dict[str, Any]] = []

    def add(
        self,
        message: str,
        *,
        unit: str = "kloros-brain.service",
        pid: int = 100,
        ident: str = "brain",
        priority: int = 6,
        stream: str = "s1",
        **extra: Any,
    ) -> dict[str, Any]:
        self.n += 1
        e = {
            "__CURSOR": f"s=feed;i={self.n:x};b=b;m={self.n:x};t=1;x=2",
            "__REALTIME_TIMESTAMP": str(1_700_000_000_000_000 + self.n * 1000),
            "_SYSTEMD_UNIT": unit,
            "_PID": str(pid),
            "SYSLOG_IDENTIFIER": ident,
            "PRIORITY": str(priority),
            "_STREAM_ID": stream,
            "MESSAGE": message,
            **extra,
        }
        self.entries.append(e)
        return e

    def lines(self, messages: list[str], **kw: Any) -> list[dict[str, Any]]:
        return [self.add(m, **kw) for m in messages]

    @staticmethod
    def text(entries: list[dict[str, Any]]) -> str:
        return "".join(orjson.dumps(e).decode() + "\n" for e in entries)


def traceback_lines(
    exc: str = "KeyError: 'job 17'", line: int = 40, func: str = "dispatch"
) -> list[str]:
    return [
        "Traceback (most recent call last):",
        '  File "/srv/kloros/kloros/main.py", line 12, in <module>',
        "    run()",
        f'  File "/srv/kloros/kloros/scheduler.py", line {line}, in {func}',
        "    return jobs[job_id]",
        "           ~~~~^^^^^^^^",
        exc,
    ]


def config(jc: Path | str, **section: Any) -> dict[str, Any]:
    return {"monitors": {"exception": {"journalctl": str(jc), **section}}}


async def scan(tmp_path: Path, data: dict[str, Any]) -> tuple[list[Signal], Any]:
    ctx, pub = make_context("exception", tmp_path, data, one_shot=True)
    await asyncio.wait_for(ExceptionMonitor(ctx).run(), 30)
    return pub.gaps("exception"), ctx


@contextlib.asynccontextmanager
async def following(
    tmp_path: Path, data: dict[str, Any], publisher: ListPublisher | None = None
) -> AsyncIterator[tuple[ExceptionMonitor, ListPublisher]]:
    ctx, pub = make_context("exception", tmp_path, data, publisher=publisher)
    monitor = ExceptionMonitor(ctx)
    task = asyncio.create_task(monitor.run())
    try:
        yield monitor, pub
    finally:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def names(signals: list[Signal]) -> list[str]:
    return sorted(s.gap_name for s in signals)


# -- what counts ---------------------------------------------------------------------------
async def test_only_real_exceptions_count(tmp_path: Path) -> None:
    j = Journal()
    j.add("starting, error budget 0.1% (fine)")
    j.add("ValueError: this info line merely looks like one")
    a = traceback_lines()
    b = traceback_lines(
        "ConnectionResetError: [Errno 104] Connection reset by peer", 7, "read_frame"
    )
    for la, lb in zip(a, b, strict=True):  # two PIDs of one unit, interleaved
        j.add(la, pid=100)
        j.add(lb, pid=200, unit="kloros-voice.service", ident="voice")
    j.add("auth failure for root", unit="sshd.service", pid=300, ident="sshd", priority=3)
    j.add("database connection lost to 10.0.0.5:5432", pid=100, priority=3)
    j.add(
        json.dumps(
            {
                "event": "request failed",
                "level": "error",
                "exception": "\n".join(traceback_lines("ValueError: bad request 7")),
            }
        ),
        unit="kloros-api.service",
        pid=400,
        ident="api",
    )
    j.add(
        "\n".join(["job crashed", *traceback_lines("OSError: [Errno 28] disk full")]),
        unit="kloros-jobs.service",
        pid=500,
        ident="jobs",
        priority=3,
        stream="",
    )
    for line in traceback_lines("TimeoutError: no reply", 3, "poll"):  # stderr at err level
        j.add(line, unit="kloros-poll.service", pid=600, ident="poll", priority=3)
    j.add("poller restarted", unit="kloros-poll.service", pid=600, ident="poll", stream="s2")
    jc = scripted_journalctl(tmp_path, [{"stdout": j.text(j.entries)}])

    gaps, ctx = await scan(tmp_path, config(jc))

    assert names(gaps) == [
        "ConnectionResetError: [Errno 104] Connection reset by peer",
        "KeyError: 'job 17'",
        "OSError: [Errno 28] disk full",
        "TimeoutError: no reply",
        "ValueError: bad request 7",
        "err: database connection lost to 10.0.0.5:5432",
    ]
    by_name = {s.gap_name: s for s in gaps}
    key_error = by_name["KeyError: 'job 17'"].facts
    assert key_error["unit"] == "kloros-brain.service" and key_error["pid"] == 100
    assert key_error["identifier"] == "brain" and key_error["kind"] == "traceback"
    assert key_error["traceback"] == "\n".join(traceback_lines())
    assert key_error["cursor"] == j.entries[2]["__CURSOR"]  # its first line
    assert key_error["complete"] is True and len(key_error["fingerprint"]) == 32
    assert key_error["occurrences"] == 1 and key_error["exception_type"] == "KeyError"
    assert by_name["ValueError: bad request 7"].facts["kind"] == "json_log"
    assert by_name["ValueError: bad request 7"].facts["log_message"] == "request failed"
    assert by_name["err: database connection lost to 10.0.0.5:5432"].facts["priority"] == 3
    assert by_name["OSError: [Errno 28] disk full"].facts["pid"] == 500
    for s in gaps:
        assert s.signal == "CAPABILITY_GAP" and s.ecosystem == "diagnostics"
        assert s.facts["gap_type"] == "exception" and s.facts["gap_category"]
        assert s.incident_id == f"exception:{s.facts['fingerprint']}"
    assert ctx.status.counters["journal_entries"] == len(j.entries)
    assert "--output=json" in calls(tmp_path)[-1] and "--lines=10000" in calls(tmp_path)[-1]


async def test_same_bug_with_other_ids_and_lines_is_one_fingerprint(tmp_path: Path) -> None:
    j = Journal()
    j.lines(traceback_lines("KeyError: 'job 17'", 40), pid=100)
    j.add("recovered", pid=100)
    j.lines(traceback_lines("KeyError: 'job 18'", 44), pid=101)
    j.lines(traceback_lines("KeyError: 'job 19'", 44, "cancel"), pid=102)
    jc = scripted_journalctl(tmp_path, [{"stdout": j.text(j.entries)}])
    gaps, _ = await scan(tmp_path, config(jc))
    fps = [s.facts["fingerprint"] for s in gaps]
    assert fps[0] == fps[1] != fps[2]
    assert [s.facts["occurrences"] for s in gaps] == [1, 2, 1]
    assert gaps[0].facts["first_seen"] == gaps[1].facts["first_seen"]


async def test_structlog_dict_tracebacks_and_plain_exception_fields(tmp_path: Path) -> None:
    j = Journal()
    stacks = [
        {
            "exc_type": "RuntimeError",
            "exc_value": "job 5 failed",
            "frames": [{"filename": "/srv/kloros/kloros/jobs.py", "lineno": 9, "name": "run"}],
        },
        {
            "exc_type": "OSError",
            "exc_value": "disk full",
            "frames": [{"filename": "/srv/kloros/kloros/store.py", "lineno": 3, "name": "save"}],
        },
    ]
    j.add(json.dumps({"event": "job failed", "exception": stacks}))
    j.add(json.dumps({"event": "odd", "exception": "ValueError: no stack here"}))
    j.add(json.dumps({"event": "fine", "exception": None}))
    j.add('{"event": "broken json", "exception": ')
    jc = scripted_journalctl(tmp_path, [{"stdout": j.text(j.entries)}])
    gaps, _ = await scan(tmp_path, config(jc))
    assert names(gaps) == ["RuntimeError: job 5 failed", "ValueError: no stack here"]
    chained = next(s for s in gaps if s.gap_name.startswith("RuntimeError"))
    assert chained.facts["chain"] == ["OSError: disk full", "RuntimeError: job 5 failed"]
    assert 'File "/srv/kloros/kloros/store.py", line 3, in save' in chained.facts["traceback"]


async def test_over_long_journal_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    j = Journal()
    j.add("x" * 3000, priority=3)
    j.add("after the long one", priority=3)
    jc = scripted_journalctl(tmp_path, [{"stdout": j.text(j.entries)}])
    data = {"service": {"max_line_bytes": 1024}, **config(jc)}
    gaps, ctx = await scan(tmp_path, data)
    assert names(gaps) == ["err: after the long one"]
    assert ctx.status.counters["journal_lines_skipped"] == 1


# -- cursor, replay and memory across restarts ----------------------------------------------
async def test_restart_resumes_before_a_half_read_traceback_without_duplicates(
    tmp_path: Path,
) -> None:
    j = Journal()
    first = j.add("service up")
    a = traceback_lines("KeyError: 'job 1'")
    j.lines(a[:4], pid=100)  # A: still being written when we stop
    j.lines(traceback_lines("OSError: disk full", 5, "save"), pid=200)  # B: complete
    j.add("other stream", pid=300)
    run1 = list(j.entries)
    j.add(a[4], pid=100)
    j.add(a[5], pid=100)
    j.add(a[6], pid=100)  # A's exception line arrives after the restart
    j.add("queue broken", pid=300, priority=3)
    replay = j.entries[1:]  # journalctl --after-cursor=<first> prints all of these
    jc = scripted_journalctl(
        tmp_path, [{"stdout": j.text(run1), "hang": True}, {"stdout": j.text(replay), "hang": True}]
    )
    data = config(jc, flush_after_s=60)
    state = tmp_path / "var" / "state" / "exception" / "state.json"

    async with following(tmp_path, data) as (_, pub):
        await pub.wait_for(lambda s: len(s) == 1)
        await asyncio.sleep(0.2)
    assert names(pub.gaps()) == ["OSError: disk full"]
    saved = orjson.loads(state.read_bytes())
    assert saved["cursor"] == first["__CURSOR"]  # just before A's first line
    assert saved["published"] == [j.entries[5]["__CURSOR"]]  # B's first line

    async with following(tmp_path, data) as (monitor, pub2):
        await pub2.wait_for(lambda s: len(s) == 2)
        await asyncio.sleep(0.2)
    assert f"--after-cursor={first['__CURSOR']}" in calls(tmp_path)[-1]
    assert names(pub2.gaps()) == ["KeyError: 'job 1'", "err: queue broken"]
    assert monitor.ctx.status.counters["replays_suppressed"] == 1
    saved = orjson.loads(state.read_bytes())
    assert saved["cursor"] == j.entries[-1]["__CURSOR"]
    assert saved["published"] == []  # nothing after the cursor any more


async def test_fingerprint_memory_survives_restart(tmp_path: Path) -> None:
    j = Journal()
    run1 = j.lines(traceback_lines("KeyError: 'job 1'"), pid=100)
    run2 = j.lines(traceback_lines("KeyError: 'job 2'", 50), pid=101)
    jc = scripted_journalctl(
        tmp_path, [{"stdout": j.text(run1), "hang": True}, {"stdout": j.text(run2), "hang": True}]
    )
    async with following(tmp_path, config(jc)) as (_, pub):
        await pub.wait_for(lambda s: len(s) == 1)
    async with following(tmp_path, config(jc)) as (_, pub2):
        await pub2.wait_for(lambda s: len(s) == 1)
    one, two = pub.gaps()[0].facts, pub2.gaps()[0].facts
    assert one["fingerprint"] == two["fingerprint"]
    assert two["occurrences"] == 2 and two["first_seen"] == one["first_seen"]


def test_fingerprint_memory_is_a_bounded_lru() -> None:
    memory = FingerprintMemory(16)
    for i in range(20):
        memory.record(f"fp{i}", float(i))
    assert len(memory) == 16 and "fp3" not in memory and "fp4" in memory
    assert memory.record("fp4", 99.0) == (2, 4.0, False)
    memory.record("new", 100.0)  # evicts fp5, the least recently seen
    assert "fp4" in memory and "fp5" not in memory
    again = FingerprintMemory(16)
    again.load(memory.dump())
    assert again.dump() == memory.dump()
    again.load([["bad"], "junk", ["fp", "x", 1, 2]])
    assert again.dump() == memory.dump()


# -- availability --------------------------------------------------------------------------
async def test_missing_journalctl_is_unavailable_with_its_message(tmp_path: Path) -> None:
    ctx, _ = make_context("exception", tmp_path, config(tmp_path / "nope" / "journalctl"))
    with pytest.raises(MonitorUnavailable, match="No such file or directory"):
        await ExceptionMonitor(ctx).run()


async def test_no_journal_files_is_unavailable_with_journalctls_message(tmp_path: Path) -> None:
    jc = scripted_journalctl(tmp_path, [], probe={"stderr": "No journal files were found.\n"})
    ctx, _ = make_context("exception", tmp_path, config(jc))
    with pytest.raises(MonitorUnavailable, match="No journal files were found"):
        await ExceptionMonitor(ctx).run()


async def test_nothing_to_watch_is_unavailable(tmp_path: Path) -> None:
    ctx, _ = make_context("exception", tmp_path, {"monitors": {"exception": {"journal": False}}})
    with pytest.raises(MonitorUnavailable, match="nothing to watch"):
        await ExceptionMonitor(ctx).run()


# -- log files -----------------------------------------------------------------------------
def append(path: Path, lines: list[str]) -> None:
    with path.open("a") as fh:
        fh.write("".join(f"{line}\n" for line in lines))


async def test_log_file_tracebacks_and_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(
        log,
        [
            "2024-05-01 12:00:00 INFO error count is 0",
            "2024-05-01 12:00:01 ERROR request failed",
            *traceback_lines(),
        ],
    )
    data = config(tmp_path / "nope" / "journalctl", log_files=["app.log"])
    async with following(tmp_path, data) as (monitor, pub):
        await pub.wait_for(lambda s: len(s) == 1)
        assert monitor.ctx.status.details["journal"].startswith("unavailable: ")
        append(
            log,
            [
                json.dumps({"event": "boom", "exception": "RuntimeError: stop 3"}),
                *traceback_lines("KeyError: 'job 99'", 41),
            ],
        )
        await pub.wait_for(lambda s: len(s) == 3)
    first, json_gap, again = pub.gaps()
    assert first.gap_name == "KeyError: 'job 17'" and first.facts["source"] == "file"
    assert first.facts["path"] == str(log) and first.facts["unit"] == ""
    assert json_gap.gap_name == "RuntimeError: stop 3"
    assert again.facts["fingerprint"] == first.facts["fingerprint"]
    assert again.facts["occurrences"] == 2

    append(log, traceback_lines("ValueError: after restart"))
    async with following(tmp_path, data) as (_, pub2):
        await pub2.wait_for(lambda s: len(s) >= 1)
        await asyncio.sleep(0.3)
    assert names(pub2.gaps()) == ["ValueError: after restart"]  # nothing replayed


async def test_log_file_half_written_traceback_is_reported_on_stop(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, traceback_lines()[:4])
    data = {
        "monitors": {"exception": {"journal": False, "log_files": [str(log)], "flush_after_s": 60}}
    }
    async with following(tmp_path, data) as (monitor, pub):
        await async_wait_until(lambda: monitor.assembler.pending == 1)
    [gap] = pub.gaps()
    assert gap.gap_name == "IncompleteTraceback" and gap.facts["complete"] is False


async def test_log_file_scan(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, [*traceback_lines(), "tail line"])
    gaps, _ = await scan(
        tmp_path, {"monitors": {"exception": {"journal": False, "log_files": [str(log)]}}}
    )
    assert names(gaps) == ["KeyError: 'job 17'"]


# -- a real journald (the `journald` fixture is in conftest.py) ---------------------------
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
    async with following(tmp_path, data) as (monitor, pub):
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
    assert names(gaps) == ["KeyError: 'job-1'", "err: disk /dev/sdb failed"]
    tb = next(s for s in gaps if s.gap_name.startswith("KeyError")).facts
    assert tb["pid"] == pid and tb["unit"] == "kloros-worker.service"
    assert tb["identifier"] == "worker" and tb["complete"] is True
    assert tb["traceback"].startswith("Traceback (most recent call last):")


# -- end to end: a real kloros-stream run --------------------------------------------------
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
    append(log, ["INFO starting"])
    path = e2e_config(tmp_path, journal=False, log_files=["worker.log"])
    with ServiceProcess(path) as svc:
        append(log, traceback_lines("KeyError: 'job 1'"))
        append(log, ["INFO error rate 0%", *traceback_lines("KeyError: 'job 2'", 77)])
        feed = svc.wait_feed(
            lambda f: any(q["metadata"]["occurrences"] == 2 for q in questions_of(f, "exception")),
            timeout=20,
        )
        [q] = questions_of(feed, "exception")
        assert q["metadata"]["facts"]["path"] == str(log)
