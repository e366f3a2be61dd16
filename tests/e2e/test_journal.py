"""JournalFollower on the real journalctl of a real namespaced systemd-journald (root only;
skipped with the reason otherwise; the `journald` fixture is in conftest.py): follow and
resume after a cursor, the first entry after start, journalctl killed, odd fields, a
namespace without a journal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import pytest

from kloros_stream.sources.journal import JournalFollower, JournalUnavailable, entry_text
from tests.support.journald import NamespacedJournald, collect
from tests.support.scripted import wait_until


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
