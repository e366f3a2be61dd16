"""Evidence lines for orphaned channels: one statement, joined and bounded."""

from __future__ import annotations

from kloros_stream.analysis.flow_evidence import MAX_CHARS, evidence_line, statement_at

SOURCE = 'x = 1\nbus.emit(\n    "A",\n    facts={"k": [1,\n        2]},\n)\ny = 2\n'


def test_a_statement_over_several_lines_is_joined_until_its_brackets_close() -> None:
    assert statement_at(SOURCE, 2) == 'bus.emit( "A", facts={"k": [1, 2]}, )'
    assert statement_at(SOURCE, 1) == "x = 1"
    assert statement_at(SOURCE, 99) is None


def test_long_statements_are_clipped() -> None:
    line = "emit(" + ", ".join(f"'{i}'" for i in range(200)) + ")"
    text = statement_at(line, 1)
    assert text is not None and len(text) == MAX_CHARS and text.endswith("…")


def test_evidence_line_without_source_keeps_the_site() -> None:
    assert evidence_line("pkg/a.py", 3, None) == "pkg/a.py:3"
    assert evidence_line("pkg/a.py", 1, SOURCE) == "pkg/a.py:1: x = 1"


def test_the_question_quotes_the_producing_lines() -> None:
    from kloros_stream.core.templates import orphaned_queue

    draft = orphaned_queue(
        {
            "gap_name": "VOICE_READY",
            "gap_reason": "bus topic 'VOICE_READY' is emitted but nothing subscribes to it",
            "producers": ["voice:go"],
            "producer_lines": ['voice.py:2: bus.emit("VOICE_READY", facts={})'],
        }
    )
    assert 'Filled at voice.py:2: bus.emit("VOICE_READY", facts={})' in draft.evidence
