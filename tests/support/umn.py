"""A real KLoROS-style ZeroMQ bus for tests: the XSUB/XPUB forwarder and clients that frame
messages as KLoROS's ``umn_bus.py`` does (HomoYouDidnt/kloros at commit 09c094d7).

- :class:`Forwarder`: ``zmq.proxy_steerable`` over XSUB (publishers connect) and XPUB
  (subscribers connect) bound on free loopback ports, in a thread the test starts; it can
  be stopped (killed) and started again on the same ports.
- :func:`kloros_frames`: ``[topic, json.dumps(UMNMessage.__dict__, separators=(",", ":"))]``.
- :class:`KlorosSub`: an asyncio SUB with KLoROS's prefix subscription, and
  :class:`UmnReplay`, ``UMNSub``'s 60 s replay defense, to read messages as KLoROS would.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from typing import Any

import zmq
import zmq.asyncio


class Forwarder:
    def __init__(self) -> None:
        self.xsub_port = 0
        self.xpub_port = 0
        self._ctx: zmq.Context[Any] | None = None
        self._thread: threading.Thread | None = None
        self._control: Any = None
        self.runs = 0

    @property
    def xsub(self) -> str:
        return f"tcp://127.0.0.1:{self.xsub_port}"

    @property
    def xpub(self) -> str:
        return f"tcp://127.0.0.1:{self.xpub_port}"

    def start(self) -> Forwarder:
        ctx = zmq.Context()
        xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
        for sock in (xsub, xpub):
            sock.setsockopt(zmq.LINGER, 0)
        if self.xsub_port:
            xsub.bind(self.xsub)
            xpub.bind(self.xpub)
        else:
            self.xsub_port = xsub.bind_to_random_port("tcp://127.0.0.1")
            self.xpub_port = xpub.bind_to_random_port("tcp://127.0.0.1")
        address = f"inproc://forwarder-control-{id(self)}-{self.runs}"
        control_in = ctx.socket(zmq.PAIR)
        control_in.bind(address)
        self._control = ctx.socket(zmq.PAIR)
        self._control.connect(address)

        def serve() -> None:
            try:
                zmq.proxy_steerable(xsub, xpub, None, control_in)
            except zmq.ContextTerminated:
                pass
            finally:
                for sock in (xsub, xpub, control_in):
                    sock.close(linger=0)

        self._ctx = ctx
        self._thread = threading.Thread(target=serve, name="umn-forwarder", daemon=True)
        self._thread.start()
        self.runs += 1
        return self

    def stop(self) -> None:
        """Kill the forwarder: every connection drops, queued messages are lost."""
        if self._thread is None or self._ctx is None:
            return
        self._control.send(b"TERMINATE")
        self._thread.join(5)
        self._control.close(linger=0)
        self._ctx.term()
        self._thread = None
        self._ctx = None


def umn_message(signal: str, *, ecosystem: str, facts: dict[str, Any],
                incident_id: str | None = None, intensity: float = 1.0) -> dict[str, Any]:
    """``UMNMessage(...).__dict__``: its fields and defaults, in its order."""
    return {"signal": signal, "ecosystem": ecosystem, "intensity": intensity, "facts": facts,
            "incident_id": incident_id, "trace": None, "ts": time.time(),
            "schema_version": 1, "channel": "legacy"}


def kloros_frames(signal: str, **kw: Any) -> list[bytes]:
    msg = umn_message(signal, **kw)
    return [signal.encode("utf-8"), json.dumps(msg, separators=(",", ":")).encode("utf-8")]


class KlorosPub:
    """A PUB connected to the forwarder's XSUB, as ``_ZmqPub`` (HWM 1000)."""

    def __init__(self, ctx: zmq.asyncio.Context, forwarder: Forwarder) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, 1000)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(forwarder.xsub)

    async def send(self, frames: list[bytes]) -> None:
        await self.sock.send_multipart(frames)

    def close(self) -> None:
        self.sock.close(linger=0)


class KlorosSub:
    """A SUB connected to the forwarder's XPUB with one prefix subscription (as ``_ZmqSub``)."""

    def __init__(self, ctx: zmq.asyncio.Context, forwarder: Forwarder, topic: str,
                 rcvhwm: int = 1000) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 50)
        self.sock.connect(forwarder.xpub)
        self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))

    async def recv(self, timeout: float = 10.0) -> tuple[str, dict[str, Any], list[bytes]]:
        """The next message: topic, decoded JSON and the raw frames."""
        frames = await asyncio.wait_for(self.sock.recv_multipart(), timeout)
        return frames[0].decode("utf-8"), json.loads(frames[1].decode("utf-8")), frames

    async def recv_until(self, predicate: Any, timeout: float = 10.0
                         ) -> list[tuple[str, dict[str, Any], list[bytes]]]:
        """Messages up to and including the first for which ``predicate(topic, msg)``."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            item = await self.recv(max(0.01, deadline - time.monotonic()))
            got.append(item)
            if predicate(item[0], item[1]):
                return got

    async def drain(self, quiet_s: float = 0.3) -> list[tuple[str, dict[str, Any]]]:
        """Everything that arrives until nothing has for ``quiet_s``."""
        got = []
        while await self.sock.poll(int(quiet_s * 1000)):
            frames = await self.sock.recv_multipart()
            got.append((frames[0].decode("utf-8"), json.loads(frames[1].decode("utf-8"))))
        return got

    def close(self) -> None:
        self.sock.close(linger=0)


class UmnReplay:
    """``UMNSub._is_duplicate``/``_mark_processed``: incident ids processed in the last 60 s."""

    def __init__(self) -> None:
        self.processed: OrderedDict[str, float] = OrderedDict()

    def accept(self, msg: dict[str, Any]) -> bool:
        incident_id = msg.get("incident_id")
        now = time.time()
        while self.processed and next(iter(self.processed.values())) < now - 60.0:
            self.processed.popitem(last=False)
        if incident_id and incident_id in self.processed:
            return False
        if incident_id:
            self.processed[incident_id] = now
        return True
