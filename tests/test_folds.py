"""FoldCheckpoint: a flow index saved with the fingerprint of its records comes back only
for the same records, behaves as a fresh fold of them, and never raises on damage."""

from __future__ import annotations

import pickle
from pathlib import Path

from structlog.testing import capture_logs

from kloros_stream.analysis.flow_index import Channel, ChannelKind, FlowIndex
from kloros_stream.analysis.flows import FlowConfig
from kloros_stream.analysis.source_facts import PackedFacts, facts_of
from kloros_stream.checkpoint import CheckpointStore
from kloros_stream.sources.folds import FoldCheckpoint, fingerprint
from kloros_stream.sources.records import FileRecord

SOURCES = {
    "pkg/bus.py": "TOPIC = 'ALERT'\nclass Bus:\n    def emit(self, topic): ...\n",
    "pkg/pub.py": "from pkg import bus\ndef go(b):\n    b.emit('VOICE_READY')\n"
                  "    b.emit(bus.TOPIC)\n    send(b, 'JOB_DONE')\n",
    "pkg/wrap.py": "def send(bus, topic):\n    bus.emit(topic)\n",
    "pkg/sub.py": "from pkg.bus import TOPIC\ndef on(b):\n    ChemSub(TOPIC)\n",
    "pkg/worker.py": "class Worker:\n    def feed(self, x):\n        self.pending.append(x)\n",
    "pkg/guarded.py": "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n",
}


def record(path: str, source: str) -> FileRecord:
    module = path.removesuffix(".py").replace("/", ".")
    facts = PackedFacts.pack(facts_of(source.encode(), module, FlowConfig(), path))
    return FileRecord(path=f"/t/{path}", root="/t", module=module, mtime_ns=1,
                      size=len(source), facts=facts)


def records(sources: dict[str, str]) -> dict[str, FileRecord]:
    return {r.path: r for r in (record(p, s) for p, s in sources.items())}


def fold(recs: dict[str, FileRecord]) -> FlowIndex:
    index = FlowIndex()
    index.begin_bulk()
    for r in recs.values():
        assert r.facts is not None
        index.update(r.path, r.facts.flows, packed=r.facts)
    index.end_bulk()
    return index


def behaviour(index: FlowIndex) -> dict[str, object]:
    """What the monitor reads of an index: orphans, their producers and consumers."""
    channels = sorted({*index.orphans(), Channel(ChannelKind.TOPIC, "ALERT"),
                       Channel(ChannelKind.TOPIC, "JOB_DONE")})
    return {
        "orphans": sorted(index.orphans()),
        "producers": {c.name: index.producers(c) for c in channels},
        "counts": {c.name: index.producer_count(c) for c in channels},
        "consumers": {c.name: index.consumer(c) for c in channels},
        "files": sorted(index.files),
    }


async def test_a_saved_fold_comes_back_for_the_same_records_and_behaves_as_a_fresh_one(
    tmp_path: Path,
) -> None:
    recs = records(SOURCES)
    saved = fold(recs)
    FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k").save([saved], recs)

    again = records(SOURCES)  # the next start: equal records, new objects
    loaded = await FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k").load(again)
    assert loaded is not None and len(loaded) == 1
    restored = loaded[0]
    assert isinstance(restored, FlowIndex)
    assert behaviour(restored) == behaviour(fold(again))
    for path, head in restored.files.items():
        assert head.source is again[path].facts  # packed facts are the records', not copies

    # It keeps working as a fold would: the same update gives the same changes.
    edit = record("pkg/listen.py", "def on(b):\n    ChemSub('VOICE_READY')\n")
    fresh = fold(again)
    assert edit.facts is not None
    delta = restored.update(edit.path, edit.facts.flows, packed=edit.facts)
    assert delta == fresh.update(edit.path, edit.facts.flows, packed=edit.facts)
    assert Channel(ChannelKind.TOPIC, "VOICE_READY") in delta.resolved
    assert behaviour(restored) == behaviour(fresh)


async def test_other_records_or_another_key_fold_again(tmp_path: Path) -> None:
    recs = records(SOURCES)
    changed = records({**SOURCES, "pkg/wrap.py": "def send(bus, topic):\n    return topic\n"})
    fewer = records({p: s for p, s in SOURCES.items() if p != "pkg/sub.py"})
    for key, other in (("k", changed), ("k", fewer), ("k2", records(SOURCES))):
        FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k").save([fold(recs)], recs)
        folds = FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", key)
        assert await folds.load(other) is None
    FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k").save([fold(recs)], recs)
    same = records(SOURCES)
    folds = FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k")
    assert await folds.load(same) is not None


def test_the_fingerprint_covers_imports_as_well_as_the_body() -> None:
    recs = records(SOURCES)
    base = fingerprint(recs.values())
    assert fingerprint(reversed(list(recs.values()))) == base  # order does not matter
    path = "/t/pkg/guarded.py"
    facts = recs[path].facts
    assert facts is not None
    moved = PackedFacts(facts.imports.__class__(
        required=facts.imports.optional, optional=frozenset(), dotted=facts.imports.dotted),
        facts.body)
    other = {**recs, path: FileRecord(path=path, root="/t", module="pkg.guarded",
                                      mtime_ns=1, size=1, facts=moved)}
    assert fingerprint(other.values()) != base


