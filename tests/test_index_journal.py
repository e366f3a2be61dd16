"""The source index's journal: facts in their compact encoding come back equal, and a
damaged line costs only its own file."""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
from pathlib import Path

import orjson

from kloros_stream.analysis.flows import FlowConfig
from kloros_stream.analysis.pysource import module_name
from kloros_stream.analysis.source_facts import PackedFacts, facts_of
from kloros_stream.checkpoint import CheckpointStore
from kloros_stream.sources.index_journal import IndexJournal, drained
from kloros_stream.sources.records import SourceSpec, load_batch

PACKAGE = Path(__file__).resolve().parent.parent / "kloros_stream"


def _records(root: Path) -> dict[str, object]:
    spec = SourceSpec((root,), (), 2_000_000, FlowConfig())
    files = sorted(root.rglob("*.py"))
    return {str(p): r for p, r, _ in load_batch([(p, root, None) for p in files], spec)}


def _journal_of(tmp_path: Path, root: Path, records: dict[str, object]) -> IndexJournal:
    """A journal under ``tmp_path`` holding ``records`` (written through its writer)."""
    spec = SourceSpec((root,), (), 2_000_000, FlowConfig())
    journal = IndexJournal(tmp_path / "sources", spec, CheckpointStore(tmp_path / "state"))

    async def write() -> None:
        journal.append(list(records.items()))  # type: ignore[arg-type]
        await drained()

    asyncio.run(write())
    return journal


def test_packed_facts_round_trip_on_real_code() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 100
    for path in files:
        facts = facts_of(path.read_bytes(), module_name(path, PACKAGE), FlowConfig(), str(path))
        packed = PackedFacts.pack(facts)
        assert packed.unpack().to_json() == facts.to_json()
        assert packed.flows == facts.flows and packed.summary == facts.summary
        sent = pickle.loads(pickle.dumps(packed, 5))  # as a parse process sends it
        assert sent.to_json() == facts.to_json()
        for name in sent.imports.required | sent.imports.dotted:
            assert name is sys.intern(name)  # one string for every file importing it


def test_journal_round_trip_and_a_damaged_line(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for name in ("a", "b", "c"):
        (root / "pkg").mkdir(parents=True, exist_ok=True)
        (root / "pkg" / f"{name}.py").write_text(f"def {name}(bus):\n    bus.emit('{name}')\n")
    records = _records(root)
    journal = _journal_of(tmp_path, root, records)
    loaded = journal.load()
    assert {p: r.facts.to_json() for p, r in loaded.items()} == {  # type: ignore[union-attr]
        p: r.facts.to_json() for p, r in records.items()}  # type: ignore[attr-defined]

    lines = journal.path.read_bytes().split(b"\n")
    damaged = orjson.loads(lines[1])
    damaged["f"] = damaged["f"][: len(damaged["f"]) // 2]  # a cut facts blob
    lines[1] = orjson.dumps(damaged)
    flipped = orjson.loads(lines[2])
    flipped["f"] = ("B" if flipped["f"][0] == "A" else "A") + flipped["f"][1:]  # bits flipped
    lines[2] = orjson.dumps(flipped)
    journal.path.write_bytes(b"\n".join(lines) + b'{"p": "torn')
    again = journal.load()
    assert set(again) == set(records) - {damaged["p"], flipped["p"]}
    assert journal.load().keys() == again.keys()  # the damage was compacted away


def test_a_file_name_that_is_not_utf8_is_journaled_and_costs_no_other_record(
    tmp_path: Path,
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "good.py").write_text("X = 1\n")
    bad = os.fsdecode(b"bad\xff.py")
    (root / bad).write_text("def f(bus):\n    bus.emit('T')\n")
    records = _records(root)
    assert str(root / bad) in records
    loaded = _journal_of(tmp_path, root, records).load()
    assert set(loaded) == set(records)
    assert "T" in loaded[str(root / bad)].facts.flows.topics_produced  # type: ignore[union-attr]
