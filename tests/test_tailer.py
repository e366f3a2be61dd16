"""FileTailer on real files, real inotify and a real SIGKILLed subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from kloros_stream.checkpoint import CheckpointStore, read_only_store
from kloros_stream.sources.tailer import FileTailer, TailBatch
from tests.support.scripted import wait_until

REPO = Path(__file__).resolve().parents[1]


class Tail:
    """Consumes ``tailer.batches()`` in a task, recording records and batches."""

    def __init__(self, tailer: FileTailer) -> None:
        self.tailer = tailer
        self.records: list[Any] = []
        self.batches: list[TailBatch] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with contextlib.aclosing(self.tailer.batches()) as batches:
            async for batch in batches:
                self.batches.append(batch)
                self.records.extend(batch.records)

    async def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        await wait_until(predicate, timeout, what, task=self.task, state=lambda: self.records)

    async def wait_records(self, count: int) -> None:
        await self.wait(lambda: len(self.records) >= count, f"{count} records")

    async def wait_bytes_read(self, count: int) -> None:
        await self.wait(lambda: self.tailer.stats["bytes"] >= count, f"{count} bytes read")


@contextlib.asynccontextmanager
async def tailing(tailer: FileTailer) -> AsyncIterator[Tail]:
    tail = Tail(tailer)
    tail.task = asyncio.create_task(tail._run())
    try:
        await tail.wait(lambda: tailer.watching, "the inotify watch")
        yield tail
    finally:
        tail.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tail.task


def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "state")


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def lines(*items: str) -> bytes:
    return b"".join(item.encode() + b"\n" for item in items)


# -- reading ------------------------------------------------------------------------------
async def test_appends_are_read_in_order(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(lines("old-1", "old-2"))
    async with tailing(FileTailer(path, store(tmp_path))) as tail:
        await tail.wait_records(2)  # an existing file without checkpoint is history
        for i in range(50):
            append(path, lines(f"new-{i}"))
        append(path, lines(*(f"bulk-{i}" for i in range(1000))))
        await tail.wait_records(1052)
    expected = [
        b"old-1",
        b"old-2",
        *(f"new-{i}".encode() for i in range(50)),
        *(f"bulk-{i}".encode() for i in range(1000)),
    ]
    assert tail.records == expected
    assert tail.tailer.stats["lines"] == 1052
    assert tail.batches[-1].offset == path.stat().st_size
    assert all(b.path == path and b.observed_at > 0 for b in tail.batches)


async def test_partial_line_is_held_until_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"complete\nhalf-")
    tailer = FileTailer(path, store(tmp_path), name="partial")
    async with tailing(tailer) as tail:
        await tail.wait_records(1)
        await tail.wait_bytes_read(14)
        append(path, b"way-")
        await tail.wait_bytes_read(18)
        assert tail.records == [b"complete"]
        tailer.save_checkpoint()
        saved = store(tmp_path).load("partial")
        assert saved["offset"] == len(b"complete\n")  # never past the partial line
        append(path, b"done\nnext\n")
        await tail.wait_records(3)
    assert tail.records == [b"complete", b"half-way-done", b"next"]


async def test_ten_megabyte_line_is_skipped_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_bytes(b"before\n")
    piece = b"x" * 1_000_000
    tailer = FileTailer(path, store(tmp_path))
    with capture_logs() as logs:
        async with tailing(tailer) as tail:
            await tail.wait_records(1)
            tracemalloc.start()
            try:
                with path.open("ab") as handle:
                    for _ in range(10):
                        handle.write(piece)
                        handle.flush()
                    handle.write(b"\nafter-1\nafter-2\n")
                await tail.wait_records(3)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert tail.records == [b"before", b"after-1", b"after-2"]
    assert tailer.stats["skipped_long"] == 1
    assert peak < 4 * 1_048_576, f"peak traced memory {peak} bytes"
    too_long = [e for e in logs if e["event"] == "line_too_long"]
    assert len(too_long) == 1
    assert too_long[0]["offset"] == len(b"before\n")
    assert too_long[0]["path"] == str(path)


async def test_long_line_inside_one_chunk_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    exact = b"y" * 1024
    path.write_bytes(b"a\n" + b"z" * 5000 + b"\n" + exact + b"\nb\n")
    tailer = FileTailer(path, store(tmp_path), max_line_bytes=1024)
    async with tailing(tailer) as tail:
        await tail.wait_records(3)
    assert tail.records == [b"a", exact, b"b"]
    assert tailer.stats["skipped_long"] == 1


async def test_binary_garbage_and_malformed_json_are_skipped_and_counted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    garbage = bytes(b for b in range(256) if b != 10) * 4
    bad = [garbage, b'{"truncated": ', b"[1, 2]", b'"a string"', b"42", b"{'single': 1}"]
    path.write_bytes(
        b'{"n": 1}\n' + b"\n".join(bad) + b"\n\n   \n" + b'{"n": 2, "nested": {"ok": true}}\n'
    )
    tailer = FileTailer(path, store(tmp_path), parse_json=True)
    with capture_logs() as logs:
        async with tailing(tailer) as tail:
            await tail.wait_records(2)
            append(path, os.urandom(3000).replace(b"\n", b"") + b'\n{"n": 3}\n')
            await tail.wait_records(3)
    assert tail.records == [{"n": 1}, {"n": 2, "nested": {"ok": True}}, {"n": 3}]
    assert tailer.stats["skipped_malformed"] == len(bad) + 1  # blank lines are not errors
    malformed = [e for e in logs if e["event"] == "malformed_json"]
    assert len(malformed) == len(bad) + 1
    assert all(len(e["sample"]) < 400 and e["path"] == str(path) for e in malformed)


# -- truncation and rotation --------------------------------------------------------------
async def test_truncation_restarts_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(lines("a", "b", "c"))
    tailer = FileTailer(path, store(tmp_path))
    async with tailing(tailer) as tail:
        await tail.wait_records(3)
        os.truncate(path, 0)
        await tail.wait(lambda: tailer.stats["truncations"] == 1, "the truncation")
        append(path, lines("d"))
        await tail.wait_records(4)
    assert tail.records == [b"a", b"b", b"c", b"d"]


async def test_copytruncate_refilled_past_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    writer = path.open("ab")  # the application's O_APPEND handle survives copytruncate
    writer.write(lines("one", "two"))
    writer.flush()
    tailer = FileTailer(path, store(tmp_path))
    try:
        async with tailing(tailer) as tail:
            await tail.wait_records(2)
            # logrotate copytruncate, then the writer goes on before the tailer looks
            shutil.copyfile(path, tmp_path / "app.log.1")
            os.truncate(path, 0)
            writer.write(lines("three-is-longer-than-before", "four"))
            writer.flush()
            await tail.wait_records(4)
    finally:
        writer.close()
    assert tail.records == [b"one", b"two", b"three-is-longer-than-before", b"four"]
    assert tailer.stats["truncations"] == 1


async def test_rotation_by_rename_finishes_old_file_first(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    old_writer = path.open("ab")
    old_writer.write(lines("old-1", "old-2"))
    old_writer.flush()
    tailer = FileTailer(path, store(tmp_path))
    try:
        with capture_logs() as logs:
            async with tailing(tailer) as tail:
                await tail.wait_records(2)
                os.rename(path, tmp_path / "app.log.1")
                path.touch()  # logrotate "create": the new file is there, still empty
                await tail.wait(
                    lambda: any(e["event"] == "tail_file_renamed" for e in logs),
                    "the rename to be seen",
                )
                # the application has not reopened yet: it still writes to the old file
                old_writer.write(lines("old-3", "old-4"))
                old_writer.flush()
                old_writer.close()
                append(path, lines("new-1", "new-2"))  # reopened: first data in the new file
                await tail.wait_records(6)
                append(path, lines("new-3"))
                await tail.wait_records(7)
    finally:
        old_writer.close()
    assert tail.records == [b"old-1", b"old-2", b"old-3", b"old-4", b"new-1", b"new-2", b"new-3"]
    assert tailer.stats["rotations"] == 1
    assert not any(e["event"] == "tail_partial_line_dropped" for e in logs)


async def test_rotation_with_new_file_already_written(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(lines("a"))
    tailer = FileTailer(path, store(tmp_path))
    async with tailing(tailer) as tail:
        await tail.wait_records(1)
        append(path, lines("b"))
        os.rename(path, tmp_path / "app.log.1")
        append(tmp_path / "app.log.1", lines("c"))
        path.write_bytes(lines("d", "e"))
        await tail.wait_records(5)
    assert tail.records == [b"a", b"b", b"c", b"d", b"e"]
    assert tailer.stats["rotations"] == 1


async def test_deleted_and_recreated_file_is_read_from_zero(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(lines("a", "b"))
    tailer = FileTailer(path, store(tmp_path))
    async with tailing(tailer) as tail:
        await tail.wait_records(2)
        path.unlink()
        await tail.wait(lambda: not tailer.file_open, "the deleted file to be closed")
        path.write_bytes(lines("c"))
        await tail.wait_records(3)
    assert tail.records == [b"a", b"b", b"c"]


# -- checkpoints --------------------------------------------------------------------------
async def test_restart_from_checkpoint_has_no_duplicates_and_no_gaps(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    expected = [f"line-{i:04d}".encode() for i in range(2000)]
    path.write_bytes(b"".join(line + b"\n" for line in expected[:1000]))
    first = FileTailer(path, store(tmp_path), name="app", read_chunk_bytes=512)
    async with tailing(first) as tail_1:
        await tail_1.wait_records(300)  # stop part-way through the file
    assert 300 <= len(tail_1.records) < 2000
    append(path, b"".join(line + b"\n" for line in expected[1000:1500]))
    second = FileTailer(path, store(tmp_path), name="app", read_chunk_bytes=512)
    async with tailing(second) as tail_2:
        await tail_2.wait_records(1500 - len(tail_1.records))
        append(path, b"".join(line + b"\n" for line in expected[1500:]))
        await tail_2.wait_records(2000 - len(tail_1.records))
    assert tail_1.records + tail_2.records == expected
    saved = store(tmp_path).load("app")
    assert saved["offset"] == path.stat().st_size
    assert saved["ino"] == path.stat().st_ino


async def test_checkpoint_of_another_file_reads_from_zero(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(lines("first-file-1", "first-file-2"))
    async with tailing(FileTailer(path, store(tmp_path))) as tail:
        await tail.wait_records(2)
    replacement = tmp_path / "replacement"
    replacement.write_bytes(lines("second-file-line-1", "second-file-line-2", "x"))
    os.replace(replacement, path)  # a different file, longer than the saved offset
    async with tailing(FileTailer(path, store(tmp_path))) as tail:
        await tail.wait_records(3)
    assert tail.records == [b"second-file-line-1", b"second-file-line-2", b"x"]


async def test_checkpoint_beyond_a_shrunk_file_reads_from_zero(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(lines("aaaa", "bbbb", "cccc"))
    async with tailing(FileTailer(path, store(tmp_path))) as tail:
        await tail.wait_records(3)
    os.truncate(path, 5)  # same inode, same first bytes, but shorter than the offset
    tailer = FileTailer(path, store(tmp_path))
    async with tailing(tailer) as tail:
        await tail.wait_records(1)
    assert tail.records == [b"aaaa"]
    assert tailer.stats["truncations"] == 1


KILL_SCRIPT = r"""
import asyncio, os, sys
from pathlib import Path
from kloros_stream.checkpoint import CheckpointStore
from kloros_stream.sources.tailer import FileTailer

