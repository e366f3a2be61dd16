"""JournalFollower: journalctl as a subprocess, cursors, restarts, unavailability.

A scripted stand-in journalctl (a real executable that prints what the test planned and
records its arguments) for exact edge cases; the real journalctl on a real namespaced
systemd-journald is in ``tests/e2e/test_journal.py``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from kloros_stream.sources.journal import (
    JournalFollower,
    JournalUnavailable,
    cursor_position,
    entry_filter,
    entry_text,
)
from tests.support.journald import (
    calls,
    collect,
    scripted_journalctl,
)


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


async def test_unread_counts_what_no_batch_holds_yet(tmp_path: Path) -> None:
    partial = '{"__CURSOR": "s=abc;i=2'
    jc = scripted_journalctl(tmp_path, [{"stdout": jsonl(entry(1)) + partial, "hang": True}])
    f = JournalFollower(journalctl=str(jc))
    assert f.unread() == 0
    it = f.batches()
    assert len(await collect(it, 1)) == 1
    assert f.unread() == len(partial)  # the partial line waits for the rest
    await it.aclose()


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
