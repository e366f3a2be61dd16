"""module_journal: module_discovery's append-only checkpoint of known modules."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from kloros_stream.checkpoint import CheckpointStore, atomic_write_json
from kloros_stream.monitors import module_journal
from kloros_stream.monitors.module_journal import ModuleJournal, State


class Modules:
    """A monitor's state as module_discovery keeps it, behind one journal."""

    def __init__(self, directory: Path, **kwargs: object) -> None:
        self.store = CheckpointStore(directory)
        self.known: set[str] | None = None
        self.open: dict[str, str] = {}
        self.journal = ModuleJournal(self.store, self.state, delay=0.0, **kwargs)  # type: ignore[arg-type]

    def state(self) -> State | None:
        return None if self.known is None else (self.known, self.open)

    def load(self) -> State | None:
        loaded = self.journal.load()
        if loaded is not None:
            self.known, self.open = loaded
        return loaded

    def lines(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in self.journal.path.read_bytes().splitlines()]


async def test_a_change_appends_one_line_and_a_restart_reads_the_state(tmp_path: Path) -> None:
    m = Modules(tmp_path)
    m.known = {f"/src/m{i}.py" for i in range(500)}
    m.journal.mark_all()  # the baseline: the whole set, once
    m.journal.flush()
    assert len(m.lines()) == 1 + 500
    m.known.add("/src/new.py")
    m.open["/src/new.py"] = "new"
    m.journal.mark("/src/new.py")
    m.known.discard("/src/m1.py")
    m.journal.mark("/src/m1.py")
    m.journal.flush()
    assert m.lines()[-2:] == [{"p": "/src/new.py", "o": "new"}, {"p": "/src/m1.py", "gone": 1}]
    m.open.pop("/src/new.py")  # resolved, still known
    m.journal.mark("/src/new.py")
    m.journal.flush()
    assert m.lines()[-1] == {"p": "/src/new.py"}
    assert len(m.lines()) == 1 + 500 + 3

    again = Modules(tmp_path)
    assert again.load() == (m.known, {})


async def test_writes_wait_for_delivery_and_keep_their_order(tmp_path: Path) -> None:
    gates: list[asyncio.Event] = []

    async def delivered() -> None:
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()

    m = Modules(tmp_path, delivered=delivered)
    m.known = {"/src/a.py"}
    m.journal.mark_all()
    await asyncio.sleep(0.01)
    m.known.add("/src/b.py")
    m.journal.mark("/src/b.py")
    await asyncio.sleep(0.01)
    assert len(gates) == 2 and not m.journal.path.exists()  # nothing claimed before delivery
    gates[1].set()  # the later batch is acknowledged: the earlier one is written first
    for _ in range(200):
        if m.journal.path.exists() and len(m.lines()) == 3:
            break
        await asyncio.sleep(0.01)
    assert m.lines() == [{"format": module_journal.FORMAT}, {"p": "/src/a.py"}, {"p": "/src/b.py"}]
    gates[0].set()
    await asyncio.sleep(0.05)
    assert len(m.lines()) == 3  # not written twice


async def test_compacted_when_history_outgrows_the_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module_journal, "COMPACT_SLACK", 10)
    m = Modules(tmp_path)
    m.known = {"/src/a.py", "/src/b.py"}
    m.journal.mark_all()
    m.journal.flush()
    for i in range(40):  # a file created and deleted again and again
        key = "/src/tmp.py"
        (m.known.add if i % 2 == 0 else m.known.discard)(key)
        m.journal.mark(key)
        m.journal.flush()
        assert len(m.lines()) <= 1 + 2 * len(m.known) + 10 + 1
    assert Modules(tmp_path).load() == ({"/src/a.py", "/src/b.py"}, {})


async def test_torn_tail_is_cut_and_invalid_lines_skipped(tmp_path: Path) -> None:
    m = Modules(tmp_path)
    m.known = {"/src/a.py", "/src/b.py"}
    m.journal.mark_all()
    m.journal.flush()
    with m.journal.path.open("ab") as fh:
        fh.write(b'["not an entry"]\n{"p": "/src/c.py"}\n{"p": "/src/d')  # then kill -9
    again = Modules(tmp_path)
    assert again.load() == ({"/src/a.py", "/src/b.py", "/src/c.py"}, {})
    again.journal.mark()  # the invalid line makes the first save a compaction
    await asyncio.sleep(0.05)
    assert again.lines()[1:] == [{"p": "/src/a.py"}, {"p": "/src/b.py"}, {"p": "/src/c.py"}]


async def test_the_whole_set_checkpoint_of_format_1_is_read_then_compacted(
    tmp_path: Path,
) -> None:
    old = CheckpointStore(tmp_path).path("modules")
    atomic_write_json(old, {"format": 1, "known": ["/src/a.py", "/src/b.py"],
                            "open": {"/src/b.py": "b", "/src/gone.py": "gone"}})
    m = Modules(tmp_path)
    assert m.load() == ({"/src/a.py", "/src/b.py"}, {"/src/b.py": "b"})
    m.journal.mark()
    await asyncio.sleep(0.05)
    assert m.lines()[1:] == [{"p": "/src/a.py"}, {"p": "/src/b.py", "o": "b"}]
    assert not old.exists()
    assert Modules(tmp_path).load() == ({"/src/a.py", "/src/b.py"}, {"/src/b.py": "b"})


async def test_no_baseline_other_format_and_frozen_store(tmp_path: Path) -> None:
    m = Modules(tmp_path)
    assert m.load() is None
    m.journal.path.write_bytes(b'{"format": 99}\n{"p": "/src/a.py"}\n')
    assert Modules(tmp_path).load() is None
    m.known = {"/src/a.py"}
    m.store.freeze()
    m.journal.path.unlink()
    m.journal.mark_all()
    m.journal.flush()
    assert not m.journal.path.exists()


async def test_file_names_with_undecodable_bytes_round_trip(tmp_path: Path) -> None:
    name = "/src/bad\udcffname.py"  # os.fsdecode(b"/src/bad\xffname.py")
    m = Modules(tmp_path)
    m.known = {"/src/a.py"}
    m.journal.mark_all()
    m.journal.flush()
    m.known.add(name)
    m.open[name] = "bad\\xffname"
    m.journal.mark(name)
    m.journal.flush()
    assert Modules(tmp_path).load() == ({"/src/a.py", name}, {name: "bad\\xffname"})
    m.journal.mark_all()
    m.journal.flush()
    assert Modules(tmp_path).load() == ({"/src/a.py", name}, {name: "bad\\xffname"})
