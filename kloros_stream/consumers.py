"""The consumer desk: claims, leases and statuses applied to the question store.

Each transition (see :mod:`.core.lifecycle`) is applied in one step of the event loop
(nothing can interleave: two consumers never get the same question) and appended to the
feed as one line, written to the OS before the request is acknowledged: a kill -9 after
the reply loses nothing, and a restart replays the feed to the same state. A lease reaper
sleeps until the earliest lease runs out and puts expired questions back to ``ready``.

The store it needs is small: :class:`QuestionStore` (the core, whose ``put`` records the
line in the question store) and :class:`LineSink` (that store's ``flush``: the line out to
the OS). Claims and the held count are index queries, never a walk over every question.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .core import lifecycle
from .core.curiosity import log_transition
from .core.lifecycle import ClaimRequest, LeaseRequest, NotFound, StatusRequest
from .core.store import QuestionEntry, Selection
from .models import CuriosityQuestion, QuestionStatus

log = structlog.get_logger("kloros_stream.consumers")

STATUS_EVENTS = {QuestionStatus.ANSWERED: "question_answered",
                 QuestionStatus.BLOCKED: "question_blocked",
                 QuestionStatus.READY: "question_released"}
"""The transition log event of each status a consumer may set."""


class QuestionStore(Protocol):
    @property
    def questions(self) -> Mapping[str, CuriosityQuestion]: ...

    def select(self, sel: Selection) -> list[QuestionEntry]: ...

    def put(self, q: CuriosityQuestion, now: float) -> CuriosityQuestion: ...


class LineSink(Protocol):
    def flush(self) -> int: ...


class ConsumerDesk:
    def __init__(self, store: QuestionStore, sink: LineSink,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.sink = sink
        self.on_change = on_change
        """Called after each written transition (the service's housekeeping wake-up)."""
        self._leases: list[tuple[float, str]] = []
        self._wake = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self.claims = 0
        self.empty_claims = 0
        self.lease_expired = 0
        self.transitions: Counter[str] = Counter()
        self.rejected: Counter[int] = Counter()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Index the leases of the questions read back from the feed; start the reaper."""
        for entry in self.store.select(Selection(status=QuestionStatus.IN_PROGRESS.value)):
            q = self.store.questions.get(entry.id)
            if q is not None:
                self._track(q)
        self._reaper = asyncio.create_task(self._reap(), name="lease-reaper")

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None

    # -- transitions ---------------------------------------------------------------------
    def claim(self, req: ClaimRequest, now: float | None = None) -> CuriosityQuestion | None:
        """The highest-priority ``ready`` question matching the request, now held by its
        consumer; None when there is none."""
        now = time.time() if now is None else now
        self.expire_due(now)
        best = self._best_ready(req)
        if best is None:
            self.empty_claims += 1
            return None
        self.claims += 1
        return self._commit(lifecycle.claim(best, req, now), now, event="question_claimed")

    def extend(self, qid: str, req: LeaseRequest, now: float | None = None
               ) -> CuriosityQuestion:
        now = time.time() if now is None else now
        self.expire_due(now)
        return self._commit(lifecycle.extend(self._get(qid), req, now), now,
                            event="question_lease_extended")

    def set_status(self, qid: str, req: StatusRequest, now: float | None = None
                   ) -> CuriosityQuestion:
        now = time.time() if now is None else now
        self.expire_due(now)
        q = self._get(qid)
        event = STATUS_EVENTS.get(req.status, "question_changed")
        return self._commit(lifecycle.set_status(q, req, now), now, before=q, event=event,
                            consumer=req.consumer or lifecycle.holder(q))

    def expire_due(self, now: float) -> list[CuriosityQuestion]:
        """Put every question whose lease ran out back to ``ready``."""
        out = []
        while self._leases and self._leases[0][0] <= now:
            _, qid = heapq.heappop(self._leases)
            q = self.store.questions.get(qid)
            expired = lifecycle.expire(q, now) if q is not None else None
            if expired is None:
                continue  # released, answered, extended or resolved meanwhile
            self.lease_expired += 1
            log.info("lease_expired", id=qid, consumer=lifecycle.holder(q))
            out.append(self._commit(expired, now, event=None))  # logged just above
        return out

    def _best_ready(self, req: ClaimRequest) -> CuriosityQuestion | None:
        """The highest-ranked ``ready`` question of each requested gap type, the best of
        those if the request takes it."""
        tops: list[QuestionEntry] = []
        for gap_type in sorted(req.gap_types) or [None]:
            tops += self.store.select(Selection(status=QuestionStatus.READY.value,
                                                gap_type=gap_type, limit=1))
        for entry in sorted(tops, key=lambda e: e.rank):
            q = self.store.questions.get(entry.id)
            if q is not None and req.matches(q):
                return q
        return None

    def _get(self, qid: str) -> CuriosityQuestion:
        q = self.store.questions.get(qid)
        if q is None:
            raise NotFound(f"no question {qid!r}")
        return q

    def _commit(self, q: CuriosityQuestion, now: float,
                before: CuriosityQuestion | None = None, *, event: str | None,
                consumer: str = "") -> CuriosityQuestion:
        """Store and append the question; written to the OS before this returns (an
        OSError propagates: the line stays buffered for the next flush, unacknowledged)."""
        if q is before:
            return q  # the same request again: nothing to write
        self.store.put(q, now)
        self.transitions[q.status.value] += 1
        if event is not None:
            log_transition(event, q, consumer=lifecycle.holder(q) or consumer)
        self._track(q)
        self.on_change()
        self.sink.flush()
        return q

    # -- leases --------------------------------------------------------------------------
    def _track(self, q: CuriosityQuestion) -> None:
        until = lifecycle.lease_until(q)
        if until is None:
            return
        first = not self._leases or until < self._leases[0][0]
        heapq.heappush(self._leases, (until, q.id))
        if first:
            self._wake.set()

    async def _reap(self) -> None:
        while True:
            timeout = None if not self._leases else max(0.0, self._leases[0][0] - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                self.expire_due(time.time())
            except OSError:
                log.exception("lease_expiry_write_failed")
                await asyncio.sleep(1.0)

    @property
    def held(self) -> int:
        return len(self.store.select(Selection(status=QuestionStatus.IN_PROGRESS.value)))


class ConsumerCollector(Collector):
    """The desk's and the stream's counters for ``/metrics``."""

    def __init__(self, desk: ConsumerDesk, stream_stats: Callable[[], dict[str, int]]
                 ) -> None:
        self.desk = desk
        self.stream_stats = stream_stats

    def collect(self) -> Iterator[Metric]:
        desk, prefix = self.desk, "kloros_stream"
        yield CounterMetricFamily(f"{prefix}_claims", "Questions handed out by claims.",
                                  value=desk.claims)
        yield CounterMetricFamily(f"{prefix}_claims_empty", "Claims that found no question.",
                                  value=desk.empty_claims)
        yield CounterMetricFamily(f"{prefix}_leases_expired",
                                  "Claimed questions put back to ready when their lease ran "
                                  "out.", value=desk.lease_expired)
        transitions = CounterMetricFamily(f"{prefix}_consumer_transitions",
                                          "Consumer transitions written, by new status.",
                                          labels=["status"])
        for status, n in sorted(desk.transitions.items()):
            transitions.add_metric([status], n)
        yield transitions
        rejected = CounterMetricFamily(f"{prefix}_consumer_requests_rejected",
                                       "Consumer requests refused, by HTTP status.",
                                       labels=["code"])
        for code, n in sorted(desk.rejected.items()):
            rejected.add_metric([str(code)], n)
        yield rejected
        stats = self.stream_stats()
        yield GaugeMetricFamily(f"{prefix}_stream_clients", "Connected stream clients.",
                                value=stats["clients"])
        yield CounterMetricFamily(f"{prefix}_stream_events", "Stream events sent.",
                                  value=stats["events_sent"])
        yield CounterMetricFamily(f"{prefix}_stream_clients_dropped",
                                  "Stream clients disconnected for falling too far behind.",
                                  value=stats["dropped"])

