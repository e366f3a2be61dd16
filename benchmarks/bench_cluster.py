"""Distributed mode through a real nats-server (JetStream, loopback): edge write -> core feed
line latency, sustained signals/s into one core, core RSS over 100 k signals, beside a bare
nats-py publish/consume loop in the same run.

- latency: a Service in role "both" (monitor -> bus -> disk buffer -> JetStream -> durable
  consumer -> KV compare-and-set -> feed line), a paced monitor publishing new gaps; the
  time from the monitor's publish to the feed write, per signal.
- throughput: signals already in the stream (published as an edge does), then one core
  Service drains them: new questions (one bucket key each) and repeats of 1,000 gaps.
- bare reference: js.publish_async + pull fetch/ack of the same payloads, no processing;
  and one js.publish round trip followed by one fetch, for the latency floor.
- RSS: a ``kloros-stream run`` core subprocess while 100 k signals (1,000 gaps repeated)
  pass; RSS sampled every 10 k.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import orjson
import psutil

from kloros_stream.cluster.connect import ensure_stream
from kloros_stream.cluster.wire import MSG_ID_HEADER, encode
from kloros_stream.config import ClusterConfig, parse_config
from kloros_stream.models import Signal
from kloros_stream.monitors.base import Monitor
from kloros_stream.service import Service
from tests.support.nats import NatsServer
from tests.support.service import ServiceProcess, write_config

from .common import Report, median, ms, percentile

CMD = "python -m benchmarks cluster"
LATENCY_RATE = 200
LATENCY_SECONDS = 10
THROUGHPUT_SIGNALS = 20_000
RSS_SIGNALS = 100_000
RSS_GAPS = 1000
STREAM = "KLOROS_GAPS"


def _signal(name: str, at: float | None = None) -> Signal:
    return Signal(ecosystem="bench", monitor="test", observed_at=at or time.time(),
                  facts={"gap_type": "test_failure", "gap_name": name,
                         "gap_category": "quality", "gap_reason": "failed"})


def _config(directory: Path, url: str, role: str, **cluster: Any) -> Any:
    data = {"service": {"state_dir": str(directory / "state"), "log_level": "warning"},
            "feed": {"path": str(directory / "feed.jsonl"), "counter_flush_s": 1.0},
            "http": {"host": "127.0.0.1", "port": 0},
            "cluster": {"role": role, "nats_url": url, "host": "bench", **cluster}}
    return parse_config(data, directory)


# -- bare nats-py ----------------------------------------------------------------------------
async def _publish_all(url: str, payloads: list[tuple[str, str, bytes]]) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_stream(js, ClusterConfig())
    started = time.perf_counter()
    window = []
    for subject, msg_id, payload in payloads:
        window.append(await js.publish_async(subject, payload,
                                             headers={MSG_ID_HEADER: msg_id}))
        if len(window) >= 512:
            await asyncio.gather(*window)
            window.clear()
    await asyncio.gather(*window)
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


async def _consume_all(url: str, count: int, durable: str) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe("kloros.gap.>", durable=durable, stream=STREAM)
    got = 0
    started = time.perf_counter()
    while got < count:
        try:
            msgs = await sub.fetch(256, timeout=1.0)
        except TimeoutError:
            continue
        for msg in msgs:
            await msg.ack()
        got += len(msgs)
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


async def _bare_round_trip(url: str, rounds: int = 500) -> list[float]:
    """One js.publish awaited, then a fetch of it on a durable pull consumer."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="BARE", subjects=["bare.>"])
    sub = await js.pull_subscribe("bare.>", durable="bare", stream="BARE")
    out = []
    for i in range(rounds):
        started = time.perf_counter()
        await js.publish("bare.x", b"x" * 400, headers={MSG_ID_HEADER: f"b{i}"})
        msgs = await sub.fetch(1, timeout=5)
        await msgs[0].ack()
        out.append(time.perf_counter() - started)
    await nc.close()
    return out


def _payloads(count: int, gaps: int | None = None, offset: int = 0
              ) -> list[tuple[str, str, bytes]]:
    """Edge envelopes of ``count`` signals (``gaps`` distinct gaps, else all new)."""
    out = []
    for i in range(offset, offset + count):
        name = f"bench/test_t.py::t{i if gaps is None else i % gaps}"
        o = encode("bench", i, _signal(name, 1_700_000_000.0 + i))
        out.append((o.subject, o.msg_id, o.payload))
    return out


# -- latency: a Service in role "both" ---------------------------------------------------------
class _Paced(Monitor):
    """New gaps at LATENCY_RATE/s; remembers when each was published."""

    sent: dict[str, float] = {}

    async def run(self) -> None:
        interval = 1 / LATENCY_RATE
        next_at = time.perf_counter()
        for i in range(LATENCY_RATE * LATENCY_SECONDS):
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
            name = f"lat/test_l.py::t{i}"
            _Paced.sent[name] = time.perf_counter()
            self.ctx.publisher.publish(_signal(name))
        await asyncio.Event().wait()


