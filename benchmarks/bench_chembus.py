"""The ChemBus bridge on a real ZeroMQ forwarder (zmq.proxy XSUB/XPUB on loopback in a
thread): signal -> frame received latency at a steady rate, and throughput of a burst,
each beside a bare pyzmq PUB sending the same messages through the same forwarder to the
same subscriber in the same run.

Latency is measured from the moment the signal is handed to the sink (``on_signals``, as
the consumer does; for the bare PUB: the moment its message is built) to the moment the
subscriber thread has the frames, both on ``time.time()`` of the same machine.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from kloros_stream.config import ChemBusConfig, SupervisorConfig
from kloros_stream.models import Signal
from kloros_stream.sinks.chembus import ChemBusSink
from kloros_stream.supervisor import BackoffPolicy

from .common import Report, median, percentile

RATE = 1000
LATENCY_N = 5000
WARMUP = 200
BURST_N = 200_000
BATCH = 4096
SLOW_RATE = 100_000
SLOW_BATCH = 1000
CMD = "python -m benchmarks chembus"


class Forwarder:
    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.xsub, self.xpub = self.ctx.socket(zmq.XSUB), self.ctx.socket(zmq.XPUB)
        xs = self.xsub.bind_to_random_port("tcp://127.0.0.1")
        xp = self.xpub.bind_to_random_port("tcp://127.0.0.1")
        self.xsub_ep, self.xpub_ep = f"tcp://127.0.0.1:{xs}", f"tcp://127.0.0.1:{xp}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            zmq.proxy(self.xsub, self.xpub)
        except zmq.ContextTerminated:
            pass
        finally:
            self.xsub.close(0)
            self.xpub.close(0)

    def stop(self) -> None:
        self.ctx.term()
        self.thread.join(5)


class Receiver(threading.Thread):
    """A KLoROS-style SUB (prefix ``CAPABILITY_GAP``) keeping (receive time, payload)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 1_000_000)
        self.sock.connect(endpoint)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"CAPABILITY_GAP")
        self.got: list[tuple[float, bytes]] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            if self.sock.poll(100):
                while True:
                    try:
                        _, payload = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.got.append((time.time(), payload))

    def stop(self) -> None:
        self.running = False
        self.join(5)
        self.sock.close(0)
        self.ctx.term()