async def main(src, state, out):
    tailer = FileTailer(Path(src), CheckpointStore(Path(state)), name="killed",
                        checkpoint_interval_s=0.01, read_chunk_bytes=4096)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    async for batch in tailer.batches():
        os.write(fd, b"".join(line + b"\n" for line in batch.records))

asyncio.run(main(*sys.argv[1:4]))
"""

LINE = re.compile(rb"line-(\d{6})\n")


async def test_kill_9_mid_stream_loses_nothing(tmp_path: Path) -> None:
    script = tmp_path / "tail_to_file.py"
    script.write_text(KILL_SCRIPT)
    src, out, state = tmp_path / "input.log", tmp_path / "output.log", tmp_path / "state"
    total = 30_000
    checkpoint = CheckpointStore(state)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(script), str(src), str(state), str(out)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def seen() -> list[int]:
        data = out.read_bytes() if out.exists() else b""
        return [int(m) for m in LINE.findall(data)]

    written = 0

    async def writer() -> None:
        nonlocal written
        while written < total:
            burst = range(written, min(total, written + 100))
            append(src, b"".join(b"line-%06d\n" % i for i in burst))
            written = burst.stop
            await asyncio.sleep(0.002)

    src.write_bytes(b"")
    writing = asyncio.create_task(writer())
    proc = start()
    try:
        await wait_until(
            lambda: len(seen()) >= total // 4 and bool(checkpoint.load("killed")),
            timeout=60,
            what="the first run to make progress",
        )
        handed_before_kill = checkpoint.load("killed")["offset"] // len(b"line-000000\n")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        first_run = len(seen())
        proc = start()
        await writing
        await wait_until(lambda: set(seen()) >= set(range(total)), timeout=60, what="every line")
    finally:
        writing.cancel()
        proc.kill()
        proc.wait(timeout=10)
    counts: dict[int, int] = {}
    for i in seen():
        counts[i] = counts.get(i, 0) + 1
    assert set(counts) == set(range(total))  # every line at least once, nothing invented
    # what the checkpoint covered before the kill is never delivered again
    assert all(counts[i] == 1 for i in range(handed_before_kill))
    assert 0 < handed_before_kill <= first_run


# -- appearing, missing, unreadable, one-shot ---------------------------------------------
async def test_file_created_after_start_is_read_from_beginning(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    tailer = FileTailer(path, store(tmp_path), parse_json=True)
    async with tailing(tailer) as tail:
        assert not tailer.file_open
        staged = tmp_path / ".staged"
        staged.write_bytes(b'{"i": 0}\n{"i": 1}\n')
        os.rename(staged, path)
        append(path, b'{"i": 2}\n')
        await tail.wait_records(3)
    assert tail.records == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_missing_parent_directories_are_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there.log"
    tailer = FileTailer(path, store(tmp_path))
    async with tailing(tailer) as tail:
        path.parent.mkdir(parents=True)
        path.write_bytes(lines("first", "second"))
        await tail.wait_records(2)
        append(path, lines("third"))
        await tail.wait_records(3)
    assert tail.records == [b"first", b"second", b"third"]


async def test_unreadable_file_is_logged_and_retried_on_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret.log"
    path.write_bytes(lines("hidden-1"))
    blocked = True
    real_open = os.open

    def fake_open(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if blocked and Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    tailer = FileTailer(path, store(tmp_path))
    with capture_logs() as logs:
        async with tailing(tailer) as tail:

            def failures() -> list[dict[str, Any]]:
                return [e for e in logs if e["event"] == "tail_unreadable"]

            await tail.wait(lambda: len(failures()) == 1, "the unreadable log")
            append(path, lines("hidden-2"))  # another change while still unreadable
            await tail.wait(
                lambda: tailer.stats["bytes"] == 0 and len(failures()) == 1, "nothing read"
            )
            blocked = False
            os.chmod(path, 0o640)  # IN_ATTRIB: try again
            await tail.wait_records(2)
    assert tail.records == [b"hidden-1", b"hidden-2"]
    assert len(failures()) == 1
    assert failures()[0]["log_level"] == "error"


async def test_follow_false_reads_to_eof_and_returns(tmp_path: Path) -> None:
    path = tmp_path / "once.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "partial"')
    tailer = FileTailer(path, read_only_store(), parse_json=True)
    records = [r async for batch in tailer.batches(follow=False) for r in batch.records]
    assert records == [{"a": 1}, {"a": 2}]
    missing = FileTailer(tmp_path / "absent.jsonl", read_only_store())
    assert [b async for b in missing.batches(follow=False)] == []


async def test_follow_false_resumes_from_a_writable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "once.log"
    path.write_bytes(lines("a", "b"))
    first = [b.records async for b in FileTailer(path, store(tmp_path)).batches(follow=False)]
    append(path, lines("c"))
    second = [b.records async for b in FileTailer(path, store(tmp_path)).batches(follow=False)]
    assert first == [[b"a", b"b"]]
    assert second == [[b"c"]]
    assert orjson.loads(store(tmp_path).path("tail").read_bytes())["offset"] == 6
