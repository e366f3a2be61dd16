"""Suspicious-metric rules for experiment results: the one place for rules and thresholds.

Pure: records in, findings out; no I/O, no clock.

Accepted record shapes (one JSON object per line of ``experiments_file``):

1. Native::

       {"experiment_id": "exp-42", "status": "complete",
        "candidates": {"cand-a": {"pass_rate": 1.0, "latency_p50_ms": 150.0}, ...}}

   ``id`` may stand for ``experiment_id``; ``candidates`` may also be a list of
   ``{"id": "cand-a", "metrics": {...}}``. ``status`` is optional.

2. KLoROS orchestrator (``curiosity_experiments.jsonl``)::

       {"ts": "...", "intent": {"data": {"question_id": "q-1", "experiment_result": {
           "status": "complete", "artifacts": {"tournament": {"results": {
               "aggregated_by_instance": {"inst-a": {"pass_rate": 1.0, ...}, ...}}}}}}}}

   The experiment id is ``intent.data.question_id`` (else ``experiment_result.experiment_id``).

3. Any other shape: the candidates map (candidate -> numeric metrics, a dict or a list of
   ``{"id", "metrics"}``) under ``aggregated_by_instance``, ``candidates``, ``instances``
   or ``results``, at the top level or nested anywhere (the shallowest one found breadth
   first, up to :data:`MAX_DEPTH` levels). The id is the first of ``experiment_id``,
   ``experiment``, ``id``, ``name``, ``question_id`` at the shallowest level on the way
   from the record down to that map (``experiment`` may be an object holding the id)::

       {"experiment": "exp-9", "results": {"a": {"acc": 0.7}, "b": {"acc": 0.8}}}
       {"run": {"name": "r1", "instances": {"a": {...}, "b": {...}}}}

A record whose ``status`` (at any level on that way) is present and not
``complete``/``completed`` is not evaluated, nor one without an experiment id or
candidates. Only numeric metric values count
(booleans and strings are ignored); a candidate without any is dropped.

Rules (a record can match several; each reason is its own gap):

* ``identical_metrics``: at least :data:`MIN_CANDIDATES` candidates and all of them have
  exactly the same metrics (names and values): nothing is being compared.
* ``placeholder_values``: at least :data:`PLACEHOLDER_MIN_VALUES` numeric values and more
  than :data:`PLACEHOLDER_FRACTION` of them are in :data:`PLACEHOLDER_VALUES`.
* ``perfect_pass_single_latency``: at least :data:`MIN_CANDIDATES` candidates, every one
  has a pass rate (a metric named ``pass_rate`` or ending in ``_pass_rate``) and all of
  them are 1.0, and every latency metric (name containing ``latency``) has one single
  value across the candidates.

A reason's gap is resolved after :data:`RESOLVE_AFTER_CLEAN` consecutive evaluated
experiments that do not match it (see :class:`SuspicionTracker`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MIN_CANDIDATES = 2
PLACEHOLDER_VALUES: frozenset[float] = frozenset(
    {0.0, 0.5, 1.0, -1.0, 0.95, 0.99, 25.0, 42.0, 100.0, 150.0, 300.0, 512.0, 999.0, 9999.0}
)
"""Typical stand-in numbers (KLoROS saw 0.95, 150, 300, 512, 25 and 100 in fake results)."""
PLACEHOLDER_MIN_VALUES = 3
PLACEHOLDER_FRACTION = 0.5
RESOLVE_AFTER_CLEAN = 3
MAX_EXAMPLES = 5
COMPLETE_STATUSES = frozenset({"complete", "completed"})

IDENTICAL_METRICS = "identical_metrics"
PLACEHOLDER = "placeholder_values"
PERFECT_PASS_SINGLE_LATENCY = "perfect_pass_single_latency"

Metrics = dict[str, float]


@dataclass(frozen=True, slots=True)
class Experiment:
    experiment_id: str
    candidates: dict[str, Metrics]


@dataclass(frozen=True, slots=True)
class Finding:
    reason: str
    detail: str
    """One human-readable line: what was seen."""
    values: Any
    """The values that triggered the rule (small, JSON-able)."""


ID_KEYS = ("experiment_id", "experiment", "id", "name", "question_id")
"""Where an experiment's id may be, in this order at each level."""
CANDIDATE_KEYS = ("aggregated_by_instance", "candidates", "instances", "results")
"""Keys that may hold the candidates -> numeric metrics map."""
MAX_DEPTH = 8