async def _latency(directory: Path, url: str) -> tuple[list[float], int]:
    svc = Service(_config(directory, url, "both"), factories={"test": _Paced})
    seen: list[float] = []

    def on_written(_start: int, lines: list[bytes]) -> None:
        now = time.perf_counter()
        for line in lines:
            name = orjson.loads(line)["metadata"]["gap_name"]
            sent = _Paced.sent.pop(name, None)
            if sent is not None:
                seen.append(now - sent)

    svc.feed.listeners.append(on_written)
    task = asyncio.create_task(svc.run())
    deadline = time.monotonic() + LATENCY_SECONDS + 60
    while len(seen) < LATENCY_RATE * LATENCY_SECONDS and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    svc.request_stop()
    await task
    return seen, LATENCY_RATE * LATENCY_SECONDS


# -- throughput: one core Service drains a loaded stream ---------------------------------------
async def _core_drain(directory: Path, url: str, count: int, stream: str, bucket: str
                      ) -> float:
    svc = Service(_config(directory, url, "core", stream=stream, bucket=bucket))
    task = asyncio.create_task(svc.run())
    started = time.perf_counter()
    while True:
        core = svc.cluster.core if svc.cluster is not None else None
        done = core.applied + core.duplicates if core is not None else 0
        if done >= count:
            break
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    svc.request_stop()
    await task
    return elapsed


async def _throughput(tmp: Path, url: str, report: Report) -> None:
    fresh = _payloads(THROUGHPUT_SIGNALS)
    publish_s = await _publish_all(url, fresh)
    bare_s = await _consume_all(url, THROUGHPUT_SIGNALS, "bare-consumer")
    core_s = await _core_drain(tmp / "core-new", url, THROUGHPUT_SIGNALS, STREAM, "q_new")
    n = THROUGHPUT_SIGNALS
    bare = f"bare nats-py same run: publish {n / publish_s:,.0f}/s, fetch+ack {n / bare_s:,.0f}/s"
    report.add("cluster", f"one core, {n:,} new gaps (a bucket key each)",
               f"{n / core_s:,.0f} signals/s ({core_s / n * 1e6:.0f} µs/signal)", bare, CMD)


# -- RSS of a core subprocess -------------------------------------------------------------------
def _rss_run(tmp: Path, server: NatsServer, report: Report) -> None:
    directory = tmp / "rss-core"
    directory.mkdir()
    proc = ServiceProcess(write_config(directory, {
        "cluster": {"role": "core", "nats_url": server.url, "host": "rss"},
    }))
    proc.start(timeout=30)
    try:
        rss: list[float] = []
        started = time.perf_counter()
        step = 10_000

        for start in range(0, RSS_SIGNALS, step):
            batch = _payloads(step, RSS_GAPS, offset=start)
            asyncio.run(_publish_all(server.url, batch))
            target = start + step
            deadline = time.monotonic() + 120
            while True:
                core = proc.health().get("cluster", {}).get("core", {})
                if core.get("applied", 0) + core.get("duplicates", 0) >= target:
                    break
                assert time.monotonic() < deadline, core
                time.sleep(0.1)
            assert proc.proc is not None
            rss.append(psutil.Process(proc.proc.pid).memory_info().rss / 2**20)
        elapsed = time.perf_counter() - started
    finally:
        proc.stop(timeout=20)
    report.add("cluster", f"core subprocess RSS while {RSS_SIGNALS:,} signals pass "
               f"({RSS_GAPS:,} gaps repeated)",
               f"{rss[0]:.1f} MiB after 10 k, {rss[-1]:.1f} MiB after {RSS_SIGNALS // 1000} k "
               f"(max {max(rss):.1f})", f"{RSS_SIGNALS / elapsed:,.0f} signals/s end to end",
               CMD)


def run(report: Report) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        with NatsServer(tmp / "nats-latency") as server:
            trips = asyncio.run(_bare_round_trip(server.url))
            seen, sent = asyncio.run(_latency(tmp / "lat", server.url))
        report.add(
            "cluster", f"edge write -> core feed line, {LATENCY_RATE}/s new gaps, "
            f"{len(seen)}/{sent} lines",
            f"p50 {ms(median(seen))}, p99 {ms(percentile(seen, 99))}",
            f"bare js.publish + fetch round trip: p50 {ms(median(trips))}, "
            f"p99 {ms(percentile(trips, 99))}", CMD)
        with NatsServer(tmp / "nats-throughput") as server:
            asyncio.run(_throughput(tmp, server.url, report))
        with NatsServer(tmp / "nats-rss") as server:
            _rss_run(tmp, server, report)
