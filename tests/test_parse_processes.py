"""Parse processes (real child interpreters): the same records as the parse thread, the
previous facts joined back, and nothing lost when a child dies mid-batch."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from kloros_stream.analysis.flows import FlowConfig
from kloros_stream.sources import parse_processes
from kloros_stream.sources.parse_processes import load_in_processes, load_large
from kloros_stream.sources.records import FileRecord, Job, Loaded, SourceSpec, load_batch

PACKAGE = Path(__file__).resolve().parent.parent / "kloros_stream"


def _tree(root: Path, copies: int = 1) -> list[Path]:
    """Copies of this repository's own package: real, varied code."""
    files = []
    for n in range(copies):
        for src in sorted(PACKAGE.rglob("*.py")):
            dest = root / f"copy{n}" / src.relative_to(PACKAGE)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            files.append(dest)
    return files


def _spec(root: Path) -> SourceSpec:
    return SourceSpec((root,), (), 2_000_000, FlowConfig())


def _jobs(root: Path, files: list[Path], previous: dict[str, FileRecord] | None = None
          ) -> list[Job]:
    return [(p, root, (previous or {}).get(str(p))) for p in files]


async def _in_processes(jobs: list[Job], spec: SourceSpec, **kw: object) -> dict[str, Loaded]:
    out: dict[str, Loaded] = {}
    with ThreadPoolExecutor(1) as fallback:
        await load_in_processes(jobs, spec, fallback,
                                lambda _c, loaded: out.update((str(x[0]), x) for x in loaded),
                                **kw)  # type: ignore[arg-type]
    return out


def _facts(loaded: Loaded) -> object:
    record = loaded[1]
    assert record is not None
    return record.facts.to_json() if record.facts is not None else record.error


def test_the_same_records_as_the_parse_thread(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    (tmp_path / "broken.py").write_text("def f(:\n")
    files.append(tmp_path / "broken.py")
    spec = _spec(tmp_path)
    here = {str(x[0]): x for x in load_batch(_jobs(tmp_path, files), spec)}
    there = asyncio.run(_in_processes(_jobs(tmp_path, files), spec, workers=2))
    assert set(there) == set(here) and len(there) == len(files) > 64
    for path, loaded in here.items():
        assert _facts(there[path]) == _facts(loaded), path
        assert there[path][2] is True  # parsed
        mine, theirs = loaded[1], there[path][1]
        assert mine is not None and theirs is not None
        assert (theirs.path, theirs.root, theirs.module, theirs.size, theirs.mtime_ns,
                theirs.sha256, theirs.skipped, theirs.detail) == (
                    mine.path, mine.root, mine.module, mine.size, mine.mtime_ns,
                    mine.sha256, mine.skipped, mine.detail), path
    assert there[str(tmp_path / "broken.py")][1].error is not None  # type: ignore[union-attr]


def test_previous_facts_come_back_for_unchanged_and_broken_files(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    spec = _spec(tmp_path)
    previous = {str(p): r for p, r, _ in load_batch(_jobs(tmp_path, files), spec) if r}
    same, broken = files[0], files[1]
    os.utime(same, ns=(1, 1))  # touched, same content
    broken.write_text("def f(:\n")
    again = asyncio.run(_in_processes(_jobs(tmp_path, [same, broken], previous), spec))
    unchanged = again[str(same)]
    assert unchanged[2] is False  # not parsed: the content hash matched
    assert unchanged[1].facts is previous[str(same)].facts  # type: ignore[union-attr]
    assert unchanged[1].mtime_ns == 1  # type: ignore[union-attr]
    kept = again[str(broken)][1]
    assert kept is not None and kept.error is not None
    assert kept.facts is previous[str(broken)].facts


def test_previous_facts_come_back_for_skipped_files(tmp_path: Path) -> None:
    """A file that grew past ``max_file_bytes`` or cannot be read keeps its last facts
    when a parse process loads it (the child never sees them)."""
    files = _tree(tmp_path)
    spec = _spec(tmp_path)
    previous = {str(p): r for p, r, _ in load_batch(_jobs(tmp_path, files), spec) if r}
    big, locked = files[0], files[1]
    big.write_text(big.read_text() + "#" * 3_000_000)
    locked.chmod(0)
    try:
        again = asyncio.run(_in_processes(_jobs(tmp_path, [big, locked], previous), spec))
    finally:
        locked.chmod(0o644)
    grown = again[str(big)][1]
    assert grown is not None and grown.skipped == "too_large"
    assert grown.facts is previous[str(big)].facts
    unreadable = again[str(locked)][1]
    assert unreadable is not None
    if os.geteuid() != 0:  # root reads a mode-0 file anyway
        assert unreadable.skipped == "unreadable"
    assert unreadable.facts is not None
    assert unreadable.facts.to_json() == previous[str(locked)].facts.to_json()


def test_a_child_killed_mid_batch_loses_nothing(tmp_path: Path, caplog: object) -> None:
    files = _tree(tmp_path, copies=3)
    spec = _spec(tmp_path)
    out: dict[str, Loaded] = {}
    deliveries: dict[str, int] = {}
    killed: list[int] = []

    def on_loaded(_chunk: list[Job], loaded: list[Loaded]) -> None:
        out.update((str(x[0]), x) for x in loaded)
        for x in loaded:
            deliveries[str(x[0])] = deliveries.get(str(x[0]), 0) + 1
        if not killed:  # the first answer: kill every parse process now
            for child in psutil.Process().children():
                if "parse_child" in " ".join(child.cmdline()):
                    child.send_signal(signal.SIGKILL)
                    killed.append(child.pid)

    async def main() -> None:
        with ThreadPoolExecutor(1) as fallback:
            await load_in_processes(_jobs(tmp_path, files), spec, fallback, on_loaded,
                                    workers=2)

    asyncio.run(main())
    assert killed
    assert set(out) == {str(p) for p in files}
    assert set(deliveries.values()) == {1}  # each file exactly once
    assert all(loaded[1] is not None and loaded[1].facts is not None for loaded in out.values())


def test_a_child_that_cannot_start_leaves_the_work_to_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _tree(tmp_path)
    monkeypatch.setattr(parse_processes.sys, "executable", str(tmp_path / "no-such-python"))
    out = asyncio.run(_in_processes(_jobs(tmp_path, files), _spec(tmp_path)))
    assert set(out) == {str(p) for p in files}


def test_a_large_file_is_loaded_in_a_process_of_its_own(tmp_path: Path) -> None:
    big = tmp_path / "big.py"
    big.write_text("".join(f"def f{i}(bus):\n    bus.emit('T{i}')\n" for i in range(20_000)))
    assert big.stat().st_size >= parse_processes.LARGE_FILE_BYTES

    async def main() -> Loaded:
        with ThreadPoolExecutor(1) as fallback:
            return await load_large(big, tmp_path, None, _spec(tmp_path), fallback)

    path, record, parsed = asyncio.run(main())
    assert path == big and parsed and record is not None and record.facts is not None
    assert "T19999" in record.facts.flows.topics_produced


def _children() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True)
            if "parse_child" in " ".join(c.cmdline())]


