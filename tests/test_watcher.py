"""RecursiveWatcher on real inotify and real files under tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncinotify import Event, Inotify, Mask
from structlog.testing import capture_logs

from kloros_stream.sources.watcher import FileEvent, FileEventKind, RecursiveWatcher
from tests.support.scripted import wait_until

E = FileEventKind


class Collector:
    """Runs the watcher's iterator in a task and records every event."""

    def __init__(self, watcher: RecursiveWatcher) -> None:
        self.watcher = watcher
        self.events: list[FileEvent] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _run(self) -> None:
        async for event in self.watcher:
            self.events.append(event)

    async def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        await wait_until(predicate, timeout, what, task=self.task, state=lambda: self.events)

    async def wait_idle(self) -> None:
        await self.wait(lambda: self.watcher.idle, "the watcher to be idle")

    async def wait_event(self, kind: FileEventKind, path: Path) -> FileEvent:
        await self.wait(lambda: self.find(kind, path) is not None, f"{kind} {path}")
        found = self.find(kind, path)
        assert found is not None
        return found

    async def sentinel(self, directory: Path, suffix: str = "") -> None:
        """Create a file and wait for it: every earlier inotify event has been handled."""
        self._sentinels = getattr(self, "_sentinels", 0) + 1
        path = directory / f"zz-sentinel-{self._sentinels}{suffix}"
        path.write_bytes(b"")
        await self.wait_event(E.CLOSED, path)

    def find(self, kind: FileEventKind, path: Path) -> FileEvent | None:
        return next((e for e in self.events if e.kind is kind and e.path == path), None)

    def kinds(self, path: Path) -> list[FileEventKind]:
        return [e.kind for e in self.events if e.path == path]

    def paths(self, kind: FileEventKind) -> list[Path]:
        return [e.path for e in self.events if e.kind is kind]

    def mark(self) -> int:
        return len(self.events)

    def since(self, mark: int) -> list[str]:
        """Names of the files with events after ``mark``, sentinels left out."""
        return [
            e.path.name for e in self.events[mark:] if not e.path.name.startswith("zz-sentinel")
        ]


@contextlib.asynccontextmanager
async def watching(root: Path, *, idle: bool = True, **kwargs: Any) -> AsyncIterator[Collector]:
    watcher = RecursiveWatcher(root, **kwargs)
    async with watcher:
        collector = Collector(watcher)
        collector.start()
        try:
            if idle:
                await collector.wait_idle()
            yield collector
        finally:
            await collector.stop()


