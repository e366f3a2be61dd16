"""The ChemBus bridge against a real ZeroMQ forwarder (zmq.proxy XSUB/XPUB on loopback, in a
thread) and clients that frame and subscribe as KLoROS's umn_bus.py does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from kloros_stream.config import Config, load_config
from kloros_stream.service import Service
from kloros_stream.sinks.chembus import ChemBusSink
from kloros_stream.sinks.umn import UMN_FIELDS
from tests.support.scripted import (
    TINY_SUPERVISOR,
    Script,
    gap,
    resolution,
    running_service,
    service_config,
    wait_until,
)
from tests.support.service import to_toml
from tests.support.umn import Forwarder, KlorosPub, KlorosSub, UmnReplay, kloros_frames

INVESTIGATE_FACTS = ["question_id", "question", "hypothesis", "evidence", "capability_key",
                     "action_class", "value_estimate", "cost_estimate", "priority"]


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    fwd = Forwarder().start()
    try:
        yield fwd
    finally:
        fwd.stop()


@pytest.fixture
async def zctx() -> AsyncIterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def config(tmp_path: Path, fwd: Forwarder, **chembus: Any) -> Config:
    return service_config(tmp_path, {"chembus": {"enabled": True, "xsub": fwd.xsub,
                                                 "xpub": fwd.xpub, **chembus}})


def bridge(svc: Service) -> ChemBusSink:
    sink = svc.sinks.get("chembus")
    assert isinstance(sink, ChemBusSink)
    return sink


def named(name: str) -> Any:
    return lambda topic, msg: msg["facts"].get("gap_name") == name


async def test_gaps_go_out_and_a_resolution_never_reaches_a_gap_subscriber(
        tmp_path: Path, forwarder: Forwarder, zctx: zmq.asyncio.Context) -> None:
    gaps = KlorosSub(zctx, forwarder, "CAPABILITY_GAP")  # KLoROS's curiosity consumer
    everything = KlorosSub(zctx, forwarder, "")
    script = Script()
    cfg = config(tmp_path, forwarder, ingest_gaps=False, publish_questions=False)
    async with running_service(cfg, {"test": script}) as svc:
        chem = bridge(svc)
        await wait_until(lambda: {b"CAPABILITY_GAP", b""} <= chem.subscriptions,
                         what="both subscriptions through the forwarder", state=chem.details)
        script.push(gap("missing_tool", "jq"))
        script.push(resolution("missing_tool", "jq"))
        script.push(gap("missing_tool", "marker"))
        seen = await everything.recv_until(named("marker"))
        got = await gaps.recv_until(named("marker"))
        assert chem.counters["gaps_sent"] == 3
    topics = [t for t, _, _ in seen]
    assert topics == ["CAPABILITY_GAP", "GAP_RESOLVED", "CAPABILITY_GAP"]
    assert [t for t, _, _ in got] == ["CAPABILITY_GAP", "CAPABILITY_GAP"]  # no resolution
    (_, gap_msg, frames), (_, res_msg, _) = seen[0], seen[1]
    assert len(frames) == 2 and tuple(gap_msg) == UMN_FIELDS == tuple(res_msg)
    assert gap_msg["facts"]["gap_name"] == "jq" and gap_msg["facts"]["origin"] == "kloros-stream"
    assert gap_msg["incident_id"] != res_msg["incident_id"]
    replay = UmnReplay()  # KLoROS's replay defense drops neither
    assert replay.accept(gap_msg) and replay.accept(res_msg)
    for sub in (gaps, everything):
        sub.close()


async def test_questions_go_out_once_per_evidence_also_across_restarts(
        tmp_path: Path, forwarder: Forwarder, zctx: zmq.asyncio.Context) -> None:
    sub = KlorosSub(zctx, forwarder, "Q_CURIOSITY_INVESTIGATE")
    cfg = config(tmp_path, forwarder, ingest_gaps=False, publish_gaps=False)
    script = Script(gaps=[gap("orphaned_queue", "jobs", producers=["a.py"]),
                          gap("unknown_kind", "thing")])  # value/cost 4.75 and 1.0
    async with running_service(cfg, {"test": script}) as svc:
        _, first, frames = await sub.recv()
        assert len(frames) == 2 and tuple(first) == UMN_FIELDS
        assert (first["signal"], first["ecosystem"]) == ("Q_CURIOSITY_INVESTIGATE",
                                                         "introspection")
        assert list(first["facts"]) == INVESTIGATE_FACTS
        jobs = next(q for q in svc.core.questions.values() if q.metadata["gap_name"] == "jobs")
        assert first["facts"]["question_id"] == jobs.id
        assert first["facts"]["priority"] == "high"  # propose_fix
        script.push(gap("orphaned_queue", "jobs", producers=["a.py"]))  # same evidence
        script.push(gap("orphaned_queue", "jobs", producers=["a.py", "b.py"]))  # changed
        _, second, _ = await sub.recv()
        assert second["facts"]["question_id"] == jobs.id
        assert second["facts"]["evidence"] != first["facts"]["evidence"]
        assert await sub.drain() == []
        assert bridge(svc).counters["questions_sent"] == 2
    restarted = Script(gaps=[gap("orphaned_queue", "jobs", producers=["a.py", "b.py"]),
                             gap("orphaned_queue", "other")])
    async with running_service(cfg, {"test": restarted}) as svc:
        _, third, _ = await sub.recv()
        other = next(q for q in svc.core.questions.values()
                     if q.metadata["gap_name"] == "other")
        assert third["facts"]["question_id"] == other.id  # jobs was sent before the restart
        assert await sub.drain() == []
    sub.close()


async def test_kloros_gaps_come_in_and_what_is_not_one_is_counted(
        tmp_path: Path, forwarder: Forwarder, zctx: zmq.asyncio.Context) -> None:
    pub = KlorosPub(zctx, forwarder)
    script = Script()
    cfg = config(tmp_path, forwarder, publish_questions=False)
    async with running_service(cfg, {"test": script}) as svc:
        chem = bridge(svc)

        async def probe() -> None:  # until our subscription has reached the forwarder
            n = 0
            while not chem.counters.get("in_ingested"):
                await pub.send(kloros_frames("CAPABILITY_GAP", ecosystem="introspection", facts={
                    "gap_type": "probe", "gap_name": f"p{n}", "gap_category": "x"}))
                n += 1
                await asyncio.sleep(0.02)

        await asyncio.wait_for(probe(), 10)
        await wait_until(lambda: chem.subscribed(b"CAPABILITY_GAP"), what="our gap subscription")
        base = dict(chem.counters)
        exception = {"gap_type": "exception", "gap_name": "exception_kloros-x_1234abcd",
                     "gap_category": "error_handling", "unit": "kloros-x", "priority": 3,
                     "traceback": None}  # as KLoROS's exception monitor: no gap_reason
        frames = kloros_frames("CAPABILITY_GAP", ecosystem="diagnostics", facts=exception,
                               incident_id="inc-1")
        await pub.send(frames)
        await pub.send(frames)  # a replay within 60 s
        await pub.send(kloros_frames("CAPABILITY_GAP_FOUND", ecosystem="introspection",
                                     facts={"scanner": "bottleneck_detector"}))
        await pub.send([b"CAPABILITY_GAP"])
        await pub.send([b"CAPABILITY_GAP", b"{not json"])
        await pub.send([b"CAPABILITY_GAP", b'{"facts": {"gap_type": "x"}}'])
        await pub.send(kloros_frames("CAPABILITY_GAP", ecosystem="x", facts={
            "gap_type": "x", "gap_name": "y", "origin": "kloros-stream"}))
        script.push(gap("missing_tool", "jq"))  # ours: out, back through the forwarder
        await pub.send(kloros_frames("CAPABILITY_GAP", ecosystem="introspection", facts={
            "gap_type": "missing_library", "gap_name": "marker", "gap_category": "x"}))
        await wait_until(lambda: any(q.metadata["gap_name"] == "marker"
                                     for q in svc.core.questions.values()), what="marker")
        await wait_until(lambda: chem.counters.get("in_loop_dropped", 0) - base.get(
            "in_loop_dropped", 0) == 2, what="our own gap back", state=lambda: chem.counters)
        delta = {k: v - base.get(k, 0) for k, v in chem.counters.items()
                 if k.startswith("in_") and v != base.get(k, 0)}
        assert delta == {"in_received": 9, "in_ingested": 2, "in_replay_dropped": 1,
                         "in_prefix_topic": 1, "in_malformed_frames": 1,
                         "in_malformed_json": 1, "in_malformed_gap": 1, "in_loop_dropped": 2}
        ingested = {q.metadata["gap_name"]: q for q in svc.core.questions.values()
                    if q.metadata["monitor"] == "chembus"}
        assert ingested[exception["gap_name"]].metadata["occurrences"] == 1
        assert ingested[exception["gap_name"]].metadata["ecosystem"] == "diagnostics"
        jq = [q for q in svc.core.questions.values() if q.metadata["gap_name"] == "jq"]
        assert [q.metadata["monitor"] for q in jq] == ["test"]  # never re-ingested
        assert svc.health()[0]["sinks"]["chembus"]["details"]["link_in"] == "up"
    pub.close()


async def test_the_bridge_reconnects_after_the_forwarder_restarts(
        tmp_path: Path, forwarder: Forwarder, zctx: zmq.asyncio.Context) -> None:
    sub = KlorosSub(zctx, forwarder, "")
    script = Script()
    cfg = config(tmp_path, forwarder)
    async with running_service(cfg, {"test": script}) as svc:
        chem = bridge(svc)
        await wait_until(lambda: chem.subscribed(b"Q_CURIOSITY_INVESTIGATE")
                         and chem.link_in == "up", what="links up", state=chem.details)
        script.push(gap("missing_tool", "before"))
        await sub.recv_until(named("before"))
        forwarder.stop()  # killed mid-stream
        await wait_until(lambda: chem.link_out == chem.link_in == "down", what="links down",
                         state=chem.details)
        script.push(gap("orphaned_queue", "while-down"))  # its question waits
        await wait_until(lambda: chem.counters.get("gaps_dropped_disconnected") == 1
                         and len(chem.pending) == 1, what="held", state=lambda: chem.counters)
        forwarder.start()  # same ports
        await sub.recv_until(lambda t, m: t == "Q_CURIOSITY_INVESTIGATE" and m["facts"][
            "capability_key"] == "integration.while-down", timeout=15)
        assert not chem.pending
        await wait_until(lambda: chem.link_in == "up", what="inbound link back")
        script.push(gap("missing_tool", "after"))
        await sub.recv_until(named("after"))
        assert chem.counters["link_out_connects"] >= 2
        assert chem.counters["link_out_disconnects"] >= 1
        assert chem.status.restarts == 0  # ZeroMQ reconnected: the component never crashed
    sub.close()


async def test_a_burst_to_a_slow_subscriber_never_stalls_the_loop(
        tmp_path: Path, forwarder: Forwarder, zctx: zmq.asyncio.Context) -> None:
    slow = KlorosSub(zctx, forwarder, "CAPABILITY_GAP", rcvhwm=100)  # never reads meanwhile
    cfg = config(tmp_path, forwarder, ingest_gaps=False, publish_questions=False)
    async with running_service(cfg, {"test": Script()}) as svc:
        chem = bridge(svc)
        await wait_until(lambda: chem.subscribed(b"CAPABILITY_GAP"), what="subscription")
        ticks = 0
        ticks_while_draining = 0

        async def ticker() -> None:
            nonlocal ticks, ticks_while_draining
            while True:
                await asyncio.sleep(0)
                ticks += 1
                ticks_while_draining += bool(chem.outbox)

        tick_task = asyncio.create_task(ticker())
        batch = _signals(4096)  # the consumer's batch limit
        offered = 0
        for burst in (3, 1, 1):  # three batches back to back overflow the 10,000 outbox
            for _ in range(burst):
                chem.on_signals(batch)
                offered += len(batch)
            await asyncio.sleep(0)
        await wait_until(lambda: not chem.outbox, what="outbox drained", state=chem.details)
        tick_task.cancel()
        c = chem.counters
        dropped = c.get("gaps_dropped_outbox", 0) + c.get("gaps_dropped_hwm", 0)
        assert c.get("gaps_sent", 0) + dropped == offered
        assert c["gaps_dropped_outbox"] >= 3 * 4096 - 10_000 and c.get("gaps_sent", 0) > 0
        assert ticks_while_draining >= 10  # the drain yielded to the loop
        report, status = svc.health()
        assert status == 200 and report["sinks"]["chembus"]["details"]["outbox"] == 0
    topic, msg, _ = await slow.recv()  # what it holds arrived intact
    assert topic == "CAPABILITY_GAP" and msg["facts"]["gap_type"] == "burst"
    slow.close()


def _signals(n: int) -> list[Any]:
    from kloros_stream.models import Signal

    return [Signal(ecosystem="testing", monitor="test",
                   facts={"gap_type": "burst", "gap_name": f"b{i}", "gap_category": "x",
                          "gap_reason": "r"}) for i in range(n)]


async def test_a_reload_starts_and_stops_the_bridge_in_place(
        tmp_path: Path, forwarder: Forwarder, zctx: zmq.asyncio.Context) -> None:
    conf = tmp_path / "config.toml"
    base = {"http": {"port": 0}, "feed": {"path": "var/feed.jsonl"},
            "service": {"state_dir": "var/state"}, "supervisor": dict(TINY_SUPERVISOR)}
    conf.write_text(to_toml(base), encoding="utf-8")
    sub = KlorosSub(zctx, forwarder, "CAPABILITY_GAP")
    script = Script()
    async with running_service(load_config(conf), {"test": script}) as svc:
        assert svc.sinks.get("chembus") is None
        conf.write_text(to_toml({**base, "chembus": {
            "enabled": True, "xsub": forwarder.xsub, "xpub": forwarder.xpub}}), encoding="utf-8")
        assert await svc.reload()
        chem = bridge(svc)
        await wait_until(lambda: chem.subscribed(b"CAPABILITY_GAP"), what="bridge up")
        script.push(gap("missing_tool", "after-reload"))
        await sub.recv_until(named("after-reload"))
        conf.write_text(to_toml(base), encoding="utf-8")
        assert await svc.reload()
        assert svc.sinks.get("chembus") is None
        assert (chem.state, chem.link_out, chem.link_in) == ("stopped", "down", "down")
    sub.close()
