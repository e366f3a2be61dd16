"""The ChemBus sink's decisions without sockets (sinks/chembus.py): which gaps go out, which
questions, the bounded outbox. The wire itself: tests/e2e/test_chembus.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from kloros_stream.config import ChemBusConfig, SupervisorConfig
from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.models import CAPABILITY_GAP_RESOLVED, CuriosityQuestion, Signal
from kloros_stream.sinks import chembus as chembus_module
from kloros_stream.sinks.chembus import ChemBusSink
from kloros_stream.sinks.kloros import sent_key
from kloros_stream.supervisor import BackoffPolicy

T0 = 1_700_000_000.0


class Collector:
    def __init__(self) -> None:
        self.items: list[Signal] = []

    def publish(self, item: Signal) -> None:
        self.items.append(item)


def sink(tmp_path: Path, **cfg: object) -> ChemBusSink:
    return ChemBusSink(ChemBusConfig(enabled=True, **cfg), tmp_path, Collector(),  # type: ignore[arg-type]
                       BackoffPolicy.from_config(SupervisorConfig()))


def signal(gap_type: str, name: str, *, monitor: str = "test", resolved: bool = False
           ) -> Signal:
    return Signal(signal=CAPABILITY_GAP_RESOLVED if resolved else "CAPABILITY_GAP",
                  ecosystem="testing", monitor=monitor, observed_at=T0,
                  facts={"gap_type": gap_type, "gap_name": name, "gap_category": "c",
                         "gap_reason": "r"})


def question(core: CuriosityCore, gap_type: str, name: str, **kw: object
             ) -> CuriosityQuestion:
    q = core.handle(signal(gap_type, name, **kw), T0)  # type: ignore[arg-type]
    assert q is not None
    return q


def test_our_gaps_go_out_but_ingested_ones_never_do(tmp_path: Path) -> None:
    s = sink(tmp_path)
    s.on_signals([signal("missing_tool", "jq"), signal("exception", "x", monitor="chembus"),
                  signal("missing_tool", "jq", resolved=True)])
    assert [(sig.gap_name, sig.resolved) for sig in s.outbox] == [("jq", False), ("jq", True)]
    assert s.wake.is_set()
    off = sink(tmp_path, publish_gaps=False)
    off.on_signals([signal("missing_tool", "jq")])
    assert not off.outbox


def test_the_outbox_is_bounded_and_counts_what_it_drops(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chembus_module, "OUTBOX_MAX", 3)
    s = sink(tmp_path)
    s.on_signals([signal("missing_tool", f"t{i}") for i in range(5)])
    assert len(s.outbox) == 3 and s.counters == {"gaps_dropped_outbox": 2}
    assert [sig.gap_name for sig in s.outbox] == ["t2", "t3", "t4"]  # the oldest went


def test_questions_above_the_threshold_wait_once_per_evidence(tmp_path: Path) -> None:
    s = sink(tmp_path)
    core = CuriosityCore()
    high = question(core, "orphaned_queue", "jobs")  # 0.95 / 0.2
    low = question(core, "unknown_kind", "thing")  # 0.5 / 0.5
    s.on_questions([high, low])
    assert list(s.pending) == [high.id]
    assert s.counters == {"questions_below_threshold": 1}
    s.ledger.sent[high.id] = sent_key(high)  # as if sent
    s.pending.clear()
    s.on_questions([high.model_copy(update={"priority": 9.0})])  # counters only: same key
    assert not s.pending
    changed = high.model_copy(update={"evidence_hash": "other"})
    s.on_questions([changed])
    assert s.pending == {high.id: changed}
    resolved = question(core, "orphaned_queue", "jobs", resolved=True)
    s.on_questions([resolved])
    assert not s.pending


def test_the_threshold_is_the_configured_one(tmp_path: Path) -> None:
    core = CuriosityCore()
    low = question(core, "unknown_kind", "thing")
    s = sink(tmp_path, value_threshold=1.0)
    s.on_questions([low])
    assert list(s.pending) == [low.id]
    off = sink(tmp_path, publish_questions=False)
    off.on_questions([low])
    assert not off.pending
