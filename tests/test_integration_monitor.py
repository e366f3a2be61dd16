"""integration monitor on real files with real inotify (no service): gaps, resolutions,
incremental re-parsing, checkpoint restarts, one-shot scans."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from kloros_stream.analysis.flow_index import Channel, ChannelKind
from kloros_stream.models import Signal
from kloros_stream.monitors.integration import IntegrationMonitor
from kloros_stream.monitors.ledger import Debouncer
from kloros_stream.sources.tree import scan_once
from tests.support.fakes import (
    ListPublisher,
    MonitorRun,
    make_context,
    make_monitor,
    running_monitor,
)
from tests.support.scripted import wait_until

PRODUCER = "class Worker:\n    def feed(self, x):\n        self.pending.append(x)\n"
CONSUMER = "def drain(worker):\n    return worker.pending.popleft()\n"
CHANNEL = "pkg.worker.Worker.pending"


class Running(MonitorRun):
    """An integration monitor task; ``barrier`` proves earlier events were handled."""

    def __init__(self, monitor: IntegrationMonitor, pub: ListPublisher, src: Path) -> None:
        super().__init__(monitor, pub)
        self.src = src
        self._barriers = 0

    async def barrier(self) -> None:
        """Write a file whose orphan topic we wait for: every earlier event is handled."""
        self._barriers += 1
        name = f"BARRIER_{self._barriers}"
        (self.src / f"barrier_{self._barriers}.py").write_text(f'emit("{name}")\n')
        await self.wait(lambda s: any(x.gap_name == name for x in s))

    def named(self, gap_name: str) -> list[Signal]:
        return [s for s in self.pub.signals if s.gap_name == gap_name]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    return root


def config(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"monitors": {"integration": {"roots": ["src"], **(extra or {})}}}


@pytest.fixture
async def start(tmp_path: Path, src: Path) -> AsyncIterator[Callable[..., Any]]:
    running: list[Running] = []

    async def _start(extra: dict[str, Any] | None = None, ready: bool = True) -> Running:
        monitor, pub = make_monitor(IntegrationMonitor, tmp_path, config(extra))
        run = Running(monitor, pub, src)
        running.append(run)
        if ready:
            await wait_initial(monitor)
        return run

    yield _start
    for run in running:
        await run.stop()


async def wait_initial(monitor: IntegrationMonitor) -> None:
    """The initial scan is over once the status has a file count and the watch is live."""
    await wait_until(lambda: "files" in monitor.ctx.status.details, what="initial scan")


async def test_orphan_found_at_start_then_resolved_by_a_consumer_in_another_file(
    start: Callable[..., Any], src: Path
) -> None:
    (src / "pkg" / "worker.py").write_text(PRODUCER)
    run = await start()
    gaps = run.pub.gaps("orphaned_queue")
    assert [g.gap_name for g in gaps] == [CHANNEL]
    facts = gaps[0].facts
    assert facts["producers"] == ["pkg.worker:Worker.feed"]
    assert facts["sites"] == ["pkg/worker.py:3"]
    assert facts["files"] == ["pkg/worker.py"]
    assert facts["channel_kind"] == "attribute"
    assert gaps[0].ecosystem == "architecture"
    assert facts["gap_category"] == "integration"

    (src / "pkg" / "consumer.py").write_text(CONSUMER)
    await run.wait(lambda s: len(run.pub.resolutions("orphaned_queue")) == 1)
    resolved = run.pub.resolutions("orphaned_queue")[0]
    assert resolved.gap_name == CHANNEL
    assert resolved.facts["gap_reason"] == "it has a consumer now"

    (src / "pkg" / "consumer.py").unlink()
    await run.wait(lambda s: len(run.named(CHANNEL)) == 3)
    assert not run.named(CHANNEL)[-1].resolved


async def test_topic_orphan_and_subscriber(start: Callable[..., Any], src: Path) -> None:
    run = await start()
    (src / "pkg" / "pub.py").write_text('def go(bus):\n    bus.emit("VOICE_READY")\n')
    await run.wait(lambda s: [x.gap_name for x in s] == ["VOICE_READY"])
    assert run.pub.signals[0].facts["channel_kind"] == "topic"
    (src / "pkg" / "sub.py").write_text('sub = ChemSub("VOICE_READY", print)\n')
    await run.wait(lambda s: len(s) == 2 and s[1].resolved)


async def test_orphan_evidence_quotes_the_code_and_follows_it(
    start: Callable[..., Any], src: Path
) -> None:
    run = await start()
    pub = src / "pkg" / "pub.py"
    pub.write_text(
        'def go(bus):\n    bus.emit(\n        "VOICE_READY",\n        facts={},\n    )\n'
    )
    await run.wait(lambda s: [x.gap_name for x in s] == ["VOICE_READY"])
    facts = run.pub.signals[0].facts
    assert facts["producer_lines"] == ['pkg/pub.py:2: bus.emit( "VOICE_READY", facts={}, )']
    # The producing code changes, the orphan stays: announced again with the new code.
    pub.write_text('def go(bus):\n    bus.emit("VOICE_READY", facts={"n": 1})\n')
    await run.wait(lambda s: len(s) == 2)
    assert run.pub.signals[1].facts["producer_lines"] == [
        'pkg/pub.py:2: bus.emit("VOICE_READY", facts={"n": 1})'
    ]
    (src / "pkg" / "sub.py").write_text('x = 1\nsub = ChemSub("VOICE_READY", print)\n')
    await run.wait(lambda s: len(s) == 3 and s[2].resolved)
    assert run.pub.signals[2].facts["consumer_line"] == (
        'pkg/sub.py:2: sub = ChemSub("VOICE_READY", print)'
    )


async def test_evidence_drops_a_producer_removed_while_another_remains(
    start: Callable[..., Any], src: Path
) -> None:
    run = await start()
    (src / "pkg" / "one.py").write_text('def go(bus):\n    bus.emit("VOICE_READY")\n')
    (src / "pkg" / "two.py").write_text('def run(bus):\n    bus.emit("VOICE_READY")\n')
    await run.wait(lambda s: any(
        len(x.facts.get("producer_lines", ())) == 2 for x in run.named("VOICE_READY")))
    (src / "pkg" / "two.py").write_text("def run(bus):\n    return None\n")
    await run.wait(lambda s: run.named("VOICE_READY")[-1].facts["producer_lines"] == [
        "pkg/one.py:2: bus.emit(\"VOICE_READY\")"])
    last = run.named("VOICE_READY")[-1]
    assert not last.resolved and last.facts["sites"] == ["pkg/one.py:2"]


@pytest.mark.parametrize("fold_kept", [True, False])
async def test_evidence_quoting_an_edited_file_is_refreshed_after_a_restart(
    start: Callable[..., Any], src: Path, tmp_path: Path, fold_kept: bool
) -> None:
    """The lines announced are in the announced-gaps checkpoint: whether the restart
    takes the saved flow index or folds again, an edit still refreshes them."""
    (src / "pkg" / "one.py").write_text('def go(bus):\n    bus.emit("VOICE_READY")\n')
    (src / "pkg" / "two.py").write_text('def run(bus):\n    bus.emit("VOICE_READY")\n')
    first = await start()
    assert len(first.named("VOICE_READY")[-1].facts["producer_lines"]) == 2
    await first.stop()
    if not fold_kept:
        (tmp_path / "var" / "state" / "integration" / "flow_index.fold").unlink()
    second = await start()
    assert second.monitor.fold_restored is fold_kept and second.pub.signals == []
    (src / "pkg" / "two.py").write_text("def run(bus):\n    return None\n")
    await second.wait(lambda s: any(x.facts.get("producer_lines") == [
        "pkg/one.py:2: bus.emit(\"VOICE_READY\")"] for x in second.named("VOICE_READY")))


async def test_syntax_error_gap_then_fixed(start: Callable[..., Any], src: Path) -> None:
    run = await start()
    bad = src / "pkg" / "bad.py"
    bad.write_text("x = 1\ndef broken(:\n    pass\n")
    await run.wait(lambda s: len(run.pub.gaps("syntax_error")) == 1)
    gap = run.pub.gaps("syntax_error")[0]
    assert gap.gap_name == "pkg/bad.py"
    assert gap.facts["line"] == 2
    assert gap.facts["message"]
    bad.write_text("x = 1\n")
    await run.wait(lambda s: len(run.pub.resolutions("syntax_error")) == 1)
    assert run.pub.resolutions("syntax_error")[0].gap_name == "pkg/bad.py"


async def test_syntax_error_keeps_the_last_good_flows(start: Callable[..., Any], src: Path) -> None:
    (src / "pkg" / "worker.py").write_text(PRODUCER)
    (src / "pkg" / "consumer.py").write_text(CONSUMER)
    run = await start()
    (src / "pkg" / "consumer.py").write_text(CONSUMER + "def oops(:\n")
    await run.wait(lambda s: len(run.pub.gaps("syntax_error")) == 1)
    await run.barrier()
    assert not run.named(CHANNEL)


async def test_modified_without_close_is_not_parsed(start: Callable[..., Any], src: Path) -> None:
    run = await start()
    path = src / "pkg" / "slow.py"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"class W:\n    def f(self, x):\n        self.q.append(x)\n")
        await run.barrier()
        assert not run.named("pkg.slow.W.q")
    finally:
        os.close(fd)
    await run.wait(lambda s: len(run.named("pkg.slow.W.q")) == 1)


async def test_unchanged_rewrite_is_not_reannounced(start: Callable[..., Any], src: Path) -> None:
    (src / "pkg" / "worker.py").write_text(PRODUCER)
    run = await start()
    parsed = run.monitor.stats["parsed"]
    (src / "pkg" / "worker.py").write_text(PRODUCER)
    await run.barrier()
    assert run.monitor.stats["parsed"] == parsed + 1  # only the barrier file
    assert len(run.named(CHANNEL)) == 1


async def test_rename_within_tree_and_move_out(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    (src / "pkg" / "worker.py").write_text(PRODUCER)
    (src / "pkg" / "consumer.py").write_text(CONSUMER)
    run = await start()
    assert not run.pub.signals
    (src / "pkg" / "consumer.py").rename(src / "pkg" / "reader.py")
    await run.barrier()
    assert not run.named(CHANNEL)  # the consumer moved, it did not go away

    (src / "pkg" / "worker.py").rename(src / "pkg" / "labour.py")
    await run.barrier()
    assert not run.named("pkg.labour.Worker.pending")

    (src / "pkg" / "reader.py").rename(tmp_path / "reader.py")  # out of the tree
    await run.wait(lambda s: len(run.named("pkg.labour.Worker.pending")) == 1)
    (src / "pkg" / "labour.py").unlink()
    await run.wait(lambda s: len(run.named("pkg.labour.Worker.pending")) == 2)
    resolved = run.named("pkg.labour.Worker.pending")[-1]
    assert resolved.resolved
    assert resolved.facts["gap_reason"] == "its producer went away"


async def test_file_moved_in_from_outside_is_parsed(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    run = await start()
    outside = tmp_path / "incoming.py"
    outside.write_text(PRODUCER)
    outside.rename(src / "pkg" / "worker.py")
    await run.wait(lambda s: [x.gap_name for x in s] == [CHANNEL])


async def test_directory_copied_in_is_parsed(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    run = await start()
    staged = tmp_path / "staged" / "sub"
    staged.mkdir(parents=True)
    (staged / "worker.py").write_text(PRODUCER)
    (tmp_path / "staged").rename(src / "pkg" / "newdir")
    await run.wait(lambda s: [x.gap_name for x in s] == ["pkg.newdir.sub.worker.Worker.pending"])


async def test_too_large_file_is_skipped_and_logged(start: Callable[..., Any], src: Path) -> None:
    run = await start({"max_file_bytes": 200})
    (src / "pkg" / "huge.py").write_text(PRODUCER + "#" * 400 + "\n")
    await run.barrier()
    assert run.monitor.stats["too_large"] == 1
    assert not run.named(CHANNEL)
    assert not run.task.done()


async def test_excluded_directories_are_ignored(start: Callable[..., Any], src: Path) -> None:
    (src / ".venv" / "lib").mkdir(parents=True)
    (src / ".venv" / "lib" / "dep.py").write_text(PRODUCER)
    run = await start()
    (src / ".venv" / "lib" / "dep2.py").write_text('emit("IN_VENV")\n')
    await run.barrier()
    assert [s.gap_name for s in run.pub.signals] == ["BARRIER_1"]


async def test_restart_reparses_only_changed_files_and_reannounces_nothing(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    (src / "pkg" / "worker.py").write_text(PRODUCER)
    (src / "pkg" / "bad.py").write_text("def oops(:\n")
    for i in range(5):
        (src / "pkg" / f"plain{i}.py").write_text(f"X = {i}\n")
    (src / "pkg" / "other.py").write_text('emit("LONELY")\n')
    first = await start()
    assert {s.gap_name for s in first.pub.signals} == {CHANNEL, "pkg/bad.py", "LONELY"}
    await first.stop()
    state = tmp_path / "var" / "state" / "integration" / "index.json"
    assert state.is_file()
    assert first.monitor.files == {} and len(first.monitor.index) == 0  # freed at the stop

    # While down: one orphan resolved, one new orphan, one file deleted.
    (src / "pkg" / "consumer.py").write_text(CONSUMER)
    (src / "pkg" / "other.py").unlink()
    (src / "pkg" / "plain0.py").write_text('emit("FRESH")\n')

    second = await start()
    names = sorted((s.gap_name, s.resolved) for s in second.pub.signals)
    assert names == [("FRESH", False), ("LONELY", True), (CHANNEL, True)]
    stats = second.monitor.stats
    assert stats["parsed"] == 2  # consumer.py and plain0.py
    assert stats["reused"] == 6
    assert not second.monitor.fold_restored  # files changed while down: folded again
    await second.stop()
    assert (state.parent / "flow_index.fold").is_file()

    third = await start()
    assert third.pub.signals == []
    assert third.monitor.stats["parsed"] == 0
    assert third.monitor.fold_restored  # nothing changed: the flow index as saved
    # The restored index keeps following the tree.
    (src / "pkg" / "consumer.py").unlink()
    await third.wait(lambda s: [x.gap_name for x in s] == [CHANNEL])
    (src / "pkg" / "plain0.py").write_text("X = 0\n")
    await third.wait(lambda s: ("FRESH", True) in {(x.gap_name, x.resolved) for x in s})


async def test_corrupt_checkpoint_starts_fresh(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    (src / "pkg" / "worker.py").write_text(PRODUCER)
    state = tmp_path / "var" / "state" / "integration" / "index.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"format": 1, "files": {"x": {"size": "nope"}}, "index": 7}')
    run = await start()
    assert [s.gap_name for s in run.pub.signals] == [CHANNEL]


async def test_one_shot_publishes_current_gaps_and_returns(tmp_path: Path, src: Path) -> None:
    (src / "pkg" / "worker.py").write_text(PRODUCER)
    (src / "pkg" / "bad.py").write_text("def oops(:\n")
    ctx, pub = make_context("integration", tmp_path, config(), one_shot=True)
    await asyncio.wait_for(IntegrationMonitor(ctx).run(), timeout=20)
    assert sorted(s.gap_name for s in pub.signals) == [CHANNEL, "pkg/bad.py"]


async def test_missing_root_is_watched_until_it_appears(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    data = {"monitors": {"integration": {"roots": ["later/src"]}}}
    async with running_monitor(IntegrationMonitor, tmp_path, data) as (monitor, pub):
        await wait_initial(monitor)
        (tmp_path / "later" / "src").mkdir(parents=True)
        (tmp_path / "later" / "src" / "m.py").write_text('emit("LATE")\n')
        await pub.wait_for(lambda s: [x.gap_name for x in s] == ["LATE"])


async def test_debouncer_coalesces_and_never_writes_older_data() -> None:
    written: list[int] = []
    state = {"n": 0}
    saver = Debouncer(0.05, lambda: state["n"], written.append)
    for n in range(1, 4):
        state["n"] = n
        saver.mark()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not written:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    assert written == [3]
    saver._write(1, 1)  # a late, older snapshot is dropped
    state["n"] = 4
    saver.mark()
    saver.flush()
    assert written == [3, 4]
    saver.flush()
    assert written == [3, 4]


async def test_scan_once_uses_the_watcher_rules(tmp_path: Path) -> None:
    for rel in ("a.py", "b.txt", "node_modules/c.py", "pkg/d.py", "pkg/__pycache__/e.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    found = [
        event.path.relative_to(tmp_path).as_posix()
        async for _root, event in scan_once(
            [tmp_path], ["node_modules", "__pycache__"], lambda _r, p: p.suffix == ".py"
        )
    ]
    assert sorted(found) == ["a.py", "pkg/d.py"]


# -- end to end through a real service ----------------------------------------------------


def test_facts_that_do_not_decode_cost_their_file_only(tmp_path: Path) -> None:
    from kloros_stream.analysis.capabilities import FileImports
    from kloros_stream.analysis.flows import FlowConfig
    from kloros_stream.analysis.source_facts import DamagedFacts, PackedFacts, facts_of
    from kloros_stream.sources.records import FileRecord

    monitor, _pub = make_monitor(IntegrationMonitor, tmp_path, config())
    good = PackedFacts.pack(facts_of(b'emit("T")\n', "good", FlowConfig(), "good.py"))
    damaged = PackedFacts(FileImports(frozenset(), frozenset()), b"\x00 not zlib")
    with pytest.raises(DamagedFacts):
        damaged.flows  # noqa: B018
    for name, facts in (("bad", damaged), ("good", good)):
        monitor._apply(FileRecord(f"/src/{name}.py", "/src", name, 1, 1, "h", facts))
    assert "/src/bad.py" in monitor.files and "/src/bad.py" not in monitor.index
    assert Channel(ChannelKind.TOPIC, "T") in monitor.index.orphans()


def test_paths_are_quoted_relative_to_their_deepest_root(tmp_path: Path, src: Path) -> None:
    roots = config({"roots": ["src", "src/pkg"]})
    monitor, _pub = make_monitor(IntegrationMonitor, tmp_path, roots)
    assert monitor._relative(str(src / "pkg" / "worker.py")) == "worker.py"
    assert monitor._relative(str(src / "top.py")) == "top.py"
    assert monitor._relative(str(src / "pkg2" / "x.py")) == "pkg2/x.py"  # not under src/pkg
    assert monitor._relative("/elsewhere/x.py") == "/elsewhere/x.py"


async def test_a_restart_taking_the_saved_index_publishes_what_a_fold_publishes(
    start: Callable[..., Any], src: Path, tmp_path: Path
) -> None:
    """After a run with edits, the same live edits publish the same signals whether the
    restart took the saved flow index or folded the records again."""
    import shutil

    files = {
        "ca.py": 'A = "T"\n', "cb.py": 'B = "T"\n',
        "pa.py": "from pkg import ca\ndef go(bus):\n    bus.emit(ca.A)\n",
        "pb.py": "from pkg import cb\ndef go(bus):\n    bus.emit(cb.B)\n",
        "c.py": 'def on(b):\n    ChemSub("T")\n', "worker.py": PRODUCER,
    }
    for name, text in files.items():
        (src / "pkg" / name).write_text(text)
    first = await start()
    for text in ('A = "U"\n', 'A = "T"\n'):  # away and back: the maps' order changes
        (src / "pkg" / "ca.py").write_text(text)
        await first.barrier()
    await first.stop()
    state = tmp_path / "var" / "state"
    shutil.copytree(state, tmp_path / "saved")

    async def edits(fold_kept: bool) -> list[tuple[str, bool, dict[str, Any]]]:
        shutil.rmtree(state)
        shutil.copytree(tmp_path / "saved", state)
        if not fold_kept:
            (state / "integration" / "flow_index.fold").unlink()
        run = await start()
        assert run.monitor.fold_restored is fold_kept and run.pub.signals == []
        run._barriers = 10  # past the first run's barrier files
        (src / "pkg" / "c.py").unlink()  # one at a time: the code quoted is read from disk
        await run.barrier()
        (src / "pkg" / "pb.py").write_text("def go(bus):\n    return None\n")
        await run.barrier()
        (src / "pkg" / "consumer.py").write_text(CONSUMER)
        await run.barrier()
        await run.stop()
        for name, text in files.items():  # as they were, for the other restart
            (src / "pkg" / name).write_text(text)
        (src / "pkg" / "consumer.py").unlink()
        for n in (11, 12, 13):
            (src / f"barrier_{n}.py").unlink()
        return [(s.gap_name, s.resolved, {k: v for k, v in s.facts.items()
                                           if k not in ("observed_at", "ts")})
                for s in run.pub.signals if not s.gap_name.startswith("BARRIER")]

    warm, cold = await edits(True), await edits(False)
    assert warm == cold
    assert ("T", False) in [(n, r) for n, r, _f in warm]
