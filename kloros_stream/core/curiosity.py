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
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable
from typing import Any

import structlog

from ..models import CuriosityQuestion, QuestionStatus, Signal
from .identity import evidence_hash, gap_key, iso, priority, question_id
from .lifecycle import reopen_on_evidence
from .templates import draft_question

log = structlog.get_logger("kloros_stream.core")

MAX_FACT_CHARS = 2000


def _compact_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """Facts for the question's metadata, long strings clipped."""
    out: dict[str, Any] = {}
    for key, value in facts.items():
        if isinstance(value, str) and len(value) > MAX_FACT_CHARS:
            value = value[: MAX_FACT_CHARS - 1] + "…"
        out[key] = value
    return out


class CuriosityCore:
    def __init__(self, suppress: Iterable[str] = (), counter_flush_s: float = 60.0) -> None:
        self.suppress = tuple(suppress)
        self.counter_flush_s = counter_flush_s
        self.questions: dict[str, CuriosityQuestion] = {}
        self._last_written: dict[str, float] = {}
        self._pending: set[str] = set()
        self.created: Counter[str] = Counter()
        self.resolved: Counter[str] = Counter()
        self.suppressed = 0
        self.handled = 0

    # -- state ---------------------------------------------------------------------------
    def load(self, questions: Iterable[dict[str, Any]], now: float) -> int:
        """Adopt questions read back from the feed (latest line per id); returns the count.

        They count as written at ``now``, so a restart does not rewrite their counters early.
        """
        loaded = 0
        for data in questions:
            try:
                q = CuriosityQuestion.model_validate(data)
            except ValueError as err:
                log.error("feed_question_invalid", id=data.get("id"), error=str(err))
                continue
            self.questions[q.id] = q
            self._last_written[q.id] = now
            loaded += 1
        return loaded

    def open_questions(self) -> list[CuriosityQuestion]:
        return self.ranked(include_resolved=False)

    def ranked(self, *, include_resolved: bool) -> list[CuriosityQuestion]:
        qs = [q for q in self.questions.values() if include_resolved or q.is_open]
        return sorted(qs, key=lambda q: (-q.priority, q.id))

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
        existing = self.questions.get(qid)
        if sig.resolved:
            return self._resolve(existing, sig, now)
        draft = draft_question(facts)
        if self.is_suppressed(sig.gap_name, draft.capability_key):
            self.suppressed += 1
            return None
        if existing is None:
            return self._write(self._new_question(qid, sig, draft, now), now)
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
            return self._write(q.model_copy(update=update), now)
        self.questions[q.id] = q.model_copy(update=update)
        self._pending.add(q.id)
        return None

    def _resolve(
        self, q: CuriosityQuestion | None, sig: Signal, now: float
    ) -> CuriosityQuestion | None:
        if q is None or q.status == QuestionStatus.RESOLVED:
            return None
        self.resolved[sig.gap_type] += 1
        # A monitor's resolution wins over any consumer status: a claim ends with it.
        metadata = {k: v for k, v in q.metadata.items() if k != "claim"}
        metadata |= {"resolved_at": iso(sig.observed_at),
                     "resolution": sig.facts.get("gap_reason", "")}
        return self._write(
            q.model_copy(update={"status": QuestionStatus.RESOLVED, "updated_at": iso(now),
                                 "metadata": metadata}),
            now,
        )

    def put(self, q: CuriosityQuestion, now: float) -> CuriosityQuestion:
        """Adopt a question changed outside the signal path (a consumer transition)."""
        return self._write(q, now)

    def _write(self, q: CuriosityQuestion, now: float) -> CuriosityQuestion:
        self.questions[q.id] = q
        self._last_written[q.id] = now
        self._pending.discard(q.id)
        return q

    # -- deferred counter updates --------------------------------------------------------
    def next_due(self) -> float | None:
        """When the earliest pending counter update may be written (None: nothing pending)."""
        if not self._pending:
            return None
        return min(self._last_written.get(i, 0.0) for i in self._pending) + self.counter_flush_s

    def due_updates(self, now: float, *, force: bool = False) -> list[CuriosityQuestion]:
        """Questions whose counters changed and whose last line is old enough (or all)."""
        due = [
            qid for qid in self._pending
            if force or now - self._last_written.get(qid, 0.0) >= self.counter_flush_s
        ]
        out = []
        for qid in due:
            q = self.questions[qid].model_copy(update={"updated_at": iso(now)})
            out.append(self._write(q, now))
        return out
