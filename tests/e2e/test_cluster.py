"""Distributed mode end to end: a real nats-server, edge processes with real monitors on
their own temp trees, two core processes.

Gaps: failing tests in JUnit reports (the test monitor), some nodeids failing on every
edge (one question each, ``metadata.hosts`` naming every edge), others on one edge only,
and one missing tool per edge (host-specific: the host in its gap name). Mid-stream one
core is killed with -9 and nats-server is restarted; at the end every core's feed holds
every gap exactly once with exact occurrences, and every edge's disk buffer is empty.

``KLOROS_CLUSTER_GAPS`` scales the run (``make soak`` runs 10,000).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from tests.support.nats import NatsServer, free_port
from tests.support.service import ServiceProcess, write_config

pytestmark = pytest.mark.e2e

GAPS = int(os.environ.get("KLOROS_CLUSTER_GAPS", "600"))
EDGES = 3
PHASES = 3
REPORT_CASES = 100
MISSING_TOOL = "kloros-e2e-absent-tool"


def _edge_config(directory: Path, host: str, url: str, **cluster: Any) -> Path:
    (directory / "results").mkdir(parents=True, exist_ok=True)
    return write_config(directory, {
        "cluster": {"role": "edge", "nats_url": url, "host": host, **cluster},
        "monitors": {
            "test": {"results_dir": "results"},
            "capability_discovery": {"required_executables": [MISSING_TOOL],
                                     "scan_imports": False},
        },
    })


def _core_config(directory: Path, host: str, url: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_config(directory, {
        "cluster": {"role": "core", "nats_url": url, "host": host, "ack_wait_s": 2.0},
        "feed": {"counter_flush_s": 0.5},
    })


def _write_reports(results: Path, nodeids: list[str], tag: str) -> None:
    """JUnit reports of failing tests, written whole then renamed into place."""
    for start in range(0, len(nodeids), REPORT_CASES):
        cases = []
        for nodeid in nodeids[start:start + REPORT_CASES]:
            module, name = nodeid.split("::")
            classname = module.removesuffix(".py").replace("/", ".")
            cases.append(f'<testcase classname="{classname}" name="{name}">'
                         f'<failure message="{name} failed">{name}</failure></testcase>')
        body = "<testsuite>" + "".join(cases) + "</testsuite>"
        tmp = results / f".{tag}-{start}.tmp"
        tmp.write_text(body, encoding="utf-8")
        tmp.rename(results / f"{tag}-{start}.xml")


def _plan(total: int) -> tuple[list[str], list[list[str]]]:
    """Shared nodeids (fail on every edge) and each edge's own."""
    shared_count = max(1, total // 10)
    own = (total - shared_count) // EDGES
    shared = [f"cluster/test_shared_{i // 50}.py::test_s{i}" for i in range(shared_count)]
    mine = [[f"cluster/test_edge{e}_{i // 50}.py::test_e{e}_{i}" for i in range(own)]
            for e in range(EDGES)]
    return shared, mine


def _by_name(feed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {q["metadata"]["gap_name"]: q for q in feed}


def test_edges_and_cores_exactly_once_through_a_core_kill_and_a_server_restart(
        tmp_path: Path) -> None:
    shared, mine = _plan(GAPS)
    hosts = [f"edge-{e}" for e in range(EDGES)]
    expected_questions = len(shared) + sum(map(len, mine)) + EDGES
    expected_occurrences = len(shared) * EDGES + sum(map(len, mine)) + EDGES

    with NatsServer(tmp_path / "nats") as server:
        cores = [ServiceProcess(_core_config(tmp_path / f"core-{c}", f"core-{c}", server.url))
                 for c in "ab"]
        edges = [ServiceProcess(_edge_config(tmp_path / h, h, server.url)) for h in hosts]
        try:
            for proc in (*cores, *edges):
                proc.start(timeout=30)
            started = time.monotonic()

            def phase(index: int) -> None:
                for e, edge in enumerate(edges):
                    share = [*shared, *mine[e]]
                    part = share[index::PHASES]
                    _write_reports(edge.directory / "results", part, f"phase{index}")

            phase(0)
            cores[0].wait_feed(lambda f: len(f) >= 20, timeout=60)
            cores[0].kill()  # kill -9 mid-stream: its unacked messages go to core-b
            phase(1)
            cores[1].wait_feed(lambda f: len(f) >= expected_questions // 2, timeout=120)
            server.restart()
            phase(2)

            def complete(feed: list[dict[str, Any]]) -> bool:
                return (len(feed) >= expected_questions and
                        sum(q["metadata"]["occurrences"] for q in feed)
                        >= expected_occurrences)

            timeout = 60 + GAPS / 50
            cores[1].wait_feed(complete, timeout=timeout)
            print(f"\ncluster e2e: {GAPS} gaps ({expected_occurrences} signals, "
                  f"{expected_questions} questions) in every survivor's feed after "
                  f"{time.monotonic() - started:.1f} s, with a core kill and a server restart")
            cores[0].start(timeout=30)  # back after the kill: follows the bucket
            cores[0].wait_feed(complete, timeout=timeout)

            for edge in edges:
                deadline = time.monotonic() + 30
                while edge.health()["cluster"]["edge"]["buffer"]["pending"]:
                    assert time.monotonic() < deadline, edge.health()["cluster"]
                    time.sleep(0.1)
            time.sleep(1.5)  # anything late (a duplicate) would show now
            health = [c.health()["cluster"]["core"] for c in cores]
            status, body = cores[1].get("/questions?status=all&host=edge-1&top=1000")
            on_edge1 = orjson.loads(body)
            status_none, body_none = cores[1].get("/questions?host=no-such-host")
        finally:
            for proc in (*edges, *cores):
                if proc.proc is not None and proc.proc.poll() is None:
                    proc.stop(timeout=20)

    for core in cores:
        feed = list(core.questions().values())
        names = _by_name(feed)
        assert len(feed) == expected_questions, (len(feed), expected_questions)
        assert len(names) == len(feed)  # one question per gap
        for nodeid in shared:
            q = names[nodeid]
            assert q["metadata"]["occurrences"] == EDGES, q["metadata"]
            assert {h: v["occurrences"] for h, v in q["metadata"]["hosts"].items()} == {
                h: 1 for h in hosts}
        for e, own in enumerate(mine):
            for nodeid in own:
                q = names[nodeid]
                assert q["metadata"]["occurrences"] == 1, q["metadata"]
                assert list(q["metadata"]["hosts"]) == [hosts[e]]
        for h in hosts:
            tool = names[f"{h}:{MISSING_TOOL}"]
            assert tool["metadata"]["facts"]["host"] == h
            assert list(tool["metadata"]["hosts"]) == [h]
    assert sum(h["applied"] for h in health) >= 1
    assert status == 200 and on_edge1
    assert all("edge-1" in q["metadata"]["hosts"] for q in on_edge1)
    assert status_none == 200 and orjson.loads(body_none) == []
    assert all(not h["rejected"] for h in health)


async def _stream_seqs(url: str, stream: str, count: int) -> list[tuple[str, int]]:
    """The stream's first ``count`` messages (or all within 30 s), in stream order:
    (host, edge seq)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe("kloros.gap.>", stream=stream)
        out: list[tuple[str, int]] = []
        deadline = time.monotonic() + 30
        while len(out) < count and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except TimeoutError:  # nats-py raises its own subclass or asyncio's
                continue
            for msg in msgs:
                data = orjson.loads(msg.data)
                out.append((data["host"], data["seq"]))
                await msg.ack()
        return out
    finally:
        await nc.close()


def test_an_edge_started_while_nats_is_down_buffers_then_delivers_in_order(
        tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    nodeids = [f"offline/test_o.py::test_o{i}" for i in range(300)]
    edge = ServiceProcess(_edge_config(tmp_path / "edge", "offline-edge", url))
    with edge:
        _write_reports(edge.directory / "results", nodeids, "offline")
        deadline = time.monotonic() + 30
        while edge.health()["cluster"]["edge"]["buffer"]["pending"] < len(nodeids) + 1:
            assert time.monotonic() < deadline, edge.health()["cluster"]
            time.sleep(0.05)
        assert not edge.health()["cluster"]["edge"]["connected"]
        with NatsServer(tmp_path / "nats", port=port) as server:
            deadline = time.monotonic() + 30
            while edge.health()["cluster"]["edge"]["buffer"]["pending"]:
                assert time.monotonic() < deadline, edge.health()["cluster"]
                time.sleep(0.05)
            seqs = asyncio.run(_stream_seqs(server.url, "KLOROS_GAPS", len(nodeids) + 1))
    assert len(seqs) == len(nodeids) + 1  # the failures and the missing tool
    assert {h for h, _ in seqs} == {"offline-edge"}
    order = [s for _, s in seqs]
    assert order == sorted(order) and len(set(order)) == len(order)
