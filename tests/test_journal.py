"""JournalFollower: journalctl as a subprocess, cursors, restarts, unavailability.

Two kinds of journalctl: a scripted stand-in (a real executable that prints what the test
planned and records its arguments) for exact edge cases, and the real journalctl on a real
namespaced systemd-journald (root only; skipped with the reason otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from kloros_stream.sources.journal import (
    JournalBatch,
    JournalFollower,
    JournalUnavailable,
    cursor_position,
    entry_filter,
    entry_text,
)
from tests.support.journald import (
    NamespacedJournald,
    calls,
    scripted_journalctl,
)
from tests.support.scripted import wait_until


def entry(i: int, message: str = "", **fields: Any) -> dict[str, Any]:
    return {
        "__CURSOR": f"s=abc;i={i:x};b=b;m=1;t=2;x=3",
        "MESSAGE": message or f"line {i}",
        "PRIORITY": "6",
        "_PID": "10",
        **fields,
    }


def jsonl(*entries: dict[str, Any]) -> str:
    return "".join(orjson.dumps(e).decode() + "\n" for e in entries)


async def collect(
    it: AsyncIterator[JournalBatch], count: int, timeout: float = 10.0, ident: str | None = None
) -> list[dict[str, Any]]:
    """Entries from ``it`` (only those of identifier ``ident`` if given) until ``count``
    arrived (fails after ``timeout``)."""
    got: list[dict[str, Any]] = []

    async def run() -> None:
        async for batch in it:
            got.extend(
                e for e in batch.entries if ident is None or e.get("SYSLOG_IDENTIFIER") == ident
            )
            if len(got) >= count:
                return

    await asyncio.wait_for(run(), timeout)
    return got


# -- pure helpers --------------------------------------------------------------------------
def test_entry_text_decodes_byte_arrays_leniently() -> None:
    e = {
        "A": "plain",
        "B": list(b"caf\xc3\xa9 \x1b[1m"),
        "C": list(b"bad \xff\xfe"),
        "D": ["first", "second"],
        "E": [list(b"x\xff"), "y"],
        "F": None,
        "G": 7,
    }
    assert entry_text(e, "A") == "plain"
    assert entry_text(e, "B") == "café \x1b[1m"
    assert entry_text(e, "C") == "bad \ufffd\ufffd"
    assert entry_text(e, "D") == "first"
    assert entry_text(e, "E") == "x\ufffd"
    assert entry_text(e, "F") == "" and entry_text(e, "missing") == ""
    assert entry_text(e, "G") == "7"


def test_entry_filter_globs_every_unit_field_and_matches_identifiers() -> None:
    match = entry_filter(["kloros-*", "voice.service"])
    assert match({"_SYSTEMD_UNIT": "kloros-brain.service"}) == "kloros-brain.service"
    assert match({"_SYSTEMD_UNIT": "init.scope", "UNIT": "kloros-x.service"}) == "kloros-x.service"
    assert match({"_SYSTEMD_UNIT": list(b"voice.service")}) == "voice.service"
    assert match({"_SYSTEMD_UNIT": "sshd.service"}) is None
    assert match({}) is None
    everything = entry_filter([])
    assert everything({"_SYSTEMD_UNIT": "sshd.service"}) == "sshd.service"
    assert everything({}) == ""
    tagged = entry_filter(["kloros-*"], ["brain", "voice"])
    assert (
        tagged({"_SYSTEMD_UNIT": "kloros-a.service", "SYSLOG_IDENTIFIER": "brain"})
        == "kloros-a.service"
    )
    assert tagged({"_SYSTEMD_UNIT": "kloros-a.service", "SYSLOG_IDENTIFIER": "other"}) is None
    assert tagged({"_SYSTEMD_UNIT": "sshd.service", "SYSLOG_IDENTIFIER": "brain"}) is None
    assert entry_filter([], ["voice"])({"SYSLOG_IDENTIFIER": list(b"voice")}) == ""


def test_cursor_position() -> None:
    assert cursor_position("s=abc;i=1f;b=x;m=1;t=2;x=3") == ("abc", 31)
    assert cursor_position("garbage") is None
    assert cursor_position(None) is None


def test_command_lines() -> None:
    f = JournalFollower(journalctl="/bin/jc", namespace="ns1", initial_lines=50)
    assert f.command(follow=True) == [
        "/bin/jc",
        "--namespace=ns1",
        "--output=json",
        "--all",
        "--no-pager",
        "--quiet",
        "--follow",
        "--lines=50",
    ]
    g = JournalFollower(after_cursor="s=x;i=1")
    assert g.command(follow=False) == [
        "journalctl",
        "--output=json",
        "--all",
        "--no-pager",
        "--quiet",
        "--after-cursor=s=x;i=1",
    ]


# -- scripted journalctl -------------------------------------------------------------------
async def test_reads_entries_and_tracks_the_cursor(tmp_path: Path) -> None:
    jc = scripted_journalctl(tmp_path, [{"stdout": jsonl(entry(1), entry(2), entry(3))}])
    f = JournalFollower(journalctl=str(jc))
    await f.probe()
    async with contextlib.aclosing(f.batches(follow=False)) as it:
        got = [e async for b in it for e in b.entries]
    assert [e["MESSAGE"] for e in got] == ["line 1", "line 2", "line 3"]
    assert f.cursor == entry(3)["__CURSOR"]
    assert f.entries_read == 3 and f.restarts == 0


async def test_over_long_and_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    long_entry = entry(2, "x" * 5000)
    out = jsonl(entry(1)) + "not json\n" + jsonl(long_entry) + "[1, 2]\n" + jsonl(entry(3))
    jc = scripted_journalctl(tmp_path, [{"stdout": out}])
    f = JournalFollower(journalctl=str(jc), max_line_bytes=2048)
    async with contextlib.aclosing(f.batches(follow=False)) as it:
        got = [e async for b in it for e in b.entries]
    assert [e["MESSAGE"] for e in got] == ["line 1", "line 3"]
    assert f.lines_skipped == 1 and f.lines_malformed == 2


async def test_over_long_line_split_across_reads_is_skipped_once(tmp_path: Path) -> None:
    huge = entry(2, "y" * 600_000)  # larger than one read chunk
    jc = scripted_journalctl(tmp_path, [{"stdout": jsonl(entry(1), huge, entry(3))}])
    f = JournalFollower(journalctl=str(jc), max_line_bytes=100_000)
    async with contextlib.aclosing(f.batches(follow=False)) as it:
        got = [e async for b in it for e in b.entries]
    assert [e["MESSAGE"] for e in got] == ["line 1", "line 3"]
    assert f.lines_skipped == 1


async def test_exited_journalctl_is_restarted_after_the_last_cursor(tmp_path: Path) -> None:
    jc = scripted_journalctl(
        tmp_path,
        [
            {"stdout": jsonl(entry(1), entry(2)), "code": 1, "stderr": "boom"},
            {"stdout": jsonl(entry(3)), "hang": True},
        ],
    )
    f = JournalFollower(journalctl=str(jc), restart_initial_s=0.05)
    async with contextlib.aclosing(f.batches(follow=True)) as it:
        got = await collect(it, 3)
    assert [e["MESSAGE"] for e in got] == ["line 1", "line 2", "line 3"]
    runs = [c for c in calls(tmp_path) if "--output=json" in c]
    assert "--lines=10000" in runs[0]
    assert f"--after-cursor={entry(2)['__CURSOR']}" in runs[1]
    assert f.restarts == 1 and f.last_exit == "status 1: boom"


async def test_closing_the_stream_stops_journalctl(tmp_path: Path) -> None:
    jc = scripted_journalctl(tmp_path, [{"stdout": jsonl(entry(1)), "hang": True}])
    f = JournalFollower(journalctl=str(jc))
    it = f.batches(follow=True)
    await collect(it, 1)
    pid = f.pid
    assert pid is not None and psutil.pid_exists(pid)
    await it.aclose()
    assert f.pid is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_rejected_cursor_is_dropped(tmp_path: Path) -> None:
    jc = scripted_journalctl(
        tmp_path,
        [
            {"stderr": "Failed to seek to cursor: Invalid argument\n", "code": 1},
            {"stdout": jsonl(entry(1)), "hang": True},
        ],
    )
    f = JournalFollower(journalctl=str(jc), after_cursor="garbage", restart_initial_s=0.05)
    async with contextlib.aclosing(f.batches(follow=True)) as it:
        await collect(it, 1)
    runs = [c for c in calls(tmp_path) if "--output=json" in c]
    assert "--after-cursor=garbage" in runs[0]
    assert not any(a.startswith("--after-cursor") for a in runs[1])


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        (
            {"stderr": "No journal files were found.\n-- No entries --\n"},
            "No journal files were found.",
        ),
        (
            {
                "stderr": "No journal files were opened due to insufficient permissions.\n",
                "code": 1,
            },
            "No journal files were opened due to insufficient permissions.",
        ),
        (
            {"stderr": "journalctl: unrecognized option '--namespace=x'\n", "code": 1},
            "unrecognized option",
        ),
    ],
)
async def test_probe_reports_journalctls_own_message(
    tmp_path: Path, probe: dict[str, Any], message: str
) -> None:
    jc = scripted_journalctl(tmp_path, [], probe=probe)
    with pytest.raises(JournalUnavailable, match=message):
        await JournalFollower(journalctl=str(jc)).probe()


async def test_missing_binary_is_unavailable(tmp_path: Path) -> None:
    f = JournalFollower(journalctl=str(tmp_path / "no-such-journalctl"))
    with pytest.raises(JournalUnavailable, match="No such file or directory"):
        await f.probe()
    with pytest.raises(JournalUnavailable, match="No such file or directory"):
        await anext(f.batches())


async def test_unavailable_while_following_is_raised(tmp_path: Path) -> None:
    jc = scripted_journalctl(
        tmp_path,
        [{"stderr": "No journal files were opened due to insufficient permissions.\n", "code": 1}],
    )
    f = JournalFollower(journalctl=str(jc), restart_initial_s=0.05)
    with pytest.raises(JournalUnavailable, match="insufficient permissions"):
        async for _ in f.batches():
            pass


# -- a real journald (the `journald` fixture is in conftest.py) ---------------------------
def messages(entries: list[dict[str, Any]], ident: str) -> list[str]:
    return [entry_text(e, "MESSAGE") for e in entries if e.get("SYSLOG_IDENTIFIER") == ident]


@pytest.mark.journald
async def test_real_journal_follow_and_resume_after_cursor(journald: NamespacedJournald) -> None:
    journald.emit(["one", "two"], identifier="t1", unit="kloros-a.service")
    f = JournalFollower(namespace=journald.namespace)
    await f.probe()
    it = f.batches(follow=True)
    got = await collect(it, 2, ident="t1")
    assert messages(got, "t1") == ["one", "two"]
    await asyncio.to_thread(journald.emit, ["three"], identifier="t1", unit="kloros-a.service")
    got = await collect(it, 1, ident="t1")
    assert messages(got, "t1") == ["three"]
    cursor = f.cursor
    await it.aclose()

    await asyncio.to_thread(journald.emit, ["four", "five"], identifier="t1")
    g = JournalFollower(namespace=journald.namespace, after_cursor=cursor)
    async with contextlib.aclosing(g.batches(follow=True)) as it2:
        got = await collect(it2, 2, ident="t1")
    assert messages(got, "t1") == ["four", "five"]  # nothing repeated, nothing skipped


@pytest.mark.journald
async def test_real_journal_first_matching_entry_after_start_is_not_lost(
    journald: NamespacedJournald,
) -> None:
    """journalctl --follow --lines=N --identifier=X drops the first X entry if none existed
    at start (systemd 252): the filters are applied here instead."""
    f = JournalFollower(namespace=journald.namespace)
    it = f.batches(follow=True)
    reader = asyncio.ensure_future(collect(it, 2, ident="late", timeout=20))
    while f.pid is None:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # journalctl is at the tail before anything of "late" exists
    await asyncio.to_thread(journald.emit, ["first", "second"], identifier="late")
    got = await reader
    await it.aclose()
    assert messages(got, "late") == ["first", "second"]


@pytest.mark.journald
async def test_real_journalctl_killed_mid_stream_is_restarted(journald: NamespacedJournald) -> None:
    f = JournalFollower(namespace=journald.namespace, restart_initial_s=0.2)
    it = f.batches(follow=True)
    got: list[dict[str, Any]] = []

    async def read() -> None:
        async for batch in it:
            got.extend(e for e in batch.entries if e.get("SYSLOG_IDENTIFIER") == "t2")

    reader = asyncio.ensure_future(read())
    await asyncio.to_thread(journald.emit, ["a1", "a2"], identifier="t2")
    await wait_until(lambda: len(got) >= 2)
    pid = f.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(journald.emit, ["b1", "b2"], identifier="t2")  # while it is down
    await wait_until(lambda: f.restarts >= 1 and f.pid not in (None, pid))
    await asyncio.to_thread(journald.emit, ["c1", "c2"], identifier="t2")
    await wait_until(lambda: len(got) >= 6, timeout=20)
    reader.cancel()
    await asyncio.wait({reader})
    await it.aclose()
    assert messages(got, "t2") == ["a1", "a2", "b1", "b2", "c1", "c2"]


@pytest.mark.journald
async def test_real_journal_odd_fields(journald: NamespacedJournald) -> None:
    big = "z" * 10_000
    journald.native({"MESSAGE": b"bad utf8 \xff here", "SYSLOG_IDENTIFIER": "t3"})
    journald.native({"MESSAGE": big, "SYSLOG_IDENTIFIER": "t3"})
    journald.native({"MESSAGE": "two\nlines", "SYSLOG_IDENTIFIER": "t3"})
    f = JournalFollower(namespace=journald.namespace)
    async with contextlib.aclosing(f.batches(follow=True)) as it:
        got = await collect(it, 3, ident="t3")
    assert messages(got, "t3") == ["bad utf8 \ufffd here", big, "two\nlines"]


@pytest.mark.journald
async def test_real_probe_of_a_namespace_without_journal(journald: NamespacedJournald) -> None:
    await JournalFollower(namespace=journald.namespace).probe()
    with pytest.raises(JournalUnavailable, match="No journal files were found"):
        await JournalFollower(namespace=f"{journald.namespace}none").probe()
