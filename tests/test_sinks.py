"""Sinks: the shape (hooks, counters, health), failure isolation, the snapshot file."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import orjson
from prometheus_client import generate_latest

from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.core.store import question_json
from kloros_stream.feed import read_feed
from kloros_stream.models import CuriosityQuestion, Signal
from kloros_stream.sinks import Sink, SinkSet
from kloros_stream.sinks.files import snapshot_sink
from tests.support.scripted import Script, gap, running_service, service_config, wait_until

T0 = 1_700_000_000.0


def question(name: str) -> CuriosityQuestion:
    q = CuriosityCore().handle(Signal(
        ecosystem="testing", monitor="test", observed_at=T0,
        facts={"gap_type": "test_failure", "gap_name": name, "gap_category": "quality",
               "gap_reason": "failed"}), T0)
    assert q is not None
    return q


class Recorder(Sink):
    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def on_signals(self, batch: Sequence[Signal]) -> None:
        self.batches.append(len(batch))
        self.count("signals", len(batch))


class Broken(Sink):
    name = "broken"

    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    def on_signals(self, batch: Sequence[Signal]) -> None:
        if self.fail:
            raise OSError("disk on fire")


def test_a_failing_sink_is_counted_and_isolated_then_recovers() -> None:
    broken, recorder = Broken(), Recorder()
    sinks = SinkSet([broken, recorder])
    sinks.on_signals([])
    sinks.on_signals([])
    assert recorder.batches == [0, 0]  # the sink after the broken one still ran
    assert broken.errors == 2 and broken.state == "failing"
    assert sinks.failing == ["broken"]
    report = sinks.health()
    assert report["broken"]["last_error"] == "on_signals: OSError: disk on fire"
    assert report["recorder"] == {"state": "running", "errors": 0, "last_error": None,
                                  "details": {}, "counters": {"signals": 0}}
    broken.fail = False
    sinks.on_signals([])
    assert broken.state == "running" and broken.errors == 2 and sinks.failing == []


async def test_replace_stops_the_old_sink_and_starts_the_new_one() -> None:
    events: list[str] = []

    class Tracked(Sink):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.name = "tracked"
            self.tag = tag

        async def start(self, view: object) -> None:
            events.append(f"start {self.tag}")

        async def stop(self) -> None:
            events.append(f"stop {self.tag}")

    sinks = SinkSet()
    await sinks.replace("tracked", Tracked("a"), list)
    await sinks.replace("tracked", Tracked("b"), list)
    await sinks.replace("tracked", None, list)
    assert events == ["start a", "stop a", "start b", "stop b"]
    assert len(sinks) == 0


def test_snapshot_has_the_feed_document_shape(tmp_path: Path) -> None:
    snap = tmp_path / "out" / "snapshot.json"
    sink = snapshot_sink(snap)
    qs = [question("t::a"), question("t::b")]
    sink.refresh(lambda: [question_json(q) for q in qs], T0)
    assert not snap.exists()  # nothing was written to the feed yet
    sink.on_feed_written()
    sink.refresh(lambda: [question_json(q) for q in qs], T0)
    assert not sink.dirty
    data = orjson.loads(snap.read_bytes())
    assert set(data) == {"questions", "generated_at", "count"}
    assert data["count"] == 2
    assert [CuriosityQuestion.model_validate(d) for d in data["questions"]] == qs
    assert datetime.fromisoformat(data["generated_at"]).timestamp() == T0
    sink.refresh(lambda: [], T0 + 1)  # nothing written since: not rewritten
    assert orjson.loads(snap.read_bytes())["count"] == 2
    sink.on_feed_written()
    sink.refresh(lambda: [], T0 + 2)
    assert orjson.loads(snap.read_bytes())["count"] == 0
    assert sink.counters == {"writes": 2, "questions_written": 2}
    assert sorted(p.name for p in snap.parent.iterdir()) == ["snapshot.json"]  # no temp left


async def test_an_unwritable_sink_never_stops_the_feed(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the KLoROS feed's directory should be")
    cfg = service_config(tmp_path, {"feed": {"kloros_path": str(blocker / "feed.json"),
                                             "snapshot_path": "var/snapshot.json"}})
    script = Script()
    async with running_service(cfg, {"test": script}) as svc:
        for i in range(3):
            script.push(gap("test_failure", f"t::{i}"))
        await wait_until(lambda: svc.feed.lines_written == 3, what="three feed lines")
        await wait_until(lambda: svc.sinks.failing == ["kloros_feed"], what="sink failing",
                         state=svc.sinks.health)
        snap = cfg.feed.snapshot_path
        assert snap is not None
        await wait_until(lambda: snap.exists() and orjson.loads(snap.read_bytes())["count"] == 3,
                         what="the snapshot (the sink after the failing one)")
        report, code = svc.health()
        assert code == 200 and report["status"] == "degraded"
        assert report["sinks"]["kloros_feed"]["state"] == "failing"
        assert "kloros_feed" in report["sinks"] and report["sinks"]["snapshot"]["errors"] == 0
        metrics = generate_latest(svc.registry).decode()
        assert 'kloros_stream_sink_state{sink="kloros_feed",state="failing"} 1.0' in metrics
        assert 'kloros_stream_sink_errors_total{sink="snapshot"} 0.0' in metrics
        assert 'kloros_stream_sink_events_total{event="writes",sink="snapshot"}' in metrics
        script.push(gap("test_failure", "t::after"))
        await wait_until(lambda: svc.feed.lines_written == 4, what="the feed goes on")
    assert len(read_feed(cfg.feed.path).questions) == 4
