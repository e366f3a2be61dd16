"""occurrences: the gap reason and facts an occurrence publishes."""

from __future__ import annotations

from kloros_stream.analysis.occurrences import (
    MAX_TRACEBACK_CHARS,
    gap_facts,
    gap_reason,
    json_occurrence,
    priority_occurrence,
    traceback_occurrence,
)
from kloros_stream.analysis.tracebacks import assemble_text

CHAINED = """Traceback (most recent call last):
  File "/srv/app.py", line 3, in load
    open(p)
FileNotFoundError: [Errno 2] No such file: 'x'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/srv/app.py", line 5, in main
    load()
RuntimeError: cannot load
"""


def test_reason_per_kind() -> None:
    [tb] = assemble_text(CHAINED)
    assert gap_reason(traceback_occurrence(tb, "k", 1.0), "app") == "app raised RuntimeError"
    occ = json_occurrence('{"event": "x", "exception": "KeyError: 1"}', "k", 1.0)
    assert occ is not None
    assert gap_reason(occ, "app.log") == "app.log logged KeyError in a JSON log line"
    occ = priority_occurrence("app", "disk gone", "2", "k", 1.0)
    assert gap_reason(occ, "app") == "app logged at priority 2 (crit)"


def test_reason_marks_an_incomplete_traceback() -> None:
    [tb] = assemble_text("Traceback (most recent call last):\n  File \"/a.py\", line 1, in f\n")
    occ = traceback_occurrence(tb, "k", 1.0)
    assert occ.facts["complete"] is False
    assert gap_reason(occ, "app").endswith(" (incomplete traceback)")


def test_facts_of_a_chain_with_its_first_sighting_context() -> None:
    [tb] = assemble_text(CHAINED)
    occ = traceback_occurrence(tb, "k", 1.0)
    occ.facts["source"] = "file"
    facts = gap_facts(
        occ, occurrences=3, first_seen="then", last_seen="now", source_context=["ctx"]
    )
    assert facts["fingerprint"] == occ.fingerprint
    assert (facts["kind"], facts["exception_type"], facts["message"]) == (
        "traceback",
        "RuntimeError",
        "cannot load",
    )
    assert (facts["occurrences"], facts["first_seen"], facts["last_seen"]) == (3, "then", "now")
    assert facts["chain"] == [
        "FileNotFoundError: [Errno 2] No such file: 'x'",
        "RuntimeError: cannot load",
    ]
    assert facts["source_context"] == ["ctx"]
    assert list(facts)[-4:] == ["complete", "source", "chain", "source_context"]
    assert "chain" not in occ.facts  # the occurrence itself is left as it was


def test_facts_of_a_repeat_sighting_carry_no_context_and_clip_the_text() -> None:
    occ = priority_occurrence("app", "x" * (MAX_TRACEBACK_CHARS + 1000), "3", "k", 1.0)
    facts = gap_facts(occ, occurrences=2, first_seen="a", last_seen="b", source_context=None)
    assert "source_context" not in facts and "chain" not in facts
    assert len(facts["traceback"]) < MAX_TRACEBACK_CHARS + 100
    assert "[... 1000 characters ...]" in facts["traceback"]