def parse_experiment(record: Any) -> Experiment | None:
    """The experiment in ``record`` (any accepted shape), or None if not evaluable."""
    if not isinstance(record, dict):
        return None
    intent = record.get("intent")
    if isinstance(intent, dict) and isinstance(intent.get("data"), dict):
        found = _parse_kloros(intent["data"])
        if found is not None:
            return found
    located = _find_candidates(record, [record], 0)
    if located is None:
        return None
    path, candidates = located
    if not all(_complete(level) for level in path):
        return None
    exp_id = _find_id(path)
    return Experiment(exp_id, candidates) if exp_id else None


def _find_candidates(
    obj: dict[str, Any], path: list[dict[str, Any]], depth: int
) -> tuple[list[dict[str, Any]], dict[str, Metrics]] | None:
    """The shallowest candidates map under a :data:`CANDIDATE_KEYS` key (breadth first),
    with the dicts from the record down to the one holding it."""
    level: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [(obj, path)]
    while level and depth <= MAX_DEPTH:
        for node, trail in level:
            for key in CANDIDATE_KEYS:
                if key in node and (candidates := _candidates(node[key])):
                    return trail, candidates
        level = [
            (child, [*trail, child])
            for node, trail in level
            for child in node.values()
            if isinstance(child, dict)
        ]
        depth += 1
    return None


def _find_id(path: list[dict[str, Any]]) -> str | None:
    """The id nearest the record's top: the first of :data:`ID_KEYS` at the shallowest
    level that has one (``experiment`` may also be a nested object, searched in turn)."""
    for node in path:
        for key in ID_KEYS:
            value = node.get(key)
            if isinstance(value, dict):
                nested = _find_id([value])
                if nested:
                    return nested
                continue
            if ident := _ident(value):
                return ident
    return None


def _parse_kloros(data: dict[str, Any]) -> Experiment | None:
    result = data.get("experiment_result")
    if not isinstance(result, dict) or not _complete(result):
        return None
    exp_id = _ident(data.get("question_id")) or _ident(result.get("experiment_id"))
    aggregated = _dig(result, "artifacts", "tournament", "results", "aggregated_by_instance")
    candidates = _candidates(aggregated)
    return Experiment(exp_id, candidates) if exp_id and candidates else None


def _complete(record: dict[str, Any]) -> bool:
    status = record.get("status")
    return status is None or (isinstance(status, str) and status.lower() in COMPLETE_STATUSES)


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _ident(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip()):
        return str(value).strip()
    return None


def _candidates(raw: Any) -> dict[str, Metrics]:
    pairs: list[tuple[str, Any]] = []
    if isinstance(raw, dict):
        pairs = [(str(k), v) for k, v in raw.items()]
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            if isinstance(item, dict):
                name = _ident(item.get("id")) or _ident(item.get("candidate")) or str(i)
                pairs.append((name, item.get("metrics")))
    out: dict[str, Metrics] = {}
    for name, metrics in pairs:
        numeric = _numeric(metrics)
        if numeric:
            out[name] = numeric
    return out


def _numeric(metrics: Any) -> Metrics:
    if not isinstance(metrics, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # not NaN
    }


# -- rules ----------------------------------------------------------------------------------


def evaluate(experiment: Experiment) -> list[Finding]:
    """Every rule ``experiment`` matches, in the order of the module docstring."""
    findings = []
    for rule in (identical_metrics, placeholder_values, perfect_pass_single_latency):
        finding = rule(experiment)
        if finding is not None:
            findings.append(finding)
    return findings


def identical_metrics(experiment: Experiment) -> Finding | None:
    cands = list(experiment.candidates.values())
    if len(cands) < MIN_CANDIDATES or any(c != cands[0] for c in cands[1:]):
        return None
    return Finding(
        IDENTICAL_METRICS,
        f"all {len(cands)} candidates report identical metrics",
        dict(sorted(cands[0].items())),
    )


