"""The ChemBus bridge: our gaps and questions onto KLoROS's ZeroMQ bus, its gaps into ours.

A sink (hooks called from the consumer, never blocking) plus one supervised link task
that owns the sockets (pyzmq): an XPUB connected to the forwarder's XSUB, written with
NOBLOCK, whose subscription messages tell which topics someone listens to (KLoROS's
forwarder passes subscriptions upstream); an asyncio SUB; socket monitors for the links.
The wire format is :mod:`.umn`; the behaviour is documented in docs/sinks.md.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ..config import ChemBusConfig
from ..models import CuriosityQuestion, Signal
from ..monitors.base import MonitorStatus, Publisher
from ..supervisor import BackoffPolicy, Supervised
from .base import QuestionView, Sink
from .kloros import INVESTIGATE_SIGNAL, sent_key, value_ratio
from .sent import SentLedger
from .umn import (
    GAP_TOPIC,
    INGEST_MONITOR,
    RESOLVED_TOPIC,
    Rejected,
    ReplayWindow,
    decode_gap,
    gap_frames,
    question_frames,
)

log = structlog.get_logger("kloros_stream.sinks.chembus")

SEND_HWM = 1000
"""KLoROS's ``_ZmqPub`` high-water mark."""
RECV_HWM = 10_000
OUTBOX_MAX = 10_000
SLICE_S = 0.001
"""The sender and receiver give the loop back after about this long (checked every 16)."""
HWM_RETRY_S = 0.05
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 2000
LOG_EVERY = 1000
LEDGER_FILE = Path("chembus") / "questions_sent.jsonl"
GAP_TOPIC_B = GAP_TOPIC.encode()
RESOLVED_TOPIC_B = RESOLVED_TOPIC.encode()
QUESTION_TOPIC_B = INVESTIGATE_SIGNAL.encode()


class ChemBusSink(Sink):
    name = "chembus"

    def __init__(self, config: ChemBusConfig, state_dir: Path, publisher: Publisher,
                 policy: BackoffPolicy) -> None:
        super().__init__()
        self.config = config
        self.publisher = publisher
        self.policy = policy
        self.status = MonitorStatus()
        self.ledger = SentLedger(state_dir / LEDGER_FILE)
        self.outbox: deque[Signal] = deque()
        """Gaps to send, encoded only when sent (a dropped gap costs no encoding)."""
        self.pending: dict[str, CuriosityQuestion] = {}
        self.replay = ReplayWindow()
        self.link_out = "off" if not (config.publish_gaps or config.publish_questions) else "down"
        self.link_in = "down" if config.ingest_gaps else "off"
        self.subscriptions: set[bytes] = set()
        """Topic prefixes someone behind the forwarder subscribed to (from our XPUB)."""
        self.wake = asyncio.Event()
        self._supervised: Supervised | None = None

    # -- hooks (from the consumer: never block) --------------------------------------------
    def on_signals(self, batch: Sequence[Signal]) -> None:
        if not self.config.publish_gaps:
            return
        queued = 0
        for sig in batch:
            if sig.monitor == INGEST_MONITOR:
                continue  # KLoROS's own gaps never go back out
            if len(self.outbox) >= OUTBOX_MAX:
                self.outbox.popleft()
                self.count("gaps_dropped_outbox")
            self.outbox.append(sig)
            queued += 1
        if queued:
            self.wake.set()

    def on_questions(self, written: Sequence[CuriosityQuestion]) -> None:
        if self.config.publish_questions:
            for q in written:
                self._offer(q)
            if self.pending:
                self.wake.set()

    def _offer(self, q: CuriosityQuestion) -> None:
        if not q.is_open:
            self.pending.pop(q.id, None)
        elif value_ratio(q) < self.config.value_threshold:
            self.pending.pop(q.id, None)
            self.count("questions_below_threshold")
        elif not self.ledger.was_sent(q.id, sent_key(q)):
            self.pending[q.id] = q

    async def start(self, view: QuestionView) -> None:
        self.ledger.open()
        if self.config.publish_questions:
            for raw in view():
                try:
                    self._offer(CuriosityQuestion.model_validate_json(raw))
                except ValueError as err:
                    self.count("questions_unreadable")
                    log.error("chembus_question_unreadable", error=str(err)[:200])
        self._supervised = Supervised(self.name, lambda: _Link(self), self.status, self.policy)
        self._supervised.start()
        log.info("chembus_started", xsub=self.config.xsub, xpub=self.config.xpub,
                 pending_questions=len(self.pending))

    async def stop(self) -> None:
        if self._supervised is not None:
            await self._supervised.stop()
            self.status.state = "stopped"
        self.ledger.close()

    # -- views -----------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return "failing" if self.failing else self.status.state

    def details(self) -> dict[str, Any]:
        return {"xsub": self.config.xsub, "xpub": self.config.xpub,
                "link_out": self.link_out, "link_in": self.link_in,
                "outbox": len(self.outbox), "pending_questions": len(self.pending),
                "subscriptions": len(self.subscriptions),
                "gap_subscribers": self.subscribed(GAP_TOPIC_B),
                "question_subscribers": self.subscribed(QUESTION_TOPIC_B),
                "restarts": self.status.restarts, "link_error": self.status.last_error}

    def subscribed(self, topic: bytes) -> bool:
        """Would a subscriber behind the forwarder receive ``topic`` (prefix match)?"""
        return any(topic.startswith(prefix) for prefix in self.subscriptions)

    def gauges(self) -> dict[str, float]:
        return {"outbox": len(self.outbox), "pending_questions": len(self.pending),
                "link_out_up": float(self.link_out == "up"),
                "link_in_up": float(self.link_in == "up")}


