"""exception_journal: journal entries as occurrences, the journal facts, the safe cursor."""

from __future__ import annotations

import pytest

from kloros_stream.monitors.exception_journal import (
    DeliveryLag,
    JournalMeta,
    add_journal_facts,
    line_occurrence,
    safe_cursor,
    stream_key,
    whole_message_occurrences,
)
from kloros_stream.sources.journal import JournalBatch

TB = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app.py", line 3, in main\n'
    "    go()\n"
    "ValueError: bad\n"
)


def entry(cursor: str, message: str, **fields: str) -> dict[str, str]:
    return {"__CURSOR": cursor, "MESSAGE": message, **fields}


def test_stream_key_separates_processes_and_priorities() -> None:
    a = entry("s=x;i=1", "x", _PID="1", SYSLOG_IDENTIFIER="app", _STREAM_ID="s", PRIORITY="3")
    b = dict(a, _PID="2")
    assert stream_key(a, "app.service", "3") == ("j", "app.service", "1", "app", "s", "3")
    assert stream_key(a, "app.service", "3") != stream_key(b, "app.service", "3")
    assert stream_key(a, "app.service", "3") != stream_key(a, "app.service", "6")


def test_whole_message_tracebacks_keyed_by_cursor_and_index() -> None:
    one = whole_message_occurrences(entry("s=x;i=1", TB), "u", TB, 5.0)
    assert [(o.kind, o.key, o.title) for o in one] == [("traceback", "s=x;i=1", "ValueError: bad")]
    two = whole_message_occurrences(entry("s=x;i=2", TB + TB), "u", TB + TB, 5.0)
    assert [o.key for o in two] == ["s=x;i=2#0", "s=x;i=2#1"]


def test_whole_message_without_traceback_falls_back_to_priority() -> None:
    e = entry("s=x;i=3", "disk gone\nretrying", PRIORITY="2", SYSLOG_IDENTIFIER="app")
    [occ] = whole_message_occurrences(e, "u", e["MESSAGE"], 5.0)
    assert occ.kind == "priority"
    assert occ.facts == {"priority": 2, "level": "crit"}
    assert whole_message_occurrences(entry("s=x;i=4", "a\nb", PRIORITY="6"), "u", "a\nb", 5.0) == []


def test_line_occurrence_json_then_priority_then_nothing() -> None:
    line = '{"event": "boom", "exception": "ValueError: bad"}'
    occ = line_occurrence(entry("s=x;i=5", line), "u", line, "6", 1.0)
    assert occ is not None and occ.kind == "json_log" and occ.facts == {"log_message": "boom"}
    occ = line_occurrence(entry("s=x;i=6", "down"), "u", "down", "3", 1.0)
    assert occ is not None and occ.kind == "priority"
    assert line_occurrence(entry("s=x;i=7", "fine"), "u", "fine", "6", 1.0) is None


def test_journal_facts_and_live_latency_origin() -> None:
    first = entry(
        "s=x;i=8", "a", _PID="42", SYSLOG_IDENTIFIER="app", __REALTIME_TIMESTAMP="1000000"
    )
    last = entry("s=x;i=9", "b", __REALTIME_TIMESTAMP="3000000")
    live = line_occurrence(first, "u", "a", "3", 4.0)
    assert live is not None
    add_journal_facts(live, first, "u.service", last, wall=4.0)
    assert live.observed_at == 3.0  # read within the live window: the journal's timestamp
    assert live.facts["pid"] == 42 and live.facts["identifier"] == "app"
    assert live.facts["cursor"] == "s=x;i=8" and live.facts["timestamp"].startswith("1970-01-01")
    replayed = line_occurrence(first, "u", "a", "3", 100.0)
    assert replayed is not None
    add_journal_facts(replayed, first, "u.service", last, wall=100.0)
    assert replayed.observed_at == 100.0  # a replay: the time it was read


def test_safe_cursor_is_before_the_oldest_pending_traceback() -> None:
    metas = [JournalMeta({}, "s=x;i=4", 5, 0.0), object(), JournalMeta({}, "s=x;i=2", 3, 0.0)]
    assert safe_cursor(metas, "s=x;i=9") == "s=x;i=2"
    assert safe_cursor([object()], "s=x;i=9") == "s=x;i=9"
    assert safe_cursor([], None) is None


def test_delivery_lag_widens_the_grace_then_decays() -> None:
    lag = DeliveryLag(floor=0.02, cap=0.5)

    def batch(written: float, read: float) -> JournalBatch:
        return JournalBatch([{"__REALTIME_TIMESTAMP": str(int(written * 1e6))}], read)

    assert lag.grace(batch(100.0, 100.002), now=0.0) == 0.02  # idle: the short grace
    assert lag.grace(batch(100.0, 100.2), now=1.0) == pytest.approx(0.2)  # loaded
    assert lag.grace(batch(106.0, 106.001), now=6.0) == pytest.approx(0.1)  # one half-life
    assert lag.grace(batch(200.0, 260.0), now=7.0) < 0.1  # a replay tells nothing
    assert lag.grace(JournalBatch([{}], 300.0), now=8.0) < 0.1
    assert lag.grace(batch(400.0, 400.9), now=9.0) < 0.1  # a backlog past the cap neither
