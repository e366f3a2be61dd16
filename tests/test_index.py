"""SourceIndex on real files with real inotify: one parse per change whatever the number of
subscribers, one watch per directory, warm restarts that parse nothing, a torn journal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from kloros_stream.analysis.flows import FlowConfig
from kloros_stream.checkpoint import CheckpointStore
from kloros_stream.monitors.base import MonitorStatus
from kloros_stream.sources.index import SourceSpec, Subscription
from kloros_stream.sources.index_journal import FRAME, drained
from kloros_stream.sources.indexes import SourceIndexes
from kloros_stream.sources.watcher import FileEventKind
from tests.support.scripted import wait_until


def _tree(root: Path, files: int = 12) -> None:
    for i in range(files):
        pkg = root / f"pkg{i % 3}" / "sub"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / f"m{i}.py").write_text(f"import os\nclass C{i}:\n    def f(self):\n"
                                      f"        self.q{i}.append(1)\n")
    (root / "pkg0" / "native.so").write_bytes(b"\x7fELF")


def _spec(root: Path, max_bytes: int = 100_000) -> SourceSpec:
    return SourceSpec((root,), ("__pycache__",), max_bytes, FlowConfig())


@contextlib.asynccontextmanager
async def _subscribers(
    registry: SourceIndexes, spec: SourceSpec, n: int
) -> AsyncIterator[list[Subscription]]:
    async with contextlib.AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(registry.subscribe(spec)) for _ in range(n)]
        for sub in subs:
            await sub.initial()
        yield subs


async def _next(sub: Subscription, kind: FileEventKind, name: str):  # type: ignore[no-untyped-def]
    async def find():  # type: ignore[no-untyped-def]
        async for _root, event, record in sub.live():
            if event.kind is kind and event.path.name == name:
                return record
    return await asyncio.wait_for(find(), 10)


async def test_four_subscribers_one_parse_per_file_and_one_watch_per_directory(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    _tree(src)
    registry = SourceIndexes(CheckpointStore(tmp_path / "state"))
    spec = _spec(src)
    async with _subscribers(registry, spec, 4) as subs:
        index = subs[0].index
        assert all(s.index is index for s in subs)
        assert index.counters["files_parsed"] == 12
        assert len(index.records) == 13  # the .so is recorded by its stat
        dirs = {p for p in src.rglob("*") if p.is_dir()} | {src}
        assert index.stats["watched_dirs"] == len(dirs)

        (src / "pkg1" / "sub" / "m1.py").write_text("import sys\n")
        records = [await _next(s, FileEventKind.CLOSED, "m1.py") for s in subs]
        assert records[0] is not None and records[0].facts is not None
        assert all(r is records[0] for r in records)  # one record, shared
        assert records[0].facts.imports.required == {"sys"}
        assert index.counters["files_parsed"] == 13

        (src / "pkg1" / "sub" / "m1.py").write_text("import sys\n")  # same content
        await _next(subs[0], FileEventKind.CLOSED, "m1.py")
        assert index.counters["files_parsed"] == 13  # hash unchanged: not parsed
    assert registry.indexes == {}  # the last subscriber stopped it
    assert registry.totals()["files_parsed"] == 13


async def test_warm_restart_parses_nothing_and_changes_while_down_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    store = CheckpointStore(tmp_path / "state")
    async with _subscribers(SourceIndexes(store), _spec(src), 1):
        pass
    async with _subscribers(SourceIndexes(store), _spec(src), 2) as subs:
        assert subs[0].index.counters["files_parsed"] == 0
        assert subs[0].index.counters["files_reused"] == 13
    (src / "pkg2" / "sub" / "m2.py").write_text("x = (\n")
    (src / "pkg0" / "sub" / "m0.py").unlink()
    async with _subscribers(SourceIndexes(store), _spec(src), 1) as subs:
        index = subs[0].index
        assert index.counters["files_parsed"] == 1
        record = index.records[str(src / "pkg2" / "sub" / "m2.py")]
        assert record.error is not None  # does not parse; the last good facts are kept
        assert record.facts is not None and "C2" in record.facts.summary.classes
        assert str(src / "pkg0" / "sub" / "m0.py") not in index.records


async def test_torn_journal_tail_and_other_settings_are_not_trusted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src, files=3)
    store = CheckpointStore(tmp_path / "state")
    async with _subscribers(SourceIndexes(store), _spec(src), 1) as subs:
        journal = subs[0].index.journal
        assert journal is not None
    with open(journal.path, "ab") as fh:
        fh.write(FRAME.pack(4096, 0) + b"torn")  # a frame cut short by a kill -9
    async with _subscribers(SourceIndexes(store), _spec(src), 1) as subs:
        assert subs[0].index.counters["files_parsed"] == 0
    # Another size limit is another spec: its own journal, every file parsed.
    async with _subscribers(SourceIndexes(store), _spec(src, 50_000), 1) as subs:
        assert subs[0].index.counters["files_parsed"] == 3


async def test_too_large_and_skipped_files_are_recorded_not_parsed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.py").write_text("x = 1\n" * 100)
    async with _subscribers(SourceIndexes(), _spec(src, max_bytes=50), 1) as subs:
        record = subs[0].record(src / "big.py")
        assert record is not None and record.skipped == "too_large" and record.facts is None
        assert subs[0].index.counters == {**subs[0].index.counters, "too_large": 1,
                                          "files_parsed": 0}


async def test_one_shot_registry_scans_once_for_every_subscriber(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src, files=4)
    registry = SourceIndexes(one_shot=True)
    spec = _spec(src)
    async with registry.subscribe(spec) as a, registry.subscribe(spec) as b:
        assert len(await a.initial()) == len(await b.initial()) == 5
    async with registry.subscribe(spec) as c:
        assert c.index is a.index
    assert a.index.counters["files_parsed"] == 4
    assert not (tmp_path / "state").exists()


async def test_settle_turns_a_created_file_into_a_parse(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    async with _subscribers(SourceIndexes(), _spec(src), 1) as (sub,):
        fd = (src / "slow.py").open("w")  # written, never closed before the settle delay
        fd.write("VALUE = 1\n")
        fd.flush()
        try:
            record = await _next(sub, FileEventKind.CLOSED, "slow.py")  # synthetic
        finally:
            fd.close()
        assert record is not None and record.facts is not None
        await wait_until(lambda: sub.index.counters["files_parsed"] >= 1, what="parsed")


async def test_initial_scan_progress_reaches_each_subscriber_and_the_registry(
    tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _tree(src, files=9)
    seen: list[dict[str, object]] = []
    registry = SourceIndexes(one_shot=True,
                             on_progress=lambda index: seen.append(dict(index.progress)))
    first, second = MonitorStatus(), MonitorStatus()
    spec = _spec(src)
    async with registry.subscribe(spec, status=first) as a, \
            registry.subscribe(spec, status=second) as b:
        await a.initial()
        await b.initial()
    files = 10  # nine modules and the native extension
    assert seen[0]["phase"] == "initial_scan" and seen[0]["total"] == files
    assert [p["done"] for p in seen] == sorted(p["done"] for p in seen)  # only forwards
    assert seen[-1] | {"rate_per_s": 0} == {"phase": "done", "what": "files", "done": files,
                                            "total": files, "rate_per_s": 0}
    for status in (first, second):
        assert status.progress == seen[-1]
        assert status.as_json()["progress"] == seen[-1]


async def test_a_late_subscriber_gets_the_whole_state_after_the_snapshot_was_dropped(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    _tree(src)
    registry = SourceIndexes(CheckpointStore(tmp_path / "state"))
    async with _subscribers(registry, _spec(src), 2) as subs:
        first = [item[1].path for item in await subs[0].initial()]
        await subs[1].initial()
        assert subs[0].index._items is None  # every subscriber took it: not kept
        async with registry.subscribe(_spec(src)) as late:
            assert [item[1].path for item in await late.initial()] == first
            assert len(first) == 13


async def test_the_first_snapshot_is_sorted_by_path_with_every_record(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in ("b.py", "a/z.py", "a/b.py", "a/b/c.py", "a/b0.py", "a/b-x.py"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("X = 1\n")
    store = CheckpointStore(tmp_path / "state")
    for _start in ("cold", "warm"):
        async with _subscribers(SourceIndexes(store), _spec(src), 1) as (sub,):
            items = await sub.initial()
            keys = [str(event.path) for _root, event, _record in items]
            assert keys == sorted(keys) == sorted(sub.index.records)
            assert all(record is sub.index.records[str(event.path)] and root == src
                       and event.kind is FileEventKind.EXISTING
                       for root, event, record in items)


async def test_a_torn_last_append_and_a_change_while_down_are_parsed_again(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    _tree(src, files=3)
    edited, changed = src / "pkg0" / "sub" / "m0.py", src / "pkg1" / "sub" / "m1.py"
    store = CheckpointStore(tmp_path / "state")
    async with _subscribers(SourceIndexes(store), _spec(src), 1) as (sub,):
        journal = sub.index.journal
        assert journal is not None
        await drained()
        size = journal.path.stat().st_size
        edited.write_text("import json\nimport sys\n")
        record = await _next(sub, FileEventKind.CLOSED, "m0.py")
        assert record is not None and record.facts is not None
    grown = journal.path.stat().st_size
    assert grown > size  # the edit's frame, appended at the end
    with open(journal.path, "r+b") as fh:  # a kill -9 in the middle of that append
        fh.truncate(size + (grown - size) // 2)
    changed.write_text("import zlib\n")  # and a change while the service was down
    async with _subscribers(SourceIndexes(store), _spec(src), 1) as (sub,):
        index = sub.index
        assert index.counters["files_parsed"] == 2 and index.counters["files_reused"] == 2
        imports = {p: r.facts.imports.required for p, r in index.records.items() if r.facts}
        assert imports[str(edited)] == {"json", "sys"} and imports[str(changed)] == {"zlib"}
    async with _subscribers(SourceIndexes(store), _spec(src), 1) as (sub,):
        assert sub.index.counters["files_parsed"] == 0  # both saved again, the tear gone