async def test_damaged_files_and_unsavable_states_are_logged_never_raised(tmp_path: Path) -> None:
    recs = records(SOURCES)
    folds = FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k")
    folds.save([fold(recs)], recs)
    whole = folds.path.read_bytes()
    header = pickle.loads(whole)  # the header comes first: checked before the state
    assert header == (1, header[1], fingerprint(recs.values()), 1)
    with capture_logs() as logs:
        for damaged in (whole[: len(whole) // 2], whole[:40] + b"\x00garbage" * 50, b""):
            folds.path.write_bytes(damaged)
            assert await FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k").load(
                recs) is None
    assert [e["event"] for e in logs] == ["fold_checkpoint_damaged"] * 3

    # A state pointing at packed facts of no record of the map is not saved.
    stranger = record("pkg/x.py", "emit('X')\n")
    with capture_logs() as logs:
        FoldCheckpoint(CheckpointStore(tmp_path), "f", "k").save([[stranger.facts]], recs)
    assert not (tmp_path / "f.fold").exists()
    assert [e["event"] for e in logs] == ["fold_checkpoint_not_saved"]


async def test_read_only_and_frozen_stores_neither_load_nor_save(tmp_path: Path) -> None:
    recs = records(SOURCES)
    store = CheckpointStore(tmp_path)
    FoldCheckpoint(store, "flow_index", "k").save([fold(recs)], recs)
    read_only = FoldCheckpoint(CheckpointStore(tmp_path, writable=False), "flow_index", "k")
    assert await read_only.load(recs) is None
    store.freeze()
    (tmp_path / "flow_index.fold").unlink()
    FoldCheckpoint(store, "flow_index", "k").save([fold(recs)], recs)
    assert not (tmp_path / "flow_index.fold").exists()


async def test_a_state_is_taken_once_and_only_data_is_unpickled(tmp_path: Path) -> None:
    """A loaded state's file is gone (a crash after the restore folds again); a file
    naming anything but our classes and plain containers is refused, never run."""
    recs = records(SOURCES)
    folds = FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k")
    folds.save([fold(recs)], recs)
    assert await folds.load(recs) is not None
    assert not folds.path.exists() and await folds.load(recs) is None

    class Boom:
        def __reduce__(self) -> tuple[object, ...]:
            return (print, ("ran",))

    folds.path.write_bytes(pickle.dumps((1, folds.key, fingerprint(recs.values()), 1))
                           + pickle.dumps(("raw",)) + pickle.dumps(Boom()))
    with capture_logs() as logs:
        assert await folds.load(recs) is None
    assert logs[0]["event"] == "fold_checkpoint_damaged" and "not allowed" in logs[0]["error"]


async def test_the_key_holds_the_folding_code(tmp_path: Path) -> None:
    recs = records(SOURCES)
    FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k").save([fold(recs)], recs)
    by_other_code = FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k",
                                   code=("kloros_stream.analysis.flow_index",))
    assert await by_other_code.load(recs) is None


def test_facts_of_the_content_are_named_by_its_hash_kept_facts_by_themselves() -> None:
    clean = record("pkg/pub.py", SOURCES["pkg/pub.py"])._replace(sha256="a" * 64)
    other_content = clean._replace(sha256="b" * 64)
    assert fingerprint([clean]) != fingerprint([other_content])
    # A file that does not parse keeps its last good facts: they name themselves, so two
    # broken contents with different kept facts differ even with one hash.
    broken = clean._replace(sha256="c" * 64, error=("invalid syntax", 3))
    kept_other = broken._replace(facts=record("pkg/wrap.py", SOURCES["pkg/wrap.py"]).facts)
    assert fingerprint([broken]) != fingerprint([kept_other])
    assert fingerprint([broken]) != fingerprint([clean])
    skipped = clean._replace(skipped="too_large", detail="9999999")
    assert fingerprint([skipped]) != fingerprint([clean])


async def test_a_fold_saved_after_edits_lists_what_a_fresh_fold_lists(tmp_path: Path) -> None:
    """One value under two constant names, one of them edited away and back before the
    stop: the restored index quotes the producers in a fresh fold's order, not in the
    order the edits left behind."""
    sources = {
        "pkg/ca.py": 'A = "T"\n',
        "pkg/cb.py": 'B = "T"\n',
        "pkg/pa.py": "from pkg import ca\ndef go(bus):\n    bus.emit(ca.A)\n",
        "pkg/pb.py": "from pkg import cb\ndef go(bus):\n    bus.emit(cb.B)\n",
    }
    recs = records(sources)
    index = fold(recs)
    for text in ('A = "U"\n', 'A = "T"\n'):
        edited = record("pkg/ca.py", text)
        assert edited.facts is not None
        index.update(edited.path, edited.facts.flows, packed=edited.facts)
        recs[edited.path] = edited
    FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k").save([index], recs)
    loaded = await FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k").load(recs)
    restored = (loaded or [None])[0]
    assert isinstance(restored, FlowIndex)
    topic = Channel(ChannelKind.TOPIC, "T")
    assert [s.path for s in restored.producers(topic)] == ["/t/pkg/pa.py", "/t/pkg/pb.py"]
    assert restored.producers(topic) == fold(recs).producers(topic)


async def test_loading_hands_the_event_loop_back_between_attributes(tmp_path: Path) -> None:
    import asyncio

    recs = records(SOURCES)
    FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k").save([fold(recs)], recs)
    ticks = 0

    async def other_work() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = ticks
    loaded = await FoldCheckpoint(CheckpointStore(tmp_path), "flow_index", "k").load(recs)
    task.cancel()
    assert loaded is not None and isinstance(loaded[0], FlowIndex)
    assert ticks - before >= len(FlowIndex.__dataclass_fields__) - 1  # once per attribute
