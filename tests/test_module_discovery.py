"""module_discovery on real files with real inotify: baseline, new modules, renames,
vanishing modules, restarts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path, PurePath
from typing import Any

import pytest

from kloros_stream.analysis.flows import FlowConfig
from kloros_stream.analysis.pysource import is_test_path
from kloros_stream.monitors.module_discovery import (
    ModuleDiscoveryMonitor,
    Scanned,
    is_module,
    is_module_path,
    scanned_of,
)
from kloros_stream.sources.index import SourceSpec, load_record
from tests.support.fakes import ListPublisher, MonitorRun, make_context, make_monitor
from tests.support.scripted import wait_until

MODULE = '''"""Wake-word detection for the voice loop."""
import numpy
try:
    import onnxruntime
except ImportError:
    onnxruntime = None

class WakeDetector: ...
def detect(): ...
def _private(): ...
'''


class Running(MonitorRun):
    """A module_discovery monitor task; ``barrier`` proves earlier events were handled."""

    def __init__(self, monitor: ModuleDiscoveryMonitor, pub: ListPublisher, src: Path) -> None:
        super().__init__(monitor, pub)
        self.src = src
        self._barriers = 0

    async def barrier(self) -> None:
        """A new module we wait for: every earlier event has been handled."""
        self._barriers += 1
        name = f"barrier{self._barriers}"
        (self.src / f"{name}.py").write_text("X = 1\n")
        await self.wait(lambda s: any(x.gap_name == name for x in s))

    def names(self) -> list[tuple[str, bool]]:
        return [
            (s.gap_name, s.resolved)
            for s in self.pub.signals
            if not s.gap_name.startswith("barrier")
        ]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "old.py").write_text("def f(): ...\n")
    return root


@pytest.fixture
async def start(tmp_path: Path, src: Path) -> AsyncIterator[Callable[..., Any]]:
    running: list[Running] = []

    async def _start() -> Running:
        data = {"monitors": {"module_discovery": {"roots": ["src"]}}}
        monitor, pub = make_monitor(ModuleDiscoveryMonitor, tmp_path, data)
        run = Running(monitor, pub, src)
        running.append(run)
        await wait_until(lambda: "modules" in monitor.ctx.status.details, what="initial scan")
        return run

    yield _start
    for run in running:
        await run.stop()


async def test_baseline_is_silent_and_a_new_module_is_announced_with_a_quick_scan(
    start: Callable[..., Any], src: Path
) -> None:
    run = await start()
    assert run.pub.signals == []
    assert run.monitor.ctx.status.details["modules"] == 2
    (src / "pkg" / "voice").mkdir()
    (src / "pkg" / "voice" / "wake.py").write_text(MODULE)
    await run.wait(lambda s: len(s) == 1)
    gap = run.pub.signals[0]
    assert gap.gap_name == "pkg.voice.wake"
    assert gap.ecosystem == "discovery"
    facts = gap.facts
    assert facts["gap_type"] == "new_module"
    assert facts["file"] == "pkg/voice/wake.py"
    assert facts["path"] == str(src / "pkg" / "voice" / "wake.py")
    assert facts["classes"] == ["WakeDetector"]
    assert facts["functions"] == ["detect"]
    assert facts["docstring"] == "Wake-word detection for the voice loop."
    assert facts["imports"] == ["numpy", "onnxruntime"]


async def test_test_files_are_not_modules(start: Callable[..., Any], src: Path) -> None:
    run = await start()
    (src / "tests").mkdir()
    (src / "tests" / "helpers.py").write_text("")
    (src / "pkg" / "test_thing.py").write_text("")
    (src / "pkg" / "thing_test.py").write_text("")
    (src / "conftest.py").write_text("")
    (src / "pkg" / "notes.txt").write_text("")
    await run.barrier()
    assert run.names() == []


async def test_rename_is_not_new_and_vanishing_resolves(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    run = await start()
    (src / "pkg" / "old.py").rename(src / "pkg" / "renamed.py")
    await run.barrier()
    assert run.names() == []

    (src / "pkg" / "fresh.py").write_text("def g(): ...\n")
    await run.wait(lambda s: ("pkg.fresh", False) in run.names())
    (src / "pkg" / "fresh.py").rename(src / "pkg" / "fresher.py")
    await run.wait(lambda s: ("pkg.fresher", False) in run.names())
    assert run.names() == [("pkg.fresh", False), ("pkg.fresh", True), ("pkg.fresher", False)]

    (src / "pkg" / "fresher.py").rename(tmp_path / "gone.py")  # moved out: vanished
    await run.wait(lambda s: ("pkg.fresher", True) in run.names())


async def test_moved_in_from_outside_is_new(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    run = await start()
    (tmp_path / "incoming.py").write_text(MODULE)
    (tmp_path / "incoming.py").rename(src / "pkg" / "arrived.py")
    await run.wait(lambda s: run.names() == [("pkg.arrived", False)])
    assert run.pub.signals[0].facts["classes"] == ["WakeDetector"]


async def test_module_announced_when_written_not_when_created(
    start: Callable[..., Any], src: Path
) -> None:
    run = await start()
    path = src / "pkg" / "growing.py"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, MODULE.encode())
    os.close(fd)
    await run.wait(lambda s: run.names() == [("pkg.growing", False)])
    assert run.pub.signals[0].facts["functions"] == ["detect"]


async def test_new_module_that_does_not_parse_is_still_announced(
    start: Callable[..., Any], src: Path
) -> None:
    run = await start()
    (src / "pkg" / "broken.py").write_text("def oops(:\n")
    await run.wait(lambda s: len(s) == 1)
    assert "does not parse" in run.pub.signals[0].facts["scan_problem"]


async def test_restart_reannounces_nothing_but_reports_changes_while_down(
    start: Callable[..., Any], src: Path
) -> None:
    first = await start()
    (src / "pkg" / "fresh.py").write_text("X = 1\n")
    await first.wait(lambda s: len(s) == 1)
    await first.stop()

    second = await start()
    assert second.pub.signals == []
    await second.stop()

    (src / "pkg" / "fresh.py").unlink()
    (src / "pkg" / "while_down.py").write_text("Y = 2\n")
    third = await start()
    assert sorted(third.names()) == [("pkg.fresh", True), ("pkg.while_down", False)]
    assert (
        third.pub.signals[-1]
        .facts["gap_reason"]
        .endswith("(appeared while the service was not running)")
    )


def _settled(run: Running) -> bool:
    """No module waiting to be announced and no vanished root waiting to be judged."""
    details = run.monitor.ctx.status.details
    return details.get("pending") == 0 and details.get("suspended", 0) == 0


async def test_root_moved_away_and_back_announces_and_resolves_nothing(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    run = await start()
    (src / "pkg" / "fresh.py").write_text("X = 1\n")
    await run.wait(lambda s: run.names() == [("pkg.fresh", False)])
    away = tmp_path / "src_gone"
    src.rename(away)  # mv src src_gone; mv src_gone src
    away.rename(src)
    await run.barrier()
    await wait_until(lambda: _settled(run), what="settled")
    assert run.names() == [("pkg.fresh", False)]
    assert run.monitor.ctx.status.details["modules"] == 4  # 2 baseline, fresh, barrier1


async def test_root_back_without_a_module_resolves_only_that_one(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    run = await start()
    (src / "pkg" / "fresh.py").write_text("X = 1\n")
    (src / "pkg" / "kept.py").write_text("Y = 1\n")
    await run.wait(lambda s: len(run.names()) == 2)
    away = tmp_path / "src_gone"
    src.rename(away)
    details = run.monitor.ctx.status.details
    await wait_until(lambda: details.get("suspended") == 4, what="root seen gone")
    assert details["modules"] == 4  # a vanished root forgets nothing
    (away / "pkg" / "fresh.py").unlink()  # gone while the root was away: resolves
    (away / "pkg" / "old.py").unlink()  # a baseline module: forgotten quietly
    away.rename(src)
    await run.wait(lambda s: ("pkg.fresh", True) in run.names())
    await run.barrier()
    await wait_until(lambda: _settled(run), what="settled")
    assert sorted(run.names()) == [("pkg.fresh", False), ("pkg.fresh", True), ("pkg.kept", False)]
    (src / "pkg" / "old.py").write_text("def f(): ...\n")  # back later: a new module
    await run.wait(lambda s: ("pkg.old", False) in run.names())


async def test_root_back_empty_resolves_its_modules(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    run = await start()
    (src / "pkg" / "fresh.py").write_text("X = 1\n")
    await run.wait(lambda s: run.names() == [("pkg.fresh", False)])
    src.rename(tmp_path / "src_gone")
    details = run.monitor.ctx.status.details
    await wait_until(lambda: details.get("suspended") == 3, what="root seen gone")
    src.mkdir()  # back, empty: no file event at all
    await run.wait(lambda s: ("pkg.fresh", True) in run.names())
    await wait_until(lambda: _settled(run) and details["modules"] == 0, what="forgotten")


async def test_restart_while_the_root_is_missing_keeps_the_baseline(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    first = await start()
    (src / "pkg" / "fresh.py").write_text("X = 1\n")
    await first.wait(lambda s: len(s) == 1)
    await first.stop()
    away = tmp_path / "src_gone"
    src.rename(away)
    second = await start()
    details = second.monitor.ctx.status.details
    assert details["modules"] == 3 and details["suspended"] == 3
    away.rename(src)
    await second.barrier()
    await wait_until(lambda: _settled(second), what="settled")
    assert second.names() == []


async def test_one_shot_returns_without_gaps(tmp_path: Path, src: Path) -> None:
    ctx, pub = make_context(
        "module_discovery",
        tmp_path,
        {"monitors": {"module_discovery": {"roots": ["src"]}}},
        one_shot=True,
    )
    await asyncio.wait_for(ModuleDiscoveryMonitor(ctx).run(), timeout=10)
    assert pub.signals == []


def test_is_module_and_scanned_of(tmp_path: Path) -> None:
    assert is_module(tmp_path, tmp_path / "pkg" / "a.py")
    assert not is_module(tmp_path, tmp_path / "tests" / "a.py")
    assert not is_module(tmp_path, tmp_path / "pkg" / "a.pyc")
    (tmp_path / "big.py").write_text("x = 1\n" * 100)
    spec = SourceSpec((tmp_path,), (), 10, FlowConfig())

    def scan_file(path: Path) -> Scanned:
        return scanned_of(load_record(path, tmp_path, None, spec, trust_stat=False)[0], 10)

    assert "not scanned" in scan_file(tmp_path / "big.py").problem
    assert "unreadable" in scan_file(tmp_path / "missing.py").problem


def test_is_module_path_agrees_with_the_path_rules() -> None:
    root = PurePath("/w/src")
    names = ["a.py", ".py", "..py", "a.pyc", "a.pyi", "test_a.py", "a_test.py", "conftest.py",
             "tests.py", "test.py", "atest_.py", "x.py.py", "a", "test_"]
    dirs = ["", "pkg", "tests", "pkg/test", "pkg/tests/sub", "testsuite", "pkg/mytests", "t"]
    for d in dirs:
        for name in names:
            path = root / d / name
            rel = path.relative_to(root)
            expected = path.suffix == ".py" and not is_test_path(rel)
            assert is_module_path(str(root), str(path)) is expected, rel
    assert is_module_path("/", "/pkg/a.py") and not is_module_path("/", "/tests/a.py")
