"""CuriosityCore: CAPABILITY_GAP signals in, CuriosityQuestions out.

A pure signal consumer: no I/O, no polling, the clock passed in. It keeps the current
question per id (rebuilt from the feed at start) and decides, for each signal, whether a
feed line is due now:

- a new gap: a new question, written at once;
- a repeated gap with the same evidence: occurrences and last_seen update in memory; the
  line is written later by :meth:`CuriosityCore.due_updates` (at most once per interval);
- a repeated gap whose evidence changed, or a resolved gap coming back: written at once;
- CAPABILITY_GAP_RESOLVED: the question is written again with status ``resolved``
  (whatever a consumer had set: the monitor's word wins);
- an ``answered`` question whose evidence changed is ``ready`` again (``metadata.reopened``);
- a gap matching a ``[curiosity] suppress`` glob (capability_key or gap_name): ignored.

Questions live in a :class:`~kloros_stream.core.store.QuestionStore` (in memory by
default; the service gives it the durable feed + index store): the core keeps in memory
only the questions whose counters changed since their last line (``_pending``) and when
each recent line was written.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import structlog

from ..models import CuriosityQuestion, QuestionStatus, Signal
from .identity import evidence_hash, gap_key, iso, priority, question_id
from .lifecycle import reopen_on_evidence
from .store import (
    MemoryStore,
    QuestionEntry,
    QuestionStore,
    Selection,
    entry_of_question,
    question_json,
)
from .templates import draft_question

log = structlog.get_logger("kloros_stream.core")

MAX_FACT_CHARS = 2000


def log_transition(event: str, q: CuriosityQuestion, **extra: Any) -> None:
    """One readable log line per question transition (``question_opened``,
    ``question_changed``, ``question_reopened``, ``question_resolved``, and the consumer
    ones), with the id, the gap and the priority."""
    meta = q.metadata
    log.info(event, id=q.id, gap_type=meta.get("gap_type"), gap_name=meta.get("gap_name"),
             monitor=meta.get("monitor"), status=q.status.value,
             priority=round(q.priority, 3), **extra)


def _compact_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """Facts for the question's metadata, long strings clipped."""
    out: dict[str, Any] = {}
    for key, value in facts.items():
        if isinstance(value, str) and len(value) > MAX_FACT_CHARS:
            value = value[: MAX_FACT_CHARS - 1] + "…"
        out[key] = value
    return out


class QuestionsView(Mapping[str, CuriosityQuestion]):
    """``core.questions``: every live question by id, whole (read from the store)."""

    def __init__(self, core: CuriosityCore) -> None:
        self._core = core

    def __getitem__(self, qid: str) -> CuriosityQuestion:
        q = self._core.get(qid)
        if q is None:
            raise KeyError(qid)
        return q

    def __iter__(self) -> Iterator[str]:
        return self._core.store.ids()

    def __len__(self) -> int:
        return sum(self._core.store.counts().values())


