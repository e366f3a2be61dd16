"""The question feed: append-only JSONL that survives torn writes and restarts, compacts
to one line per id atomically (the snapshot itself is a sink: tests/test_sinks.py)."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import orjson
import pytest

from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.feed import QuestionFeed, read_feed
from kloros_stream.models import CAPABILITY_GAP_RESOLVED, CuriosityQuestion, Signal
from kloros_stream.store import FeedStore
from tests.support.scripted import Script, gap, running_service, service_config, wait_until

T0 = 1_700_000_000.0


def question(name: str, *, at: float = T0, core: CuriosityCore | None = None,
             resolved: bool = False, **facts: object) -> CuriosityQuestion:
    core = core or CuriosityCore()
    q = core.handle(Signal(
        signal=CAPABILITY_GAP_RESOLVED if resolved else "CAPABILITY_GAP",
        ecosystem="testing", monitor="test", observed_at=at,
        facts={"gap_type": "test_failure", "gap_name": name, "gap_category": "quality",
               "gap_reason": "failed", **facts}), at)
    assert q is not None
    return q


def open_feed(path: Path, **kw: object) -> QuestionFeed:
    feed = QuestionFeed(path, compact_bytes=int(kw.pop("compact_bytes", 1 << 26)))
    feed.open()
    return feed


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(raw) for raw in path.read_bytes().splitlines()]


def test_missing_feed_reads_as_empty(tmp_path: Path) -> None:
    contents = read_feed(tmp_path / "none.jsonl")
    assert contents.questions == {} and contents.lines == 0


def test_lines_are_written_on_flush_one_complete_question_each(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    feed = open_feed(path)
    a, b = question("t::a"), question("t::b")
    feed.append(a)
    feed.append(b)
    assert path.read_bytes() == b""  # buffered until the batch is flushed
    assert feed.flush() == 2
    assert [CuriosityQuestion.model_validate(d) for d in lines(path)] == [a, b]
    assert feed.flush() == 0
    feed.close()


def test_torn_last_line_is_ignored_cut_and_the_log_continues(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    a, b = question("t::a"), question("t::b")
    good = b"".join(orjson.dumps(q.model_dump(mode="json")) + b"\n" for q in (a, b))
    torn = orjson.dumps(question("t::c").model_dump(mode="json"))[:57]
    path.write_bytes(good + torn)

    contents = read_feed(path)
    assert set(contents.questions) == {a.id, b.id}
    assert contents.torn_bytes == len(torn) and contents.valid_end == len(good)

    feed = QuestionFeed(path, compact_bytes=1 << 26)
    recovered = feed.open()
    assert set(recovered.questions) == {a.id, b.id}
    assert path.read_bytes() == good  # the torn tail is cut off
    d = question("t::d")
    feed.append(d)
    feed.flush()
    feed.close()
    assert [x["id"] for x in lines(path)] == [a.id, b.id, d.id]  # every line parses
    assert read_feed(path).torn_bytes == 0


def test_invalid_middle_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    a, b = question("t::a"), question("t::b")
    path.write_bytes(orjson.dumps(a.model_dump(mode="json")) + b"\n" + b"{not json\n"
                     + b'{"no_id": 1}\n' + b"\n"
                     + orjson.dumps(b.model_dump(mode="json")) + b"\n")
    contents = read_feed(path)
    assert set(contents.questions) == {a.id, b.id}
    assert contents.invalid == 2


def test_restart_rebuilds_the_latest_line_per_id(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    core = CuriosityCore()
    feed = open_feed(path)
    a = question("t::a", core=core)
    b = question("t::b", core=core)
    a2 = question("t::a", core=core, at=T0 + 5, error="a different error")
    b_resolved = question("t::b", core=core, at=T0 + 6, resolved=True)
    for q in (a, b, a2, b_resolved):
        feed.append(q)
    feed.flush()
    feed.close()

    again = QuestionFeed(path, compact_bytes=1 << 26)
    contents = again.open()
    assert contents.lines == 4
    rebuilt = CuriosityCore()
    assert rebuilt.load(contents.questions.values(), T0 + 10) == 2
    assert rebuilt.questions[a.id] == a2
    assert rebuilt.questions[b.id].status == "resolved"
    again.close()


async def test_compaction_keeps_the_latest_line_per_id_atomically(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    feed = QuestionFeed(path, compact_bytes=4096)
    store = FeedStore(feed)
    store.open(T0)
    core = CuriosityCore(store=store)
    for i in range(30):
        question(f"t::{i % 3}", core=core, at=T0 + i, error=f"error {i}")
    store.flush()
    store.commit()
    assert store.needs_compaction
    inode = path.stat().st_ino
    latest = core.ranked(include_resolved=True)
    assert await store.compact()
    assert path.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert not store.needs_compaction
    assert feed.compactions == 1
    assert [CuriosityQuestion.model_validate(d) for d in lines(path)] == latest
    # no temp left over (beside the feed: its index)
    assert sorted(p.name for p in tmp_path.iterdir() if ".index-" not in p.name) == [
        "feed.jsonl"]
    extra = question("t::new", core=core)
    store.close()
    assert [d["id"] for d in lines(path)] == [q.id for q in latest] + [extra.id]


# -- through the running service ----------------------------------------------------------
async def test_service_restart_neither_duplicates_nor_loses_questions(tmp_path: Path) -> None:
    cfg = service_config(tmp_path)
    gaps = [gap("test_failure", f"t::{i}") for i in range(3)]
    async with running_service(cfg, {"test": Script(gaps=gaps)}) as svc:
        await wait_until(lambda: svc.feed.lines_written == 3, what="three lines")
    first = read_feed(cfg.feed.path).questions
    assert len(first) == 3

    # Restart; the monitor reports the same gaps again plus a new one.
    script = Script(gaps=[*gaps, gap("test_failure", "t::new")])
    async with running_service(cfg, {"test": script}) as svc:
        await wait_until(lambda: svc.core.handled == 4, what="four signals handled")
        assert len(svc.core.questions) == 4
        assert svc.core.created["test_failure"] == 1  # only t::new is a new question
    after = read_feed(cfg.feed.path).questions
    assert set(first) < set(after) and len(after) == 4
    for qid, q in first.items():
        assert after[qid]["created_at"] == q["created_at"]  # the same question, not a new one
        assert after[qid]["metadata"]["occurrences"] == 2
    # Every line for an id belongs to one question (one created_at): no duplicate.
    created: dict[str, set[object]] = {}
    for d in lines(cfg.feed.path):
        created.setdefault(str(d["id"]), set()).add(d["created_at"])
    assert all(len(v) == 1 for v in created.values())


async def test_service_recovers_from_a_torn_tail(tmp_path: Path) -> None:
    cfg = service_config(tmp_path)
    async with running_service(cfg, {"test": Script(gaps=[gap("test_failure", "t::a")])}
                               ) as svc:
        await wait_until(lambda: svc.feed.lines_written == 1)
    path = cfg.feed.path
    with path.open("ab") as fh:
        fh.write(b'{"id": "test_failure-torn", "hypo')
    script = Script()
    async with running_service(cfg, {"test": script}) as svc:
        assert len(svc.core.questions) == 1
        script.push(gap("test_failure", "t::b"))
        await wait_until(lambda: svc.feed.lines_written == 1)
    assert [d["metadata"]["gap_name"] for d in lines(path)] == ["t::a", "t::b"]


async def test_service_compacts_and_writes_the_snapshot(tmp_path: Path) -> None:
    cfg = service_config(tmp_path, {"feed": {"compact_bytes": 4096,
                                             "snapshot_path": "var/snapshot.json"}})
    script = Script()
    async with running_service(cfg, {"test": script}) as svc:
        for round_ in range(4):
            for i in range(5):
                script.push(gap("test_failure", f"t::{i}", error=f"round {round_}"))
        script.push(gap("test_failure", "t::gone"))
        script.push({**gap("test_failure", "t::gone"), "resolve": True})
        await wait_until(lambda: svc.core.handled == 22)
        await wait_until(lambda: svc.feed.compactions >= 1, what="a compaction")
        snap = cfg.feed.snapshot_path
        assert snap is not None
        await wait_until(lambda: snap.exists(), what="the snapshot")
    ids = [d["id"] for d in lines(cfg.feed.path)]
    assert len(ids) == len(set(ids)) == 6  # compacted: one line per question
    data = orjson.loads(snap.read_bytes())
    assert data["count"] == 5 == len(data["questions"])  # open questions only
    assert all(q["status"] == "ready" for q in data["questions"])
    assert all("round 3" in " ".join(q["evidence"]) for q in data["questions"])


async def test_service_writes_counter_updates_later(tmp_path: Path) -> None:
    cfg = service_config(tmp_path, {"feed": {"counter_flush_s": 0.2}})
    script = Script()
    async with running_service(cfg, {"test": script}) as svc:
        for _ in range(5):
            script.push(gap("test_failure", "t::flaky"))
        await wait_until(lambda: svc.core.handled == 5)
        assert svc.feed.lines_written == 1  # the repeats wrote nothing at once

        def counted() -> bool:
            latest = read_feed(cfg.feed.path).questions
            return [q["metadata"]["occurrences"] for q in latest.values()] == [5]

        await wait_until(counted, what="the counters in the feed")
        assert svc.feed.lines_written == 2


async def test_a_quiet_service_still_writes_counters_of_a_later_repeat(tmp_path: Path) -> None:
    """A repeat arriving after housekeeping went back to sleep must wake it."""
    cfg = service_config(tmp_path, {"feed": {"counter_flush_s": 0.2}})
    script = Script()
    async with running_service(cfg, {"test": script}) as svc:
        script.push(gap("test_failure", "t::late"))
        await wait_until(lambda: svc.feed.lines_written == 1)
        await asyncio.sleep(1.5)  # housekeeping has run and now waits for work
        script.push(gap("test_failure", "t::late"))

        def counted() -> bool:
            latest = read_feed(cfg.feed.path).questions
            return [q["metadata"]["occurrences"] for q in latest.values()] == [2]

        await wait_until(counted, what="the repeat's counters in the feed")


async def test_the_consumer_survives_a_fact_json_cannot_hold(tmp_path: Path) -> None:
    """An int beyond 64 bits (a journal field, say) is written, and the next gap too."""
    cfg = service_config(tmp_path)
    script = Script()
    async with running_service(cfg, {"test": script}) as svc:
        script.push(gap("test_failure", "t::huge", pid=2**70))
        script.push(gap("test_failure", "t::next"))
        await wait_until(lambda: svc.feed.lines_written == 2, what="both lines")
        assert svc.consumer_running
    latest = read_feed(cfg.feed.path).questions
    assert sorted(q["metadata"]["gap_name"] for q in latest.values()) == ["t::huge", "t::next"]
    huge = next(q for q in latest.values() if q["metadata"]["gap_name"] == "t::huge")
    assert huge["metadata"]["facts"]["pid"] == 2**70


def test_a_failed_write_keeps_the_lines_and_leaves_no_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    feed = open_feed(path)
    feed.append(question("t::a"))
    feed.flush()
    real_write = feed._fh.write  # type: ignore[union-attr]

    def disk_full(data: bytes) -> int:
        real_write(bytes(data)[:7])  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    feed._fh.write = disk_full  # type: ignore[union-attr,method-assign]
    feed.append(question("t::b"))
    with pytest.raises(OSError):
        feed.flush()
    assert [d["metadata"]["gap_name"] for d in lines(path)] == ["t::a"]  # no torn bytes
    feed._fh.write = real_write  # type: ignore[union-attr,method-assign]
    assert feed.flush() == 1  # the kept line goes out with the next flush
    feed.close()
    assert [d["metadata"]["gap_name"] for d in lines(path)] == ["t::a", "t::b"]


async def test_fsync_runs_on_a_thread_of_its_own_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop hands the fsync to a thread, on a duplicate descriptor closed there: a
    compaction reopening the file meanwhile closes nothing under it; a write during it
    waits for the next fsync."""
    import os
    import threading

    synced: list[tuple[int, str]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append((fd, threading.current_thread().name))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    feed = open_feed(tmp_path / "feed.jsonl")
    await feed.sync_async()
    assert synced == []  # nothing written: nothing to sync
    feed.append(question("a"))
    feed.flush()
    assert synced == []  # a write never fsyncs in the loop
    original = feed._fh.fileno() if feed._fh else -1
    task = asyncio.create_task(feed.sync_async())
    await asyncio.sleep(0)
    feed.reopen()  # a compaction replaced the file meanwhile
    feed.append(question("b"))
    feed.flush()
    await task
    assert len(synced) == 1
    fd, thread = synced[0]
    assert fd != original and thread != threading.current_thread().name
    await feed.sync_async()  # "b" was written after the first one began
    assert len(synced) == 2
    await feed.sync_async()
    assert len(synced) == 2
    feed.close()
    assert [q["id"] for q in lines(tmp_path / "feed.jsonl")] == [
        question("a").id, question("b").id]
