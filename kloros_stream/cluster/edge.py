"""The edge: this host's signals into the JetStream stream, through the on-disk buffer.

The service's consumer hands each bus batch to :meth:`Edge.accept`, which only writes to
the :class:`~.spool.Spool` (no network, never blocks a monitor). The forwarder task sends
the buffer in order, pipelined in windows, and moves the buffer's cursor only past the
prefix JetStream acknowledged; on a failure it resends from the first unacknowledged
record (the stream's ``Nats-Msg-Id`` de-duplication drops what had already arrived).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import nats
import structlog
from nats.aio.client import Client

from ..config import ClusterConfig
from ..models import Signal
from .connect import REQUEST_TIMEOUT_S, RETRY_S, connect_forever, ensure_stream
from .spool import Spool
from .wire import MSG_ID_HEADER, encode, localise

log = structlog.get_logger("kloros_stream.cluster.edge")

WINDOW = 512
"""Records published before waiting for their acknowledgements."""


def pack(subject: str, msg_id: str, payload: bytes) -> bytes:
    """A buffer record: ``subject msg_id payload`` (neither of the first two has a space)."""
    return f"{subject} {msg_id} ".encode() + payload


def unpack(record: bytes) -> tuple[str, str, bytes]:
    subject, msg_id, payload = record.split(b" ", 2)
    return subject.decode(), msg_id.decode(), payload


class Edge:
    def __init__(self, cfg: ClusterConfig, host: str, state_dir: Path) -> None:
        self.cfg = cfg
        self.host = host
        self.spool = Spool(state_dir / "cluster" / "spool", cfg.buffer_max_signals)
        self.nc: Client | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.publish_failures = 0
        self.unencodable = 0
        self.corrupt = 0

    # -- the service side (no network) -----------------------------------------------------
    def accept(self, batch: list[Signal]) -> None:
        """Buffer a batch on disk, in order; the forwarder sends it."""
        for sig in batch:
            try:
                out = encode(self.host, self.spool.next_seq, localise(sig, self.host))
            except (TypeError, ValueError) as err:  # e.g. an integer orjson cannot write
                self.unencodable += 1
                log.error("edge_signal_unencodable", monitor=sig.monitor, error=str(err))
                continue
            self.spool.append(pack(out.subject, out.msg_id, out.payload))
        self.spool.sync()
        if self.spool.pending:
            self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._forward(), name="cluster-edge")

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Give the forwarder a moment to send what is buffered, then stop; the rest stays
        on disk for the next start."""
        if self._task is not None:
            if self.nc is not None and self.nc.is_connected and self.spool.pending:
                self._wake.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained(), timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        self.spool.close()

    async def _drained(self) -> None:
        while self.spool.pending:
            await asyncio.sleep(0.01)

    # -- the forwarder -----------------------------------------------------------------------
    async def _forward(self) -> None:
        self.nc = await connect_forever(self.cfg, f"kloros-edge-{self.host}",
                                        on_reconnect=self._on_reconnect)
        js = self.nc.jetstream(timeout=REQUEST_TIMEOUT_S)
        while True:
            try:
                await ensure_stream(js, self.cfg)
                break
            except (nats.errors.Error, OSError) as err:
                log.warning("edge_stream_unavailable", error=f"{type(err).__name__}: {err}")
                await asyncio.sleep(RETRY_S)
        log.info("edge_connected", host=self.host, pending=self.spool.pending)
        while True:
            if not self.spool.pending:
                self._wake.clear()
                await self._wake.wait()
            window = self.spool.peek(WINDOW)
            acked = await self._send(js, window)
            if acked:
                self.spool.ack(window[acked - 1][0] + 1)
                self.published += acked
            if acked < len(window):
                self.publish_failures += 1
                await asyncio.sleep(RETRY_S)
            self.spool.sync()

    async def _on_reconnect(self) -> None:
        self._wake.set()

    async def _send(self, js: Any, window: list[tuple[int, bytes]]) -> int:
        """Publish a window; returns how many leading records were acknowledged."""
        futures: list[asyncio.Future[Any]] = []
        corrupt = False
        try:
            for seq, record in window:
                try:
                    subject, msg_id, payload = unpack(record)
                except ValueError:
                    corrupt = True
                    log.error("edge_buffer_record_corrupt", seq=seq, sample=record[:80])
                    break
                futures.append(await js.publish_async(
                    subject, payload, stream=self.cfg.stream,
                    headers={MSG_ID_HEADER: msg_id}, wait_stall=REQUEST_TIMEOUT_S))
        except (nats.errors.Error, OSError) as err:
            log.warning("edge_publish_failed", error=f"{type(err).__name__}: {err}")
        if futures:
            await asyncio.wait(futures, timeout=REQUEST_TIMEOUT_S)
        acked = 0
        for fut in futures:
            if not fut.done() or fut.cancelled() or fut.exception() is not None:
                break
            acked += 1
        for fut in futures[acked:]:
            if fut.done() and not fut.cancelled() and fut.exception() is not None:
                log.warning("edge_publish_not_acked", error=str(fut.exception()))
                break
        for fut in futures:
            fut.cancel()
        if corrupt and acked == len(futures):
            self.corrupt += 1
            return acked + 1  # skip the unreadable record
        return acked

    def health(self) -> dict[str, Any]:
        return {"host": self.host, "connected": bool(self.nc and self.nc.is_connected),
                "published": self.published, "publish_failures": self.publish_failures,
                "unencodable": self.unencodable, "corrupt": self.corrupt,
                "buffer": self.spool.stats()}