def placeholder_values(experiment: Experiment) -> Finding | None:
    values = [v for c in experiment.candidates.values() for v in c.values()]
    if len(values) < PLACEHOLDER_MIN_VALUES:
        return None
    hits = [v for v in values if v in PLACEHOLDER_VALUES]
    fraction = len(hits) / len(values)
    if fraction <= PLACEHOLDER_FRACTION:
        return None
    return Finding(
        PLACEHOLDER,
        f"{len(hits)} of {len(values)} metric values are typical placeholders",
        sorted(set(hits)),
    )


def perfect_pass_single_latency(experiment: Experiment) -> Finding | None:
    cands = list(experiment.candidates.values())
    if len(cands) < MIN_CANDIDATES:
        return None
    for metrics in cands:
        rates = [v for k, v in metrics.items() if _is_pass_rate(k)]
        if not rates or any(r != 1.0 for r in rates):
            return None
    latencies: dict[str, set[float]] = {}
    for metrics in cands:
        for key, value in metrics.items():
            if "latency" in key.lower():
                latencies.setdefault(key, set()).add(value)
    if not latencies or any(len(v) != 1 for v in latencies.values()):
        return None
    single = {k: next(iter(v)) for k, v in sorted(latencies.items())}
    return Finding(
        PERFECT_PASS_SINGLE_LATENCY,
        f"all {len(cands)} candidates pass 1.0 with one latency value each",
        single,
    )


def _is_pass_rate(name: str) -> bool:
    lowered = name.lower()
    return lowered == "pass_rate" or lowered.endswith("_pass_rate")


# -- open/resolved state per reason ---------------------------------------------------------


class Change(StrEnum):
    FLAGGED = "flagged"
    """The reason matched this experiment: publish (or refresh) its gap."""
    CLEARED = "cleared"
    """The reason stayed clean for RESOLVE_AFTER_CLEAN experiments: resolve its gap."""


@dataclass(slots=True)
class ReasonState:
    open: bool = False
    count: int = 0
    """Experiments that matched this reason (lifetime)."""
    clean_streak: int = 0
    examples: list[str] = field(default_factory=list)
    """The last MAX_EXAMPLES matching experiment ids, newest last."""


class SuspicionTracker:
    """Which reasons are open, and when they have been clean long enough to resolve."""

    def __init__(self, resolve_after: int = RESOLVE_AFTER_CLEAN) -> None:
        self.resolve_after = resolve_after
        self.reasons: dict[str, ReasonState] = {}

    def observe(self, experiment_id: str, findings: list[Finding]) -> list[tuple[Change, str]]:
        """Account one evaluated experiment; the changes it causes, in order."""
        changes: list[tuple[Change, str]] = []
        matched = {f.reason for f in findings}
        for reason in sorted(matched):
            state = self.reasons.setdefault(reason, ReasonState())
            state.open, state.clean_streak = True, 0
            state.count += 1
            if experiment_id in state.examples:
                state.examples.remove(experiment_id)
            state.examples = [*state.examples, experiment_id][-MAX_EXAMPLES:]
            changes.append((Change.FLAGGED, reason))
        for reason, state in sorted(self.reasons.items()):
            if reason in matched or not state.open:
                continue
            state.clean_streak += 1
            if state.clean_streak >= self.resolve_after:
                state.open, state.clean_streak = False, 0
                changes.append((Change.CLEARED, reason))
        return changes

    def open_reasons(self) -> list[str]:
        return sorted(r for r, s in self.reasons.items() if s.open)

    def to_json(self) -> dict[str, Any]:
        return {
            r: {"open": s.open, "count": s.count, "clean": s.clean_streak, "examples": s.examples}
            for r, s in self.reasons.items()
        }

    def load_json(self, data: Any) -> None:
        """Restore from :meth:`to_json` output; malformed entries are skipped."""
        if not isinstance(data, dict):
            return
        for reason, raw in data.items():
            if not isinstance(raw, dict):
                continue
            try:
                examples = [str(e) for e in raw.get("examples") or []][-MAX_EXAMPLES:]
                self.reasons[str(reason)] = ReasonState(
                    bool(raw.get("open")),
                    int(raw.get("count", 0)),
                    int(raw.get("clean", 0)),
                    examples,
                )
            except (TypeError, ValueError):
                continue