def write(path: Path, data: bytes = b"x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_tree(base: Path, files: list[str]) -> list[Path]:
    return [write(base / name) for name in files]


# -- initial scan and basic events --------------------------------------------------------
async def test_initial_scan_reports_every_file_as_existing(tmp_path: Path) -> None:
    files = make_tree(tmp_path, ["a.txt", "sub/b.txt", "sub/deep/er/c.txt", "z/d"])
    (tmp_path / "empty").mkdir()
    async with watching(tmp_path) as c:
        assert sorted(c.paths(E.EXISTING)) == sorted(files)
        assert all(e.kind is E.EXISTING for e in c.events)
        assert c.watcher.known_files == frozenset(files)
        assert c.watcher.watched_dirs == frozenset(
            {
                tmp_path,
                tmp_path / "sub",
                tmp_path / "sub/deep",
                tmp_path / "sub/deep/er",
                tmp_path / "z",
                tmp_path / "empty",
            }
        )


async def test_events_follow_false_stops_after_initial_scan(tmp_path: Path) -> None:
    files = make_tree(tmp_path, ["a", "b/c"])
    async with RecursiveWatcher(tmp_path) as watcher:
        seen = [e async for e in watcher.events(follow=False)]
    assert sorted(e.path for e in seen) == sorted(files)
    assert {e.kind for e in seen} == {E.EXISTING}


async def test_batches_are_the_events_in_scan_order_with_paths_equal_to_parsed_ones(
    tmp_path: Path,
) -> None:
    files = make_tree(tmp_path, ["b.py", "a/z.py", "a/b.py", "a/b/c.py", "a/b0.py", "c/d/e",
                                 os.fsdecode(b"bad\xff.py")])
    async with RecursiveWatcher(tmp_path) as watcher:
        batches = [b async for b in watcher.batches(follow=False)]
    async with RecursiveWatcher(tmp_path) as watcher:
        events = [e async for e in watcher.events(follow=False)]
    flat = [e for batch in batches for e in batch]
    assert [(e.kind, e.path) for e in flat] == [(e.kind, e.path) for e in events]
    # a directory's files (sorted), then its subdirectories depth first (sorted)
    assert [str(e.path.relative_to(tmp_path)) for e in flat] == [
        "b.py", os.fsdecode(b"bad\xff.py"), "a/b.py", "a/b0.py", "a/z.py", "a/b/c.py",
        "c/d/e"]
    for event in flat:  # made without parsing; equal to (and hashed as) a parsed path
        assert event.path == Path(str(event.path)) and event.path in set(files)
        assert event.path.parent / event.path.name == event.path


async def test_create_modify_close_delete(tmp_path: Path) -> None:
    async with watching(tmp_path) as c:
        path = tmp_path / "f.log"
        with path.open("wb") as handle:
            handle.write(b"one\n")
            handle.flush()
            await c.wait_event(E.MODIFIED, path)
        await c.wait_event(E.CLOSED, path)
        assert c.kinds(path)[:3] == [E.CREATED, E.MODIFIED, E.CLOSED]
        path.unlink()
        await c.wait_event(E.DELETED, path)
        assert path not in c.watcher.known_files
        assert all(e.observed_at > 0 for e in c.events)


async def test_nested_directories_created_quickly_miss_nothing(tmp_path: Path) -> None:
    async with watching(tmp_path) as c:
        expected: list[Path] = []
        for i in range(25):
            deep = tmp_path / f"t{i}" / "a" / "b" / "c"
            deep.mkdir(parents=True)  # mkdir -p, then files at once at every level
            for level in (deep, deep.parent, deep.parent.parent, tmp_path / f"t{i}"):
                expected.append(write(level / f"file{i}.txt"))
        await c.wait(lambda: set(expected) <= c.watcher.known_files, "all nested files")
        created = c.paths(E.CREATED)
        assert sorted(created) == sorted(expected)  # each exactly once, none missed
        # the deepest directories are really watched: an append is seen
        target = tmp_path / "t24/a/b/c/file24.txt"
        with target.open("ab") as handle:
            handle.write(b"more\n")
        await c.wait_event(E.MODIFIED, target)


async def test_directory_moved_in_with_files(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    files = make_tree(outside / "pkg", ["a.py", "sub/b.py", "sub/inner/c.py"])
    async with watching(root) as c:
        os.rename(outside / "pkg", root / "pkg")
        moved = [root / p.relative_to(outside) for p in files]
        await c.wait(lambda: set(moved) <= set(c.paths(E.CREATED)), "moved-in files")
        assert (root / "pkg/sub/inner") in c.watcher.watched_dirs
        write(root / "pkg/sub/inner/new.py")
        await c.wait_event(E.CREATED, root / "pkg/sub/inner/new.py")


async def test_directory_moved_out_drops_watches_and_files(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    files = make_tree(root / "pkg", ["a", "sub/b"])
    async with watching(root) as c:
        os.rename(root / "pkg", outside / "pkg")
        for path in files:
            await c.wait_event(E.DELETED, path)
        assert not any(d.is_relative_to(root / "pkg") for d in c.watcher.watched_dirs)
        assert c.watcher.known_files == frozenset()
        mark = c.mark()
        write(outside / "pkg/sub/b", b"changed\n")  # no longer ours
        write(outside / "pkg/new")
        await c.sentinel(root)
        assert c.since(mark) == []


async def test_rename_within_tree_reports_moved_with_src(tmp_path: Path) -> None:
    old = write(tmp_path / "a/report.json")
    (tmp_path / "b").mkdir()
    async with watching(tmp_path) as c:
        new = tmp_path / "b/report-renamed.json"
        os.rename(old, new)
        event = await c.wait_event(E.MOVED, new)
        assert event.src == old
        assert old not in c.watcher.known_files and new in c.watcher.known_files


async def test_file_moved_out_becomes_deleted_and_in_becomes_created(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    path = write(root / "f")
    incoming = write(outside / "g")
    async with watching(root) as c:
        os.rename(path, outside / "f")
        await c.wait_event(E.DELETED, path)
        os.rename(incoming, root / "g")
        await c.wait_event(E.CREATED, root / "g")
        assert c.watcher.known_files == frozenset({root / "g"})


async def test_directory_renamed_within_tree_remaps_files(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "old", ["x.py", "sub/y.py"])
    async with watching(tmp_path) as c:
        os.rename(tmp_path / "old", tmp_path / "new")
        for path in files:
            new = tmp_path / "new" / path.relative_to(tmp_path / "old")
            event = await c.wait_event(E.MOVED, new)
            assert event.src == path
        assert c.watcher.known_files == frozenset(
            {tmp_path / "new/x.py", tmp_path / "new/sub/y.py"}
        )
        # the kept watches now report the new paths
        with (tmp_path / "new/sub/y.py").open("ab") as handle:
            handle.write(b"more\n")
        await c.wait_event(E.MODIFIED, tmp_path / "new/sub/y.py")
        write(tmp_path / "new/sub/z.py")
        await c.wait_event(E.CREATED, tmp_path / "new/sub/z.py")
        assert tmp_path / "old" not in c.watcher.watched_dirs


# -- filters ------------------------------------------------------------------------------
async def test_exclude_globs_skip_directories_and_files(tmp_path: Path) -> None:
    kept = make_tree(tmp_path, ["src/a.py", "src/sub/b.py"])
    make_tree(tmp_path, [".git/HEAD", "src/__pycache__/a.pyc", "pkg.egg-info/PKG", "src/c.pyc"])
    exclude = [".git", "__pycache__", "*.egg-info", "*.pyc"]
    async with watching(tmp_path, exclude=exclude) as c:
        assert sorted(c.paths(E.EXISTING)) == sorted(kept)
        assert not any(
            part in (".git", "__pycache__", "pkg.egg-info")
            for d in c.watcher.watched_dirs
            for part in d.parts
        )
        mark = c.mark()
        write(tmp_path / "src/__pycache__/new.pyc")
        write(tmp_path / "src/new/__pycache__/x.pyc")
        write(tmp_path / ".git/objects/ab")
        write(tmp_path / "src/d.pyc")
        await c.sentinel(tmp_path / "src")
        assert c.since(mark) == []
        assert tmp_path / "src/new" in c.watcher.watched_dirs


async def test_include_predicate_filters_files(tmp_path: Path) -> None:
    make_tree(tmp_path, ["a.py", "a.txt", "d/b.py", "d/b.log"])
    async with watching(tmp_path, include=lambda p: p.suffix == ".py") as c:
        assert sorted(c.paths(E.EXISTING)) == [tmp_path / "a.py", tmp_path / "d/b.py"]
        mark = c.mark()
        write(tmp_path / "d/e/new.txt")
        write(tmp_path / "d/e/new.py")  # directories are traversed regardless of include
        await c.wait_event(E.CREATED, tmp_path / "d/e/new.py")
        await c.sentinel(tmp_path / "d", ".py")
        assert c.since(mark) == ["new.py"]


async def test_non_recursive_ignores_subdirectories(tmp_path: Path) -> None:
    make_tree(tmp_path, ["top", "sub/inner"])
    async with watching(tmp_path, recursive=False) as c:
        assert c.paths(E.EXISTING) == [tmp_path / "top"]
        assert c.watcher.watched_dirs == frozenset({tmp_path})
        mark = c.mark()
        write(tmp_path / "sub/other")
        write(tmp_path / "newdir/x")
        await c.sentinel(tmp_path)
        assert c.since(mark) == []


# -- overflow -----------------------------------------------------------------------------
async def test_injected_overflow_rescans_and_finds_lost_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep = write(tmp_path / "keep")
    doomed = write(tmp_path / "d/doomed")
    async with watching(tmp_path) as c:
        watcher = c.watcher
        real = watcher.handle_raw_event
        dropped: list[Event] = []

        def lossy(event: Event, observed_at: float | None = None) -> None:
            """The kernel queue overflowed: these events never arrive, Q_OVERFLOW does."""
            if event.name is not None and str(event.name) in ("lost", "doomed", "lostdir"):
                if not dropped:
                    real(Event(None, Mask.Q_OVERFLOW, 0, None), observed_at)
                dropped.append(event)
                return
            real(event, observed_at)

        monkeypatch.setattr(watcher, "handle_raw_event", lossy)
        lost = write(tmp_path / "lost")
        lost_deep = write(tmp_path / "lostdir/inner/file")
        doomed.unlink()
        await c.wait_event(E.EXISTING, lost)
        await c.wait_event(E.EXISTING, lost_deep)
        await c.wait_event(E.DELETED, doomed)
        await c.wait_idle()
        assert dropped, "the lossy hook never saw the events"
        assert watcher.stats["overflows"] == 1
        assert watcher.known_files == frozenset({keep, lost, lost_deep})
        rescanned = {e.path for e in c.events[2:] if e.kind is E.EXISTING}
        assert rescanned == {keep, lost, lost_deep}  # EXISTING for every current file
        assert tmp_path / "lostdir/inner" in watcher.watched_dirs
        write(tmp_path / "lostdir/inner/after")  # new directories are watched after it
        await c.wait_event(E.CREATED, tmp_path / "lostdir/inner/after")


async def test_real_kernel_queue_overflow_is_recovered(tmp_path: Path) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 50_000:
        pytest.skip(f"max_queued_events={limit} is too large to overflow cheaply")
    async with watching(tmp_path) as c:
        await c.stop()  # nobody reads: the kernel queue fills up
        files = []
        for i in range(limit // 2 + 500):  # CREATE + MODIFY + CLOSE_WRITE each
            files.append(write(tmp_path / f"f{i:05d}", b"data\n"))
        after = write(tmp_path / "created-after-overflow")
        c.start()
        await c.wait(lambda: c.watcher.stats["overflows"] >= 1, "the overflow")
        await c.wait(
            lambda: c.watcher.known_files == frozenset([*files, after]), "every file known"
        )
        await c.wait_idle()
        reported = {e.path for e in c.events}
        assert after in reported
        assert set(files) <= reported


# -- root lifecycle -----------------------------------------------------------------------
async def test_missing_root_is_waited_for(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "root"
    async with watching(root) as c:
        assert c.events == []
        (tmp_path / "a").mkdir()
        (tmp_path / "a/b").mkdir()
        root.mkdir()
        first = write(root / "first")
        nested = write(root / "x/y/nested")
        await c.wait(lambda: c.watcher.known_files == frozenset({first, nested}), "root files")
        # known_files is updated as the watcher finds a file, its event reaches us a moment
        # later (a loaded machine shows the gap): wait for the events too.
        await c.wait(lambda: all(c.kinds(p) for p in (first, nested)), "root file events")
        for path in (first, nested):
            assert c.kinds(path)[0] in (E.EXISTING, E.CREATED)
        write(root / "later")
        await c.wait_event(E.CREATED, root / "later")


async def test_root_appearing_at_once_with_content(tmp_path: Path) -> None:
    root = tmp_path / "deep/er/root"
    staged = make_tree(tmp_path / "stage/root", ["a", "b/c"])
    async with watching(root) as c:
        (tmp_path / "deep/er").mkdir(parents=True)
        os.rename(tmp_path / "stage/root", root)
        expected = {root / p.relative_to(tmp_path / "stage/root") for p in staged}
        await c.wait(lambda: set(c.paths(E.EXISTING)) == expected, "EXISTING for the new root")


async def test_root_deleted_then_recreated(tmp_path: Path) -> None:
    root = tmp_path / "root"
    files = make_tree(root, ["a", "sub/b"])
    async with watching(root) as c:
        shutil.rmtree(root)
        for path in files:
            await c.wait_event(E.DELETED, path)
        await c.wait_idle()
        assert c.watcher.known_files == frozenset()
        assert c.watcher.watched_dirs == frozenset()
        again = write(root / "sub/again")
        await c.wait(lambda: c.watcher.known_files == frozenset({again}), "recreated root")
        write(root / "sub/later")
        await c.wait_event(E.CREATED, root / "sub/later")


async def test_root_moved_away_reports_deleted(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = write(root / "a")
    async with watching(root) as c:
        os.rename(root, tmp_path / "elsewhere")
        await c.wait_event(E.DELETED, path)
        back = write(root / "b")
        await c.wait(lambda: c.watcher.known_files == frozenset({back}), "new root")


# -- errors -------------------------------------------------------------------------------
async def test_watch_limit_enospc_is_reported_and_watcher_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = make_tree(tmp_path, ["ok/a", "top"])
    make_tree(tmp_path, ["over/b", "over/deeper/c"])
    real_add_watch = Inotify.add_watch

    def add_watch(self: Inotify, path: Any, mask: Mask) -> Any:
        if Path(path).name.startswith("over"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_add_watch(self, path, mask)

    monkeypatch.setattr(Inotify, "add_watch", add_watch)
    errors: list[str] = []
    with capture_logs() as logs:
        async with watching(tmp_path, on_error=errors.append) as c:
            assert sorted(c.paths(E.EXISTING)) == sorted(ok)
            assert c.watcher.watch_limit_reached
            assert c.watcher.stats["watch_limit_hits"] == 1
            assert errors and "fs.inotify.max_user_watches" in errors[0]
            assert "over" in errors[0]
            write(tmp_path / "overflowing-dir/x")  # another new directory hits the limit
            write(tmp_path / "ok/new")
            await c.wait_event(E.CREATED, tmp_path / "ok/new")
            await c.wait(lambda: len(errors) == 2, "second on_error")
            assert tmp_path / "ok" in c.watcher.watched_dirs
    limit_logs = [e for e in logs if e["event"] == "inotify_watch_limit"]
    assert limit_logs[0]["log_level"] == "error"
    assert limit_logs[0]["path"] == str(tmp_path / "over")
    assert "max_user_watches" in limit_logs[0]


async def test_permission_denied_subdirectory_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path, ["secret/s", "public/p"])
    real_add_watch = Inotify.add_watch

    def add_watch(self: Inotify, path: Any, mask: Mask) -> Any:
        if Path(path).name == "secret":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_add_watch(self, path, mask)

    monkeypatch.setattr(Inotify, "add_watch", add_watch)
    with capture_logs() as logs:
        async with watching(tmp_path) as c:
            assert c.paths(E.EXISTING) == [tmp_path / "public/p"]
            write(tmp_path / "public/q")
            await c.wait_event(E.CREATED, tmp_path / "public/q")
    assert any(e["event"] == "watch_permission_denied" for e in logs)
    assert not c.watcher.watch_limit_reached
