"""integration's announced-gap checkpoint and its evidence book."""

from __future__ import annotations

from pathlib import Path

import pytest

from kloros_stream.analysis.flow_index import Channel, ChannelKind
from kloros_stream.checkpoint import CheckpointStore
from kloros_stream.monitors.integration_state import (
    Evidence,
    announced_from_json,
    announced_to_json,
    load_announced,
)

A = Channel(ChannelKind.TOPIC, "A")
B = Channel(ChannelKind.ATTRIBUTE, "pkg.m.C.x")


def test_evidence_knows_which_orphans_quote_a_file() -> None:
    book = Evidence()
    book.set(A, ["a.py:1: emit('A')", "b.py:2: emit('A')"], ["/t/a.py", "/t/b.py"])
    book.set(B, ["b.py:5: self.x = 1"], ["/t/b.py"])
    assert book.quoting(["/t/b.py"]) == {A, B}
    assert book.quoting(["/t/a.py", "/t/c.py"]) == {A}
    book.set(A, ["a.py:1: emit('A')"], ["/t/a.py"])  # re-announced: b.py no longer quoted
    assert book.quoting(["/t/b.py"]) == {B}
    book.pop(B)
    book.pop(B)  # twice: nothing left to drop
    assert book.quoting(["/t/b.py"]) == set()
    assert book.get(B) is None and book.get(A) == ["a.py:1: emit('A')"]


def test_announced_gaps_round_trip_and_a_malformed_checkpoint_is_empty(tmp_path: Path) -> None:
    book = Evidence()
    book.set(A, ["a.py:1: emit('A')"], ["/t/a.py"])
    book.set(Channel(ChannelKind.TOPIC, "GONE"), ["g.py:1: emit('GONE')"], ["/t/g.py"])
    data = announced_to_json({A, B}, {"/t/bad.py": "bad.py"}, book)
    loaded = announced_from_json(data)
    assert loaded is not None
    orphans, errors, evidence = loaded
    assert (orphans, errors) == ({A, B}, {"/t/bad.py": "bad.py"})
    assert evidence.lines == {A: ["a.py:1: emit('A')"]}  # only announced orphans' lines
    assert evidence.quoting(["/t/a.py"]) == {A}
    del data["evidence"]  # a checkpoint of the previous version: no lines
    older = announced_from_json(data)
    assert older is not None and older[2].lines == {}
    assert announced_from_json({"format": 99}) is None
    with pytest.raises(ValueError):
        announced_from_json({"format": 2, "announced_orphans": [["nope", "x"]]})
    store = CheckpointStore(tmp_path)
    store.save("index", {"format": 2, "announced_orphans": [["nope", "x"]]})

    class Log:
        errors: list[str] = []

        def error(self, event: str, **_kw: object) -> None:
            self.errors.append(event)

        def info(self, event: str, **_kw: object) -> None:
            pass

    log = Log()
    orphans, errors, evidence = load_announced(store, log)
    assert (orphans, errors, evidence.lines) == (set(), {}, {})
    assert log.errors == ["integration_checkpoint_invalid"]
