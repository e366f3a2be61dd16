"""Consumers over loopback HTTP against a real ``kloros-stream run``: claim -> answer round
trips per second, gap on disk -> SSE event latency, idle CPU with 100 stream clients."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
import psutil

from kloros_stream.core.lifecycle import parse_iso
from tests.support.consumers import seed_feed
from tests.support.service import ServiceProcess, append_chaos, chaos_config, write_config

from .common import Report, median, ms, percentile

CMD = "python -m benchmarks consumers"
QUESTIONS = 5000
ROUND_TRIP_S = 10.0
LATENCY_SAMPLES = 300
LATENCY_GAP_S = 0.02
IDLE_CLIENTS = 100
IDLE_S = 60.0


async def _round_trips(base: str, consumers: int, seconds: float) -> tuple[int, float]:
    """Claim then answer in a loop per consumer, for ``seconds``; (round trips, wall)."""
    done = 0
    deadline = time.monotonic() + seconds

    async def consumer(session: aiohttp.ClientSession, name: str) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            async with session.post(base + "/questions/claim",
                                    data=orjson.dumps({"consumer": name})) as resp:
                if resp.status == 204:
                    return
                q = await resp.json()
            async with session.post(base + f"/questions/{q['id']}/status", data=orjson.dumps(
                    {"status": "answered", "note": "bench", "consumer": name})) as resp:
                assert resp.status == 200, await resp.text()
            done += 1

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(consumer(session, f"c{i}") for i in range(consumers)))
    return done, time.monotonic() - started


async def _health_rate(base: str, seconds: float) -> float:
    n = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(base + "/health") as resp:
                await resp.read()
            n += 1
    return n / seconds


def bench_round_trips(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-consumers-") as tmp:
        directory = Path(tmp)
        seed_feed(directory / "var" / "feed.jsonl", QUESTIONS)
        with ServiceProcess(write_config(directory, {"service": {"log_level": "info"}})
                            ) as proc:
            base = f"http://127.0.0.1:{proc.port}"
            health = asyncio.run(_health_rate(base, 3.0))
            one, wall1 = asyncio.run(_round_trips(base, 1, ROUND_TRIP_S))
            two, wall2 = asyncio.run(_round_trips(base, 2, ROUND_TRIP_S))
    report.add("consumers.round_trip", f"claim -> answer over loopback HTTP, 1 consumer "
               f"({QUESTIONS} questions)", f"{one / wall1:.0f} round trips/s",
               f"same run, GET /health: {health:.0f} requests/s (a round trip is 2 "
               f"requests: floor {health / 2:.0f}/s)", CMD)
    report.add("consumers.round_trip", "claim -> answer, 2 concurrent consumers",
               f"{two / wall2:.0f} round trips/s", "each question claimed once (the e2e "
               "test checks that)", CMD)


async def _sse_latency(proc: ServiceProcess, directory: Path
                       ) -> tuple[list[float], list[float]]:
    """(disk -> SSE event, disk -> the question's ``updated_at``) per gap, seconds."""
    url = f"http://127.0.0.1:{proc.port}/questions/stream"
    sent: dict[str, float] = {}
    got: list[float] = []
    built: list[float] = []
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        await asyncio.sleep(0.2)

        async def read() -> None:
            while len(got) < LATENCY_SAMPLES:
                line = await resp.content.readline()
                if line.startswith(b"data: "):
                    arrived = time.time()
                    q = orjson.loads(line[6:])
                    name = q["metadata"]["gap_name"]
                    got.append(arrived - sent[name])
                    built.append(parse_iso(q["updated_at"]) - sent[name])

        reader = asyncio.create_task(read())
        for i in range(LATENCY_SAMPLES):
            name = f"scenario{i}"
            sent[name] = time.time()
            append_chaos(directory, {"scenario": name, "healed": False,
                                     "error": "did not recover", "mode": "kill"})
            await asyncio.sleep(LATENCY_GAP_S)
        await asyncio.wait_for(reader, 30)
    return got, built


def _histogram_mean(proc: ServiceProcess) -> float:
    text = proc.get("/metrics")[1].decode()
    values = {}
    for line in text.splitlines():
        for key in ("kloros_stream_gap_latency_seconds_sum",
                    "kloros_stream_gap_latency_seconds_count"):
            if line.startswith(key + " "):
                values[key] = float(line.split()[1])
    return values["kloros_stream_gap_latency_seconds_sum"] / max(
        1.0, values["kloros_stream_gap_latency_seconds_count"])


def bench_sse_latency(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-sse-") as tmp:
        directory = Path(tmp)
        append_chaos(directory, {"scenario": "warm", "healed": False, "error": "x",
                                 "mode": "kill"})
        with ServiceProcess(chaos_config(directory)) as proc:
            proc.wait_feed(lambda qs: len(qs) == 1)
            lat, built = asyncio.run(_sse_latency(proc, directory))
            feed_mean = _histogram_mean(proc)
    report.add("consumers.sse", f"chaos entry on disk -> SSE event ({len(lat)} gaps)",
               f"p50 {ms(median(lat))}, p99 {ms(percentile(lat, 99))}",
               f"same run: disk -> question built (its updated_at, ms resolution) p50 "
               f"{ms(median(built))}, p99 {ms(percentile(built, 99))}; the service's "
               f"source -> feed line histogram mean {ms(feed_mean)}", CMD)


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def _idle_cpu(proc: ServiceProcess, clients: int, seconds: float) -> tuple[float, int]:
    assert proc.proc is not None
    url = f"http://127.0.0.1:{proc.port}/questions/stream"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        responses = [await session.get(url) for _ in range(clients)]
        await asyncio.sleep(2.0)
        connected = int(_metric(proc, "kloros_stream_stream_clients"))
        before, t0 = _cpu(proc.proc.pid), time.monotonic()
        await asyncio.sleep(seconds)
        used = _cpu(proc.proc.pid) - before
        wall = time.monotonic() - t0
        for resp in responses:
            resp.close()
    return used / wall * 100, connected


def bench_idle_clients(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-sse-idle-") as tmp:
        directory = Path(tmp)
        with ServiceProcess(write_config(directory, {"service": {"log_level": "info"}})
                            ) as proc:
            base_pct, _ = asyncio.run(_idle_cpu(proc, 0, IDLE_S))
            pct, n = asyncio.run(_idle_cpu(proc, IDLE_CLIENTS, IDLE_S))
    report.add("consumers.idle", f"idle CPU with {n} connected stream clients over "
               f"{IDLE_S:.0f} s", f"{pct:.3f} % of a core",
               f"same service, no client: {base_pct:.3f} %; target < 0.5 %", CMD)


def _metric(proc: ServiceProcess, name: str) -> float:
    for line in proc.get("/metrics")[1].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def run(report: Report) -> None:
    bench_round_trips(report)
    bench_sse_latency(report)
    bench_idle_clients(report)