def test_a_cancel_mid_batch_stops_every_child_at_once(tmp_path: Path) -> None:
    files = _tree(tmp_path, copies=4)
    spec = _spec(tmp_path)
    answered: list[int] = []

    async def main() -> float:
        with ThreadPoolExecutor(1) as fallback:
            task = asyncio.create_task(load_in_processes(
                _jobs(tmp_path, files), spec, fallback,
                lambda _c, loaded: answered.append(len(loaded)), workers=2))
            while not answered:  # the children are at work
                await asyncio.sleep(0.01)
            started = asyncio.get_running_loop().time()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return asyncio.get_running_loop().time() - started

    took = asyncio.run(main())
    assert took < parse_processes.STOP_TIMEOUT_S + 1
    assert sum(answered) < len(files)  # it was cut short
    assert _children() == []


def test_a_large_file_in_a_small_batch_is_parsed_in_a_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kloros_stream.sources import index as index_module
    from kloros_stream.sources.index import SourceIndex

    big = tmp_path / "big.py"
    big.write_text("".join(f"def f{i}(bus):\n    bus.emit('T{i}')\n" for i in range(20_000)))
    (tmp_path / "small.py").write_text("X = 1\n")
    sent: list[list[str]] = []
    real = index_module.load_in_processes

    async def spy(jobs: list[Job], *args: object, **kw: object) -> None:
        sent.append([str(j[0]) for j in jobs])
        await real(jobs, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(index_module, "load_in_processes", spy)
    index = SourceIndex(_spec(tmp_path), None)
    asyncio.run(index.scan_once())
    assert sent == [[str(big)]]  # the small file stayed on the parse thread
    assert "T19999" in index.records[str(big)].facts.flows.topics_produced  # type: ignore[union-attr]
    assert index.records[str(tmp_path / "small.py")].facts is not None
