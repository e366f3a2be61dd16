"""Consumers against a real ``kloros-stream run`` subprocess over loopback HTTP: concurrent
claims, kill -9 in the middle of claims and answers, a stream client away for 10 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from kloros_stream.feed import read_feed
from tests.support.consumers import post, seed_feed
from tests.support.service import ServiceProcess, append_chaos, chaos_config, failure, write_config
from tests.support.sse import read_events

pytestmark = pytest.mark.e2e

AWAY_S = 10.0


def base(proc: ServiceProcess) -> str:
    return f"http://127.0.0.1:{proc.port}"


async def consume(session: aiohttp.ClientSession, url: str, name: str,
                  acked: dict[str, dict[str, Any]], inflight: dict[str, tuple[str, str]],
                  stop_after: int | None = None) -> list[str]:
    """Claim, then answer, until nothing is left (or the service goes away). Every
    acknowledged reply is recorded; the request in flight is known at any moment."""
    claimed: list[str] = []
    try:
        while stop_after is None or len(claimed) < stop_after:
            inflight[name] = ("claim", "")
            status, q = await post(session, url, "/questions/claim", {"consumer": name,
                                                                      "lease_s": 600})
            if status == 204:
                break
            assert status == 200 and q is not None, (status, q)
            acked[q["id"]] = q
            claimed.append(q["id"])
            inflight[name] = ("answer", q["id"])
            status, done = await post(session, url, f"/questions/{q['id']}/status",
                                      {"status": "answered", "note": f"by {name}",
                                       "consumer": name})
            assert status == 200 and done is not None, (status, done)
            acked[q["id"]] = done
    except aiohttp.ClientError:
        pass  # the service was killed: what was in flight is in ``inflight``
    else:
        inflight.pop(name, None)
    return claimed


def test_two_consumers_claim_each_of_1000_questions_once(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    ids = seed_feed(tmp_path / "var" / "feed.jsonl", 1000)
    with ServiceProcess(cfg) as proc:
        async def run() -> list[list[str]]:
            acked: dict[str, dict[str, Any]] = {}
            async with aiohttp.ClientSession() as session:
                return await asyncio.gather(
                    consume(session, base(proc), "alice", acked, {}),
                    consume(session, base(proc), "bob", acked, {}))

        alice, bob = asyncio.run(run())
    assert alice and bob  # both took part
    assert not set(alice) & set(bob)  # never the same question twice
    assert sorted(alice + bob) == sorted(ids)  # none lost, each claimed once
    final = read_feed(proc.feed_path).questions
    assert all(q["status"] == "answered" and q["metadata"]["claims"] == 1
               for q in final.values())
    assert {q["metadata"]["answer"]["consumer"] for q in final.values()} == {"alice", "bob"}


def test_kill_9_during_claims_and_answers_keeps_the_acknowledged_state(tmp_path: Path
                                                                       ) -> None:
    cfg = write_config(tmp_path)
    seed_feed(tmp_path / "var" / "feed.jsonl", 400)
    proc = ServiceProcess(cfg).start()
    acked: dict[str, dict[str, Any]] = {}
    inflight: dict[str, tuple[str, str]] = {}

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(consume(session, base(proc), name, acked, inflight))
                     for name in ("alice", "bob")]
            while len(acked) < 60:
                await asyncio.sleep(0.005)
            await asyncio.to_thread(proc.kill)
            await asyncio.gather(*tasks)

    asyncio.run(run())
    assert 60 <= len(acked) < 400
    proc.start()
    try:
        listed = orjson.loads(proc.get("/questions?status=all&top=1000")[1])
        after = {q["id"]: q for q in listed}
    finally:
        proc.stop()
    for qid, q in acked.items():
        if ("answer", qid) in inflight.values():  # written or not: either is right
            assert after[qid]["status"] in ("in_progress", "answered"), qid
            continue
        assert after[qid]["status"] == q["status"], qid
        assert after[qid]["metadata"].get("claim") == q["metadata"].get("claim"), qid
        assert after[qid]["metadata"].get("answer") == q["metadata"].get("answer"), qid
    # A claim in flight at the kill may or may not have been written: at most one per consumer.
    unacked = {i for i, q in after.items() if q["status"] != "ready" and i not in acked}
    assert len(unacked) <= sum(kind == "claim" for kind, _ in inflight.values())


def test_a_stream_client_away_for_10_s_misses_nothing(tmp_path: Path) -> None:
    cfg = chaos_config(tmp_path)
    append_chaos(tmp_path, failure("before"))
    with ServiceProcess(cfg) as proc:
        proc.wait_feed(lambda qs: len(qs) == 1)
        url = base(proc)

        async def run() -> tuple[dict[str, str], list[dict[str, str]]]:
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/questions/stream") as resp:
                    append_chaos(tmp_path, failure("while-connected"))
                    (last,) = await read_events(resp, 1)
                # Away: new gaps on disk and a claim meanwhile.
                started = time.monotonic()
                append_chaos(tmp_path, *(failure(f"away{i}") for i in range(5)))
                await asyncio.to_thread(proc.wait_feed, lambda qs: len(qs) == 7)
                status, _ = await post(session, url, "/questions/claim", {"consumer": "c"})
                assert status == 200
                await asyncio.sleep(max(0.0, AWAY_S - (time.monotonic() - started)))
                async with session.get(url + "/questions/stream",
                                       headers={"Last-Event-ID": last["id"]}) as resp:
                    missed = await read_events(resp, 6)
                    append_chaos(tmp_path, failure("after"))
                    live = await read_events(resp, 1)
                return last, missed + live

        last, events = asyncio.run(run())
    offset = int(last["id"].rsplit("-", 1)[1])
    written = proc.feed_path.read_bytes()[offset:].splitlines()
    assert [orjson.loads(e["data"]) for e in events] == [orjson.loads(w) for w in written]
    names = [orjson.loads(e["data"])["metadata"]["gap_name"] for e in events]
    assert names[:5] == [f"away{i}" for i in range(5)] and names[-1] == "after"
    assert orjson.loads(events[5]["data"])["status"] == "in_progress"
    assert all(e["event"] == "question" for e in events)
