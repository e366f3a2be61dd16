"""The source index's journal: facts in their compact encoding come back equal; a damaged
frame or a torn tail costs only its own files, and is compacted away."""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
from pathlib import Path

import pytest

from kloros_stream.analysis.compact import EMPTY_SET
from kloros_stream.analysis.flows import FlowConfig
from kloros_stream.analysis.pysource import module_name
from kloros_stream.analysis.source_facts import PackedFacts, facts_of
from kloros_stream.checkpoint import CheckpointStore
from kloros_stream.sources import index_journal
from kloros_stream.sources.index_journal import (
    FRAME,
    IndexJournal,
    Update,
    drained,
    frame_of,
    record_entry,
)
from kloros_stream.sources.records import FileRecord, SourceSpec, load_batch

PACKAGE = Path(__file__).resolve().parent.parent / "kloros_stream"


def _records(root: Path) -> dict[str, FileRecord]:
    spec = _spec(root)
    files = sorted(root.rglob("*.py"))
    return {str(p): r for p, r, _ in load_batch([(p, root, None) for p in files], spec)}


def _spec(root: Path) -> SourceSpec:
    return SourceSpec((root,), (), 2_000_000, FlowConfig())


def _journal_of(tmp_path: Path, root: Path, *batches: list[Update]) -> IndexJournal:
    """A journal under ``tmp_path`` with ``batches`` appended (through its writer), one
    append (and so at least one frame) each."""
    journal = IndexJournal(tmp_path / "sources", _spec(root), CheckpointStore(tmp_path / "state"))

    async def write() -> None:
        for batch in batches:
            journal.append(batch)
        await drained()

    asyncio.run(write())
    return journal


def _tree(root: Path, names: str = "abc") -> dict[str, FileRecord]:
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / "pkg" / f"{name}.py").write_text(
            f"import os\ndef {name}(bus):\n    bus.emit('{name}')\n")
    return _records(root)


def _frame_spans(journal: IndexJournal) -> list[tuple[int, int]]:
    """(start, end) of each frame's body in the journal file."""
    data = journal.path.read_bytes()
    pos, spans = data.index(b"\n") + 1, []
    while pos < len(data):
        length, _crc = FRAME.unpack_from(data, pos)
        spans.append((pos + FRAME.size, pos + FRAME.size + length))
        pos += FRAME.size + length
    return spans


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


def _facts(records: dict[str, FileRecord]) -> dict[str, object]:
    return {p: r.facts.to_json() for p, r in records.items()}  # type: ignore[union-attr]


def test_journal_round_trip_a_damaged_frame_and_a_torn_tail(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    records = _tree(root)
    batches = [[(p, r)] for p, r in sorted(records.items())]  # one frame per record
    journal = _journal_of(tmp_path, root, *batches)
    loaded = journal.load()
    assert _facts(loaded) == _facts(records)
    assert loaded == records

    data = bytearray(journal.path.read_bytes())
    start, end = _frame_spans(journal)[1]
    data[(start + end) // 2] ^= 0x40  # a flipped bit in the second record's frame
    torn = frame_of([record_entry(records[batches[0][0][0]])])
    journal.path.write_bytes(bytes(data) + torn[: len(torn) // 2])  # and a torn append
    again = journal.load()
    assert set(again) == set(records) - {batches[1][0][0]}  # that file is parsed again
    assert _facts(again) == {p: f for p, f in _facts(records).items() if p in again}
    compacted = journal.path.read_bytes()
    assert journal.load() == again and journal.path.read_bytes() == compacted


def test_appends_after_a_torn_tail_are_kept_once_the_load_compacted_it(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    records = _tree(root)
    (a, ra), (b, rb), (c, rc) = sorted(records.items())
    journal = _journal_of(tmp_path, root, [(a, ra), (b, rb)])
    with open(journal.path, "ab") as fh:
        fh.write(FRAME.pack(10_000, 0) + b"torn")  # a kill -9 mid-append
    assert set(journal.load()) == {a, b}

    async def write() -> None:
        journal.append([(c, rc), (a, None)])
        await drained()

    asyncio.run(write())
    assert set(journal.load()) == {b, c}  # the last entry per path wins; a is gone


def test_history_is_compacted_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_journal, "COMPACT_SLACK", 2)
    root = tmp_path / "tree"
    records = _tree(root, "ab")
    journal = _journal_of(tmp_path, root, *[list(records.items())] * 4)
    before = journal.path.stat().st_size
    assert journal.load() == records
    assert journal.path.stat().st_size < before / 3
    assert journal.load() == records


def test_equal_import_sets_come_back_shared_and_interned(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    records = _tree(root)
    loaded = _journal_of(tmp_path, root, list(records.items())).load()
    imports = [r.facts.imports for r in loaded.values()]  # type: ignore[union-attr]
    assert all(i is imports[0] for i in imports)  # every file imports os alone
    assert imports[0].required == {"os"} and imports[0].optional is EMPTY_SET
    assert all(name is sys.intern(name) for name in imports[0].required)
    assert len({id(r.root) for r in loaded.values()}) == 1


def test_another_format_or_spec_is_not_read_and_old_journals_go(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    records = _tree(root, "a")
    old = tmp_path / "sources" / "0123456789abcdef0123.jsonl"  # a format-3 journal
    old.parent.mkdir(parents=True)
    old.write_bytes(b'{"format":3,"spec":"0123456789abcdef0123"}\n{"p": "/x.py"}\n')
    journal = IndexJournal(tmp_path / "sources", _spec(root), CheckpointStore(tmp_path / "state"))
    assert journal.load() == {} and not old.exists()

    journal = _journal_of(tmp_path, root, list(records.items()))
    data = journal.path.read_bytes()
    journal.path.write_bytes(data.replace(b'"format":4', b'"format":5', 1))
    assert journal.load() == {}  # another header: not trusted, started again
    assert journal.path.read_bytes() == data[: data.index(b"\n") + 1]


def test_a_record_that_cannot_be_marshalled_costs_only_itself(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    records = _tree(root, "ab")
    (a, ra), (b, rb) = sorted(records.items())
    bad = ra._replace(detail=object())  # type: ignore[arg-type]
    journal = _journal_of(tmp_path, root, [(a, bad), (b, rb)])
    assert journal.load() == {b: rb}


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
    loaded = _journal_of(tmp_path, root, list(records.items())).load()
    assert set(loaded) == set(records)
    assert "T" in loaded[str(root / bad)].facts.flows.topics_produced  # type: ignore[union-attr]
