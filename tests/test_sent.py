"""The ChemBus sent-ledger (sinks/sent.py): what was sent survives a restart, damaged lines
are skipped, the file compacts to one line per question."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from kloros_stream.sinks import sent as sent_module
from kloros_stream.sinks.sent import SentLedger


def test_marks_survive_a_reopen_and_the_latest_key_wins(tmp_path: Path) -> None:
    path = tmp_path / "chembus" / "questions_sent.jsonl"
    ledger = SentLedger(path)
    ledger.open()
    ledger.mark("q1", "h1:0")
    ledger.mark("q1", "h2:0")
    ledger.mark("q2", "h3:0")
    ledger.close()
    again = SentLedger(path)
    again.open()
    assert again.was_sent("q1", "h2:0") and not again.was_sent("q1", "h1:0")
    assert again.was_sent("q2", "h3:0") and not again.was_sent("q3", "h3:0")
    again.close()


def test_a_torn_or_invalid_line_is_skipped_and_the_file_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "sent.jsonl"
    path.write_bytes(b'{"id": "q1", "key": "k"}\nnot json\n{"id": 3, "key": "k"}\n{"id": "q2"')
    ledger = SentLedger(path)
    ledger.open()
    assert ledger.sent == {"q1": "k"}
    ledger.mark("q2", "k2")
    ledger.close()
    assert [orjson.loads(x) for x in path.read_bytes().splitlines()] == [
        {"id": "q1", "key": "k"}, {"id": "q2", "key": "k2"}]


def test_compacts_to_one_line_per_question(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sent_module, "COMPACT_SLACK", 4)
    path = tmp_path / "sent.jsonl"
    ledger = SentLedger(path)
    ledger.open()
    for i in range(20):
        ledger.mark("q", f"k{i}")
    ledger.close()
    assert len(path.read_bytes().splitlines()) <= 2 * 1 + 4 + 1
    again = SentLedger(path)
    again.open()
    assert again.sent == {"q": "k19"}
    again.close()
