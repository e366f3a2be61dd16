"""ExceptionMonitor: what counts as an exception, fingerprints, cursor and replay safety,
unavailability, log files (a scripted journalctl; on a real journald and through a real
``kloros-stream run``: ``tests/e2e/test_exception_journal.py``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from kloros_stream.models import Signal
from kloros_stream.monitors.base import MonitorUnavailable
from kloros_stream.monitors.exception import ExceptionMonitor, FingerprintMemory
from tests.support.exception_monitor import Journal, config, following, names
from tests.support.fakes import make_context
from tests.support.inputs import append_lines, traceback_lines
from tests.support.journald import (
    calls,
    scripted_journalctl,
)
from tests.support.scripted import wait_until as async_wait_until


async def scan(tmp_path: Path, data: dict[str, Any]) -> tuple[list[Signal], Any]:
    ctx, pub = make_context("exception", tmp_path, data, one_shot=True)
    await asyncio.wait_for(ExceptionMonitor(ctx).run(), 30)
    return pub.gaps("exception"), ctx


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


CHAINED = [
    "Traceback (most recent call last):",
    '  File "/srv/kloros/kloros/config.py", line 5, in load',
    "    open(path)",
    "FileNotFoundError: [Errno 2] No such file or directory: '/etc/kloros.toml'",
    "",
    "The above exception was the direct cause of the following exception:",
    "",
    "Traceback (most recent call last):",
    '  File "/srv/kloros/kloros/config.py", line 9, in <module>',
    '    load("/etc/kloros.toml")',
    '  File "/srv/kloros/kloros/config.py", line 7, in load',
    '    raise ConfigError("cannot load " + path) from err',
    "ConfigError: cannot load /etc/kloros.toml",
]


async def test_a_chained_part_read_in_the_loop_turn_of_the_deadline_joins_its_head(
    tmp_path: Path,
) -> None:
    """The loop is stalled past the chain grace right after the first part of a chain, and
    the chained part reaches the pipe meanwhile: both become ready in one loop turn, and the
    part is read before the quiet deadline is judged, so the inner cause is no question of
    its own."""
    j = Journal()
    head = j.lines(CHAINED[:4])
    tail = j.lines(CHAINED[4:])
    jc = scripted_journalctl(
        tmp_path, [{"stdout": j.text(head), "more": [[0.1, j.text(tail)]], "hang": True}]
    )
    async with following(tmp_path, config(jc)) as (monitor, pub):
        take = monitor._on_journal_batch

        def stalled(batch: Any) -> None:
            take(batch)
            if batch.entries[-1] is not None and batch.entries[-1]["MESSAGE"] == CHAINED[3]:
                time.sleep(0.5)  # the chained part is written while the loop stands still

        monitor._on_journal_batch = stalled  # type: ignore[method-assign]
        await pub.wait_for(lambda s: len(s) >= 1)
        await asyncio.sleep(0.3)  # a question of the inner cause alone would be here now
    assert names(pub.gaps()) == ["ConfigError: cannot load /etc/kloros.toml"]
    assert pub.gaps()[0].facts["chain"] == [CHAINED[3], CHAINED[-1]]


async def test_a_partial_journal_line_delays_a_traceback_at_most_flush_after_s(
    tmp_path: Path,
) -> None:
    j = Journal()
    j.lines(traceback_lines())
    partial = j.text([j.add("half a line")])[:40]  # journalctl stuck mid-line
    jc = scripted_journalctl(tmp_path, [{"stdout": j.text(j.entries[:-1]) + partial,
                                         "hang": True}])
    async with following(tmp_path, config(jc, flush_after_s=0.3)) as (monitor, pub):
        await pub.wait_for(lambda s: len(s) == 1, timeout=10)
        assert monitor.follower is not None and monitor.follower.unread() == len(partial)
    assert names(pub.gaps()) == ["KeyError: 'job 17'"]


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


async def test_log_file_tracebacks_and_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append_lines(
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
        append_lines(
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

    append_lines(log, traceback_lines("ValueError: after restart"))
    async with following(tmp_path, data) as (_, pub2):
        await pub2.wait_for(lambda s: len(s) >= 1)
        await asyncio.sleep(0.3)
    assert names(pub2.gaps()) == ["ValueError: after restart"]  # nothing replayed


async def test_log_file_half_written_traceback_is_reported_on_stop(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append_lines(log, traceback_lines()[:4])
    data = {
        "monitors": {"exception": {"journal": False, "log_files": [str(log)], "flush_after_s": 60}}
    }
    async with following(tmp_path, data) as (monitor, pub):
        await async_wait_until(lambda: monitor.assembler.pending == 1)
    [gap] = pub.gaps()
    assert gap.gap_name == "IncompleteTraceback" and gap.facts["complete"] is False


async def test_log_file_scan(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append_lines(log, [*traceback_lines(), "tail line"])
    gaps, _ = await scan(
        tmp_path, {"monitors": {"exception": {"journal": False, "log_files": [str(log)]}}}
    )
    assert names(gaps) == ["KeyError: 'job 17'"]