class CuriosityCore:
    def __init__(self, suppress: Iterable[str] = (), counter_flush_s: float = 60.0,
                 store: QuestionStore | None = None) -> None:
        self.suppress = tuple(suppress)
        self.counter_flush_s = counter_flush_s
        self.store: QuestionStore = store if store is not None else MemoryStore()
        self.questions = QuestionsView(self)
        self._last_written: dict[str, float] = {}
        """When recent lines were written; older ones count as written at ``_floor``."""
        self._floor = 0.0
        self._pending: dict[str, CuriosityQuestion] = {}
        """Questions whose counters changed since their last line, whole."""
        self.created: Counter[str] = Counter()
        self.resolved: Counter[str] = Counter()
        self.suppressed = 0
        self.handled = 0

    # -- state ---------------------------------------------------------------------------
    def load(self, questions: Iterable[dict[str, Any]], now: float) -> int:
        """Adopt questions read back from a feed into a :class:`MemoryStore` (latest line
        per id); returns the count. A durable store recovers by itself: see
        :meth:`recovered`.
        """
        loaded = 0
        for data in questions:
            try:
                q = CuriosityQuestion.model_validate(data)
            except ValueError as err:
                log.error("feed_question_invalid", id=data.get("id"), error=str(err))
                continue
            self.store.put(q)
            loaded += 1
        self.recovered(now)
        return loaded

    def recovered(self, now: float) -> None:
        """The store's questions count as written at ``now``, so a restart does not
        rewrite their counters early."""
        self._floor = max(self._floor, now)

    def get(self, qid: str) -> CuriosityQuestion | None:
        """The current question (live counters included), or None."""
        q = self._pending.get(qid)
        return q if q is not None else self.store.read(qid)

    def question(self, entry: QuestionEntry) -> CuriosityQuestion | None:
        return self.get(entry.id)

    def json(self, entry: QuestionEntry) -> bytes | None:
        """The question's JSON (live counters included) for a selected entry."""
        q = self._pending.get(entry.id)
        return question_json(q) if q is not None else self.store.read_json(entry)

    def select(self, sel: Selection) -> list[QuestionEntry]:
        """Ranked entries (live counters and priorities of pending questions included)."""
        pending = {qid: entry_of_question(q) for qid, q in self._pending.items()}
        if not pending:
            return self.store.select(sel)
        limit = None if sel.limit is None else sel.limit + len(pending)
        found = [e for e in self.store.select(replace(sel, limit=limit)) if e.id not in pending]
        found += [e for e in pending.values() if sel.matches(e)]
        found.sort(key=lambda e: e.rank)
        return found if sel.limit is None else found[: sel.limit]

    def open_entries(self, monitor: str) -> list[QuestionEntry]:
        """The questions a monitor raised that are not resolved (for reconciliation): an
        answered question whose gap is still there is known, not missing."""
        return [e for e in self.select(Selection(status="all", monitor=monitor))
                if e.status != QuestionStatus.RESOLVED.value]

    def counts(self) -> tuple[int, int]:
        """(open, total) live questions."""
        counts = self.store.counts()
        return sum(n for (_, is_open), n in counts.items() if is_open), sum(counts.values())

    def open_questions(self) -> list[CuriosityQuestion]:
        return self.ranked(include_resolved=False)

    def ranked(self, *, include_resolved: bool) -> list[CuriosityQuestion]:
        entries = self.select(Selection(status="all" if include_resolved else "open"))
        return [q for q in map(self.question, entries) if q is not None]

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # -- signals -------------------------------------------------------------------------
    def is_suppressed(self, gap_name: str, capability_key: str) -> bool:
        return any(
            fnmatch.fnmatchcase(capability_key, pat) or fnmatch.fnmatchcase(gap_name, pat)
            for pat in self.suppress
        )

    def handle(self, sig: Signal, now: float) -> CuriosityQuestion | None:
        """Apply one signal; returns the question if a feed line is due now."""
        self.handled += 1
        facts = sig.facts
        qid = question_id(sig.gap_type, gap_key(facts))
        if sig.resolved:
            return self._resolve(qid, sig, now)
        draft = draft_question(facts)
        if self.is_suppressed(sig.gap_name, draft.capability_key):
            self.suppressed += 1
            return None
        existing = self.get(qid)
        if existing is None:
            q = self._write(self._new_question(qid, sig, draft, now), now)
            log_transition("question_opened", q)
            return q
        return self._repeat(existing, sig, draft, now)

    def _new_question(self, qid: str, sig: Signal, draft: Any, now: float) -> CuriosityQuestion:
        self.created[sig.gap_type] += 1
        seen = iso(sig.observed_at)
        return CuriosityQuestion(
            id=qid,
            hypothesis=draft.hypothesis,
            question=draft.question,
            evidence=draft.evidence,
            evidence_hash=evidence_hash(draft.evidence),
            action_class=draft.action_class,
            autonomy=draft.autonomy,
            value_estimate=draft.value_estimate,
            cost=draft.cost,
            priority=priority(draft.value_estimate, draft.cost),
            status=QuestionStatus.READY,
            created_at=iso(now),
            updated_at=iso(now),
            capability_key=draft.capability_key,
            metadata=self._metadata(sig, occurrences=1, first_seen=seen),
        )

    def _metadata(self, sig: Signal, *, occurrences: int, first_seen: str) -> dict[str, Any]:
        facts = sig.facts
        return {
            "gap_type": sig.gap_type,
            "gap_name": sig.gap_name,
            "gap_category": facts.get("gap_category", ""),
            "ecosystem": sig.ecosystem,
            "monitor": sig.monitor,
            "occurrences": occurrences,
            "first_seen": first_seen,
            "last_seen": iso(sig.observed_at),
            "facts": _compact_facts(facts),
        }

    def _repeat(
        self, q: CuriosityQuestion, sig: Signal, draft: Any, now: float
    ) -> CuriosityQuestion | None:
        occurrences = int(q.metadata.get("occurrences", 1)) + 1
        # Keys the gap does not own (consumer claim/answer, counters) carry over.
        metadata = {**q.metadata, **self._metadata(
            sig, occurrences=occurrences, first_seen=q.metadata.get("first_seen", q.created_at)
        )}
        update: dict[str, Any] = {
            "metadata": metadata,
            "priority": priority(q.value_estimate, q.cost, occurrences),
        }
        reopened = q.status == QuestionStatus.RESOLVED
        # A fingerprinted gap (an exception) is one bug however its message varies: its
        # evidence is that of the first occurrence, so new ids in a message don't churn.
        new_hash = evidence_hash(draft.evidence)
        changed = new_hash != q.evidence_hash and "fingerprint" not in sig.facts
        if changed:
            update |= {"question": draft.question, "evidence": draft.evidence,
                       "evidence_hash": new_hash, "hypothesis": draft.hypothesis}
        if reopened:
            update["status"] = QuestionStatus.READY
            metadata["reopened"] = int(q.metadata.get("reopened", 0)) + 1
            metadata.pop("resolved_at", None)
            metadata.pop("resolution", None)
        elif changed and reopen_on_evidence(q.status, metadata):
            update["status"] = QuestionStatus.READY
            reopened = True
        if changed or reopened:
            update["updated_at"] = iso(now)
            written = self._write(q.model_copy(update=update), now)
            log_transition("question_reopened" if reopened else "question_changed", written,
                           evidence_changed=changed)
            return written
        self._pending[q.id] = q.model_copy(update=update)
        return None

    def _resolve(self, qid: str, sig: Signal, now: float) -> CuriosityQuestion | None:
        q = self._pending.get(qid)
        if q is None:
            entry = self.store.entry(qid)
            if entry is None or entry.status == QuestionStatus.RESOLVED:
                return None
            q = self.store.read(qid)
        if q is None or q.status == QuestionStatus.RESOLVED:
            return None
        self.resolved[sig.gap_type] += 1
        # A monitor's resolution wins over any consumer status: a claim ends with it.
        metadata = {k: v for k, v in q.metadata.items() if k != "claim"}
        metadata |= {"resolved_at": iso(sig.observed_at),
                     "resolution": sig.facts.get("gap_reason", "")}
        written = self._write(
            q.model_copy(update={"status": QuestionStatus.RESOLVED, "updated_at": iso(now),
                                 "metadata": metadata}),
            now,
        )
        log_transition("question_resolved", written, was=q.status.value)
        return written

    def put(self, q: CuriosityQuestion, now: float) -> CuriosityQuestion:
        """Adopt a question changed outside the signal path (a consumer transition): one
        line at the store's next flush."""
        return self._write(q, now)

    def _write(self, q: CuriosityQuestion, now: float) -> CuriosityQuestion:
        """Record a new version of ``q``: one line at the store's next flush."""
        self.store.put(q)
        self._last_written[q.id] = now
        self._pending.pop(q.id, None)
        return q

    def _written_at(self, qid: str) -> float:
        return self._last_written.get(qid, self._floor)

    # -- deferred counter updates --------------------------------------------------------
    def next_due(self) -> float | None:
        """When the earliest pending counter update may be written (None: nothing pending)."""
        if not self._pending:
            return None
        return min(map(self._written_at, self._pending)) + self.counter_flush_s

    def due_updates(self, now: float, *, force: bool = False) -> list[CuriosityQuestion]:
        """Questions whose counters changed and whose last line is old enough (or all)."""
        due = [
            qid for qid in self._pending
            if force or now - self._written_at(qid) >= self.counter_flush_s
        ]
        out = []
        for qid in due:
            q = self._pending[qid].model_copy(update={"updated_at": iso(now)})
            out.append(self._write(q, now))
        # Lines older than the interval are due like lines written at load: forget them.
        horizon = now - self.counter_flush_s
        stale = [qid for qid, at in self._last_written.items()
                 if at < horizon and qid not in self._pending]
        for qid in stale:
            del self._last_written[qid]
        return out