def _wait(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _signal(i: int) -> Signal:
    return Signal(ecosystem="bench", monitor="bench", incident_id=f"bench:{i}",
                  facts={"gap_type": "missing_tool", "gap_name": f"tool-{i}",
                         "gap_category": "tools", "gap_reason": "not on PATH"})


def _bare_frames(i: int, now: float) -> list[bytes]:
    """What KLoROS's UMNPub.emit sends: the topic and compact JSON of the UMNMessage."""
    msg = {"signal": "CAPABILITY_GAP", "ecosystem": "bench", "intensity": 1.0,
           "facts": {"gap_type": "missing_tool", "gap_name": f"tool-{i}",
                     "gap_category": "tools", "gap_reason": "not on PATH",
                     "observed_at": now},
           "incident_id": f"bench:{i}", "trace": None, "ts": now, "schema_version": 1,
           "channel": "legacy"}
    return [b"CAPABILITY_GAP", json.dumps(msg, separators=(",", ":")).encode()]


def _latencies(rx: Receiver) -> list[float]:
    out = []
    for t, payload in rx.got:
        observed = json.loads(payload)["facts"]["observed_at"]
        out.append(t - observed)
    return out[WARMUP:]


def _summary(lat: list[float]) -> str:
    return (f"p50 {median(lat) * 1000:.3f} ms, p99 {percentile(lat, 99) * 1000:.3f} ms "
            f"(n={len(lat)})")


async def _ours(fwd: Forwarder, state: Path) -> dict[str, Any]:
    sink = ChemBusSink(ChemBusConfig(enabled=True, xsub=fwd.xsub_ep, xpub=fwd.xpub_ep,
                                     ingest_gaps=False, publish_questions=False),
                       state, _Null(), BackoffPolicy.from_config(SupervisorConfig()))
    rx = Receiver(fwd.xpub_ep)
    rx.start()
    await sink.start(list)
    while not sink.subscribed(b"CAPABILITY_GAP"):
        await asyncio.sleep(0.01)
    # latency at a steady rate
    start = time.monotonic()
    for i in range(LATENCY_N):
        delay = start + i / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sig = _signal(i)
        sig.observed_at = time.time()
        sink.on_signals([sig])
    await asyncio.to_thread(_wait, lambda: len(rx.got) >= LATENCY_N, 10)
    latency = _latencies(rx)
    lost = LATENCY_N - len(rx.got)
    # throughput of a burst, offered as the consumer does (batches, yielding between)
    rx.got.clear()
    signals = [_signal(i) for i in range(BATCH)]
    before = dict(sink.counters)
    t0 = time.perf_counter()
    offered = 0
    while offered < BURST_N:  # a batch, then the loop runs until the outbox is empty
        sink.on_signals(signals)
        offered += len(signals)
        while sink.outbox:
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - t0
    await asyncio.to_thread(_wait, lambda: False, 0.5)  # let the subscriber catch up
    counters = {k: v - before.get(k, 0) for k, v in sink.counters.items()}
    received = len(rx.got)
    await sink.stop()
    rx.stop()
    return {"latency": latency, "lost": lost, "offered": offered, "elapsed": elapsed,
            "counters": counters, "received": received}


async def _lag_probe(stop: asyncio.Event, lags: list[float]) -> None:
    """Event-loop lag: how late a 1 ms sleep wakes up."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - t - 0.001)


async def _slow_subscriber(fwd: Forwarder, state: Path) -> dict[str, Any]:
    """100 k signals/s for a second, offered to a subscriber that reads nothing."""
    ctx = zmq.Context()
    slow = ctx.socket(zmq.SUB)
    slow.setsockopt(zmq.RCVHWM, 100)
    slow.connect(fwd.xpub_ep)
    slow.setsockopt(zmq.SUBSCRIBE, b"CAPABILITY_GAP")
    sink = ChemBusSink(ChemBusConfig(enabled=True, xsub=fwd.xsub_ep, xpub=fwd.xpub_ep,
                                     ingest_gaps=False, publish_questions=False),
                       state, _Null(), BackoffPolicy.from_config(SupervisorConfig()))
    await sink.start(list)
    while not sink.subscribed(b"CAPABILITY_GAP"):
        await asyncio.sleep(0.01)
    signals = [_signal(i) for i in range(SLOW_BATCH)]
    idle: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_lag_probe(stop, idle))
    await asyncio.sleep(1.0)
    stop.set()
    await probe
    busy: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_lag_probe(stop, busy))
    start = time.monotonic()
    offered = 0
    for i in range(SLOW_RATE // SLOW_BATCH):  # one batch every 10 ms for one second
        delay = start + i * SLOW_BATCH / SLOW_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sink.on_signals(signals)
        offered += len(signals)
    while sink.outbox:
        await asyncio.sleep(0.001)
    stop.set()
    await probe
    counters = dict(sink.counters)
    await sink.stop()
    slow.close(0)
    ctx.term()
    return {"idle": idle, "busy": busy, "offered": offered, "counters": counters,
            "seconds": time.monotonic() - start}


class _Null:
    def publish(self, item: Signal) -> None:
        pass


def _bare(fwd: Forwarder) -> dict[str, Any]:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 1000)  # KLoROS's _ZmqPub
    pub.connect(fwd.xsub_ep)
    rx = Receiver(fwd.xpub_ep)
    rx.start()
    probe = 0
    while not rx.got:  # the slow joiner: until the subscription has reached us
        pub.send_multipart(_bare_frames(-1, time.time()))
        probe += 1
        time.sleep(0.01)
    time.sleep(0.1)
    rx.got.clear()
    start = time.monotonic()
    for i in range(LATENCY_N):
        delay = start + i / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pub.send_multipart(_bare_frames(i, time.time()))
    _wait(lambda: len(rx.got) >= LATENCY_N, 10)
    latency = _latencies(rx)
    lost = LATENCY_N - len(rx.got)
    rx.got.clear()
    t0 = time.perf_counter()
    sent = 0
    while sent < BURST_N:  # encoded per message, as UMNPub.emit does
        pub.send_multipart(_bare_frames(sent, t0), zmq.NOBLOCK)
        sent += 1
    elapsed = time.perf_counter() - t0
    time.sleep(0.5)
    received = len(rx.got)
    rx.stop()
    pub.close(0)
    ctx.term()
    return {"latency": latency, "lost": lost, "offered": sent, "elapsed": elapsed,
            "received": received}


def _loop_run(coro: Any) -> Any:
    """On uvloop, as ``kloros-stream`` runs, when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _lag(values: list[float]) -> str:
    return (f"p50 {median(values) * 1000:.2f} ms, p99 {percentile(values, 99) * 1000:.2f} ms, "
            f"max {max(values) * 1000:.2f} ms")


def run(report: Report) -> None:
    fwd = Forwarder()
    try:
        bare = _bare(fwd)
        with tempfile.TemporaryDirectory() as tmp:
            ours = _loop_run(_ours(fwd, Path(tmp) / "a"))
            slow = _loop_run(_slow_subscriber(fwd, Path(tmp) / "b"))
    finally:
        fwd.stop()
    report.add("chembus", f"signal -> frame received via forwarder, {RATE}/s",
               _summary(ours["latency"]) + f", lost {ours['lost']}",
               f"bare pyzmq PUB, same forwarder and subscriber: {_summary(bare['latency'])}, "
               f"lost {bare['lost']}", CMD)
    c = ours["counters"]
    dropped = c.get("gaps_dropped_outbox", 0) + c.get("gaps_dropped_hwm", 0)
    report.add("chembus", f"throughput, {ours['offered']:,} gaps in batches of {BATCH} "
               "(encoding included)",
               f"{c.get('gaps_sent', 0) / ours['elapsed']:,.0f} sent/s "
               f"({c.get('gaps_sent', 0):,} sent, {dropped:,} dropped and counted: "
               f"{c.get('gaps_dropped_outbox', 0):,} outbox, {c.get('gaps_dropped_hwm', 0):,} "
               f"HWM), {ours['received']:,} received",
               f"bare pyzmq PUB, json.dumps + send per message: "
               f"{bare['offered'] / bare['elapsed']:,.0f} sent/s, {bare['received']:,} received "
               "(its drops are silent)", CMD)
    c = slow["counters"]
    report.add("chembus", f"event-loop lag while {slow['offered']:,} gaps are offered at "
               f"{SLOW_RATE // 1000} k/s to a subscriber that reads nothing",
               f"{_lag(slow['busy'])}; {c.get('gaps_sent', 0):,} sent, "
               f"{c.get('gaps_dropped_hwm', 0):,} dropped at the HWM, "
               f"{c.get('gaps_dropped_outbox', 0):,} from the outbox (all counted), "
               f"done in {slow['seconds']:.2f} s",
               f"same loop idle just before: {_lag(slow['idle'])}", CMD)
