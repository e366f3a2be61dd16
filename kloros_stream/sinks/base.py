"""The Sink shape: what leaves the process after the core, each way with its own counters.

Sources (monitors) -> bus -> core -> feed -> **sinks**. The feed is the one durable record
and is written by the service itself; every other way out (the snapshot file, the KLoROS
feed file, the signal history, the ChemBus bridge) is a :class:`Sink`. The consumer and
housekeeping call the sinks through a :class:`SinkSet`, which isolates them: an exception
in one sink is logged and counted against that sink (state ``failing`` until its next
successful call) and never reaches the core, the feed or another sink.

Hooks (all optional, all called from the event loop, none may block on the network):

- ``on_signals(batch)``: every batch taken off the bus, before the core sees it;
- ``on_questions(written)``: the questions the consumer just appended to the feed;
- ``on_feed_written()``: after any write to the feed (consumer desk transitions too);
- ``refresh(view, now)``: from housekeeping (about once a second when something changed);
- ``start(view)`` / ``stop()``: with the service.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog

from ..models import CuriosityQuestion, Signal

log = structlog.get_logger("kloros_stream.sinks")

QuestionView = Callable[[], list[bytes]]
"""The open questions as their feed JSON (one object each, no newline), highest priority
first; read from the question store only when a sink asks."""

LOG_EVERY_N_FAILURES = 1000


class Sink:
    """One way out. Subclasses override the hooks they need and count what they do."""

    name: str = "sink"

    def __init__(self) -> None:
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.failing = False
        self.counters: dict[str, int] = {}

    def count(self, event: str, n: int = 1) -> None:
        self.counters[event] = self.counters.get(event, 0) + n

    # -- hooks -----------------------------------------------------------------------------
    def on_signals(self, batch: Sequence[Signal]) -> None:
        """Every batch the consumer took off the bus."""

    def on_questions(self, written: Sequence[CuriosityQuestion]) -> None:
        """The questions just appended to the feed (new, changed, resolved, counters)."""

    def on_feed_written(self) -> None:
        """Lines reached the feed (from the consumer or the consumer desk)."""

    def refresh(self, view: QuestionView, now: float) -> None:
        """Housekeeping: rewrite derived files if something changed."""

    async def start(self, view: QuestionView) -> None:
        """Called once when the service has recovered the feed."""

    async def stop(self) -> None:
        """Flush and release; called once at shutdown (or when a reload replaces it)."""

    # -- views -----------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return "failing" if self.failing else "running"

    def details(self) -> dict[str, Any]:
        """Sink-specific facts for /health (paths, link state, ...)."""
        return {}

    def gauges(self) -> dict[str, float]:
        """Levels for /metrics (``kloros_stream_sink_gauge{sink, name}``)."""
        return {}

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "errors": self.errors, "last_error": self.last_error,
                "details": self.details(), "counters": dict(self.counters)}


class SinkSet:
    """The service's sinks, called in order, each call isolated from the others."""

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self.sinks: dict[str, Sink] = {}
        for sink in sinks:
            self.add(sink)

    def add(self, sink: Sink) -> None:
        if sink.name in self.sinks:
            raise ValueError(f"two sinks named {sink.name!r}")
        self.sinks[sink.name] = sink

    def get(self, name: str) -> Sink | None:
        return self.sinks.get(name)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self.sinks.values()))

    def __len__(self) -> int:
        return len(self.sinks)

    def _guard(self, sink: Sink, hook: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as err:
            self._failed(sink, hook, err)
        else:
            if sink.failing:
                sink.failing = False
                log.info("sink_recovered", sink=sink.name, hook=hook, errors=sink.errors)

    @staticmethod
    def _failed(sink: Sink, hook: str, err: BaseException) -> None:
        sink.errors += 1
        sink.last_error = f"{hook}: {type(err).__name__}: {err}"
        sink.last_error_at = time.time()
        if not sink.failing or sink.errors % LOG_EVERY_N_FAILURES == 0:
            log.error("sink_failed", sink=sink.name, hook=hook, errors=sink.errors,
                      error=sink.last_error, exc_info=err)
        sink.failing = True

    def on_signals(self, batch: Sequence[Signal]) -> None:
        for sink in self:
            self._guard(sink, "on_signals", sink.on_signals, batch)

    def on_questions(self, written: Sequence[CuriosityQuestion]) -> None:
        if written:
            for sink in self:
                self._guard(sink, "on_questions", sink.on_questions, written)

    def on_feed_written(self) -> None:
        for sink in self:
            self._guard(sink, "on_feed_written", sink.on_feed_written)

    def refresh(self, view: QuestionView, now: float) -> None:
        for sink in self:
            self._guard(sink, "refresh", sink.refresh, view, now)

    async def start(self, view: QuestionView) -> None:
        for sink in self:
            await self.start_one(sink, view)

    async def start_one(self, sink: Sink, view: QuestionView) -> None:
        try:
            await sink.start(view)
        except Exception as err:
            self._failed(sink, "start", err)

    async def stop(self) -> None:
        for sink in self:
            await self.stop_one(sink)

    async def stop_one(self, sink: Sink) -> None:
        try:
            await sink.stop()
        except Exception as err:
            self._failed(sink, "stop", err)

    async def replace(self, name: str, new: Sink | None, view: QuestionView) -> None:
        """Stop the sink called ``name`` (if any) and start ``new`` in its place."""
        old = self.sinks.pop(name, None)
        if old is not None:
            await self.stop_one(old)
        if new is not None:
            self.add(new)
            await self.start_one(new, view)

    def health(self) -> dict[str, dict[str, Any]]:
        return {sink.name: sink.as_json() for sink in self}

    @property
    def failing(self) -> list[str]:
        return [sink.name for sink in self if sink.state in ("failing", "failed")]