def try_send(sock: Any, frames: list[bytes]) -> bool:
    """Send without waiting on a plain socket; False at the high-water mark (``Again``)."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True


class _Link:
    """One life of the sockets; the supervisor restarts it after a crash."""

    def __init__(self, sink: ChemBusSink) -> None:
        self.sink = sink
        self.log_counts: dict[str, int] = {}

    async def run(self) -> None:
        s, cfg = self.sink, self.sink.config
        ctx = zmq.Context()
        actx = zmq.asyncio.Context.shadow(ctx)
        sockets: list[Any] = []
        try:
            async with asyncio.TaskGroup() as tg:
                if s.link_out != "off":
                    pub = actx.socket(zmq.XPUB)
                    sockets.append(pub)
                    pub.setsockopt(zmq.SNDHWM, SEND_HWM)
                    pub.setsockopt(zmq.XPUB_NODROP, 1)  # a full pipe raises Again: counted
                    # Every subscription, repeats included: after a reconnect the forwarder
                    # resends them and they tell who listens now.
                    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
                    self._common(pub)
                    mon = pub.get_monitor_socket()
                    sockets.append(mon)
                    pub.connect(cfg.xsub)
                    tg.create_task(self._watch(mon, "link_out"))
                    tg.create_task(self._subscriptions(pub))
                    # Sends go through a plain shadow of the same socket: pyzmq's asyncio
                    # send costs a future per message (about 3x the time).
                    tg.create_task(self._send(zmq.Socket.shadow(pub.underlying)))
                if s.link_in != "off":
                    sub = actx.socket(zmq.SUB)
                    sockets.append(sub)
                    sub.setsockopt(zmq.RCVHWM, RECV_HWM)
                    self._common(sub)
                    submon = sub.get_monitor_socket()
                    sockets.append(submon)
                    sub.connect(cfg.xpub)
                    sub.setsockopt(zmq.SUBSCRIBE, GAP_TOPIC.encode())
                    tg.create_task(self._watch(submon, "link_in"))
                    tg.create_task(self._receive(sub))
        finally:
            for attr in ("link_out", "link_in"):
                if getattr(s, attr) != "off":
                    setattr(s, attr, "down")
            s.subscriptions.clear()
            for sock in reversed(sockets):
                sock.close(linger=0)
            ctx.term()

    @staticmethod
    def _common(sock: Any) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)

    async def _watch(self, mon: Any, attr: str) -> None:
        """Follow a socket's connection through its monitor events."""
        s = self.sink
        while True:
            event = parse_monitor_message(await mon.recv_multipart())["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                setattr(s, attr, "up")
                s.count(f"{attr}_connects")
                log.info("chembus_connected", link=attr)
                s.wake.set()
            elif event == zmq.EVENT_DISCONNECTED:
                setattr(s, attr, "down")
                if attr == "link_out":  # the forwarder resends what still holds
                    s.subscriptions.clear()
                s.count(f"{attr}_disconnects")
                log.warning("chembus_disconnected", link=attr)
            elif event == zmq.EVENT_MONITOR_STOPPED:
                return

    async def _subscriptions(self, apub: Any) -> None:
        """``\x01topic`` / ``\x00topic`` from the forwarder: who listens to what."""
        while True:
            self._subscription(await apub.recv())

    def _subscription(self, frame: bytes) -> None:
        s = self.sink
        if frame[:1] == b"\x01":
            s.subscriptions.add(frame[1:])
            s.link_out = "up"  # a subscription proves the link (its monitor event may lag)
            s.count("subscribe_messages")
            s.wake.set()
        elif frame[:1] == b"\x00":
            s.subscriptions.discard(frame[1:])
            s.count("unsubscribe_messages")

    def _read_pending_subscriptions(self, sync: Any) -> None:
        """After plain sends: ZeroMQ's descriptor is edge-triggered and a send may take the
        edge of an arriving subscription, so read what is readable now."""
        while sync.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                self._subscription(sync.recv(zmq.NOBLOCK))
            except zmq.Again:
                return

    async def _send(self, pub: Any) -> None:
        s = self.sink
        while True:
            await s.wake.wait()
            s.wake.clear()
            await self._drain(pub)
            self._read_pending_subscriptions(pub)

    async def _drain(self, pub: Any) -> None:
        s = self.sink
        sent = 0
        slice_start = time.perf_counter()
        while True:
            if s.link_out != "up":
                if s.outbox:  # a socket without a peer would drop them silently
                    s.count("gaps_dropped_disconnected", len(s.outbox))
                    s.outbox.clear()
                return  # questions wait: the watcher wakes us on reconnect
            if s.outbox:
                sig = s.outbox.popleft()
                topic = RESOLVED_TOPIC_B if sig.resolved else GAP_TOPIC_B
                if not s.subscribed(topic):
                    s.count("gaps_unsubscribed")  # nobody listens: ZeroMQ would drop it
                    continue
                s.count("gaps_sent" if try_send(pub, gap_frames(sig)) else "gaps_dropped_hwm")
            elif s.pending and s.subscribed(QUESTION_TOPIC_B):
                qid, q = next(iter(s.pending.items()))
                if not try_send(pub, question_frames(q, time.time())):
                    s.count("questions_deferred_hwm")
                    await asyncio.sleep(HWM_RETRY_S)
                    continue
                del s.pending[qid]
                s.count("questions_sent")
                try:
                    s.ledger.mark(qid, sent_key(q))
                except OSError as err:
                    s.count("ledger_write_errors")
                    self._log("ledger_write_error", error=str(err))
            else:
                return  # questions wait for a subscriber: a subscription wakes us
            sent += 1
            if sent % 16 == 0 and time.perf_counter() - slice_start > SLICE_S:
                self._read_pending_subscriptions(pub)
                await asyncio.sleep(0)
                slice_start = time.perf_counter()

    async def _receive(self, sub: Any) -> None:
        s = self.sink
        received = 0
        slice_start = time.perf_counter()
        while True:
            frames = await sub.recv_multipart()
            s.count("in_received")
            received += 1
            if received % 16 == 0 and time.perf_counter() - slice_start > SLICE_S:
                await asyncio.sleep(0)
                slice_start = time.perf_counter()
            try:
                sig = decode_gap(frames, time.time())
            except Rejected as err:
                counter = "in_loop_dropped" if err.reason == "loop" else f"in_{err.reason}"
                s.count(counter)
                if err.reason != "loop":
                    self._log(counter, detail=str(err))
                continue
            if s.replay.seen(sig.incident_id):
                s.count("in_replay_dropped")
                continue
            s.publisher.publish(sig)
            s.count("in_ingested")

    def _log(self, what: str, **kw: Any) -> None:
        """Logged the first time and every :data:`LOG_EVERY` th time (no log storms)."""
        n = self.log_counts[what] = self.log_counts.get(what, 0) + 1
        if n == 1 or n % LOG_EVERY == 0:
            log.warning("chembus_" + what, occurrences=n, **kw)
