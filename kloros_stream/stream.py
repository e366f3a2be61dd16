"""The question stream: every feed line, as it is written, to each subscriber.

An event's id is ``<inode>-<offset>``: the feed file's inode (hex) and the byte offset
just after the line. A subscriber that comes back with its last id gets the lines after
that offset read from the feed, then live events, with no gap and no repeat: the replay
ends at the feed's size at the moment of subscribing, and live events start there. When
the id names another file (the feed was compacted since) or an offset past the end, the
whole current feed is replayed: one line per question, its latest state, so nothing is
missed.

Each subscriber has a bounded buffer; the writer never waits for it. A subscriber whose
buffer is full is dropped: it receives an ``overflow`` item (to tell its client) and no
more events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import structlog

log = structlog.get_logger("kloros_stream.stream")

BUFFER_EVENTS = 1024
REPLAY_CHUNK = 1 << 20


@dataclass(frozen=True)
class StreamEvent:
    id: str
    data: str
    """One question as JSON (a feed line without its newline)."""


OVERFLOW = StreamEvent("", "")
CLOSED = StreamEvent("", "closed")


class Feed(Protocol):
    path: os.PathLike[str] | str

    @property
    def size(self) -> int: ...

    @property
    def inode(self) -> int: ...


def event_id(inode: int, offset: int) -> str:
    return f"{inode:x}-{offset}"


def parse_event_id(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    inode, sep, offset = text.strip().partition("-")
    try:
        return (int(inode, 16), int(offset)) if sep else None
    except ValueError:
        return None


class Subscription:
    def __init__(self, stream: QuestionStream, maxsize: int) -> None:
        self.stream = stream
        self.queue: asyncio.Queue[StreamEvent] = asyncio.Queue(maxsize)
        self.replay: tuple[BinaryIO, int, int, int] | None = None
        """(open feed file, its inode, start offset, end offset) still to send."""
        self.replayed = 0
        self.dropped = False

    def offer(self, events: list[StreamEvent]) -> None:
        if self.dropped:
            return
        for ev in events:
            try:
                self.queue.put_nowait(ev)
            except asyncio.QueueFull:
                self._drop()
                return

    def _drop(self) -> None:
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(OVERFLOW)
        self.stream.dropped += 1
        self.stream.unsubscribe(self)
        log.warning("stream_client_dropped", reason="too far behind",
                    buffer=self.queue.maxsize)

    def close(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(CLOSED)

    async def events(self) -> AsyncIterator[StreamEvent]:
        """The missed events (if any), then live ones; ends after OVERFLOW or CLOSED."""
        if self.replay is not None:
            fh, inode, start, end = self.replay
            self.replay = None
            with fh:
                async for ev in _read_lines(fh, inode, start, end):
                    self.replayed += 1
                    yield ev
        while True:
            ev = await self.queue.get()
            yield ev
            if ev is OVERFLOW or ev is CLOSED:
                return


async def _read_lines(fh: BinaryIO, inode: int, start: int, end: int
                      ) -> AsyncIterator[StreamEvent]:
    """Complete lines of ``fh`` between two offsets, read in chunks off the event loop."""
    offset = start
    rest = b""
    await asyncio.to_thread(fh.seek, start)
    while offset + len(rest) < end:
        chunk = await asyncio.to_thread(fh.read, min(REPLAY_CHUNK, end - offset - len(rest)))
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            offset += len(line) + 1
            if line.strip():
                yield StreamEvent(event_id(inode, offset), line.decode("utf-8", "replace"))


class QuestionStream:
    def __init__(self, feed: Feed, buffer_events: int = BUFFER_EVENTS) -> None:
        self.feed = feed
        self.buffer_events = buffer_events
        self.clients: set[Subscription] = set()
        self.events_sent = 0
        self.dropped = 0

    def on_written(self, start: int, lines: list[bytes]) -> None:
        """The feed's listener: lines just written from offset ``start``."""
        if not self.clients:
            return
        inode = self.feed.inode
        events = []
        offset = start
        for line in lines:
            offset += len(line)
            events.append(StreamEvent(event_id(inode, offset),
                                      line.rstrip(b"\n").decode("utf-8", "replace")))
        for sub in list(self.clients):
            sub.offer(events)

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        """A live subscription; with ``last_event_id``, the feed lines after it first."""
        sub = Subscription(self, self.buffer_events)
        if last_event_id is not None:
            sub.replay = self._replay_plan(parse_event_id(last_event_id))
        self.clients.add(sub)
        return sub

    def _replay_plan(self, last: tuple[int, int] | None
                     ) -> tuple[BinaryIO, int, int, int] | None:
        inode, end = self.feed.inode, self.feed.size
        start = last[1] if last is not None and last[0] == inode and last[1] <= end else 0
        if start >= end:
            return None
        try:
            fh = open(self.feed.path, "rb")  # noqa: SIM115 (closed by the subscription)
        except OSError as err:
            log.error("stream_replay_unavailable", path=str(self.feed.path), error=str(err))
            return None
        return fh, inode, start, end

    def unsubscribe(self, sub: Subscription) -> None:
        self.clients.discard(sub)
        if sub.replay is not None:
            with contextlib.suppress(OSError):
                sub.replay[0].close()
            sub.replay = None

    def close(self) -> None:
        """Shutdown: every subscription ends."""
        for sub in list(self.clients):
            sub.close()
        self.clients.clear()

    def stats(self) -> dict[str, int]:
        return {"clients": len(self.clients), "events_sent": self.events_sent,
                "dropped": self.dropped}
