"""Question templates: one pure function per gap_type, plus a generic fallback.

Each template turns a signal's ``facts`` into a :class:`Draft`: what we suspect
(hypothesis), what to ask a person (question), the evidence, and the economics
(action class, autonomy, value, cost). No I/O, no clock: the same facts always give the
same draft.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..models import ActionClass

MAX_EVIDENCE_CHARS = 600


@dataclass(frozen=True, slots=True)
class Draft:
    hypothesis: str
    question: str
    evidence: list[str]
    action_class: ActionClass
    autonomy: int
    value_estimate: float
    cost: float
    capability_key: str


def _slug(text: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", text.upper()).strip("_")[:80] or "UNNAMED"


def _clip(text: Any, limit: int = MAX_EVIDENCE_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _listing(items: Iterable[Any], limit: int = 5) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _evidence(facts: dict[str, Any], *lines: str | None) -> list[str]:
    """The given lines (None skipped) followed by the gap reason, each clipped."""
    out = [_clip(line) for line in lines if line]
    reason = facts.get("gap_reason")
    if reason and reason not in out:
        out.append(_clip(reason))
    return out


def orphaned_queue(f: dict[str, Any]) -> Draft:
    name = f["gap_name"]
    producers = f.get("producers") or []
    return Draft(
        hypothesis=f"ORPHANED_QUEUE_{_slug(name)}",
        question=(
            f"'{name}' is filled by {_listing(producers) or 'some code'} but nothing reads it. "
            "Is this a broken integration (a missing consumer), or should the producer go?"
        ),
        evidence=_evidence(f, f"Producers: {_listing(producers, 10)}" if producers else None,
                           f"Files: {_listing(f.get('files') or [], 10)}"
                           if f.get("files") else None,
                           *(f"Filled at {line}" for line in (f.get("producer_lines") or [])[:5])),
        action_class=ActionClass.PROPOSE_FIX,
        autonomy=3,
        value_estimate=0.95,
        cost=0.2,
        capability_key=f"integration.{name}",
    )


def syntax_error(f: dict[str, Any]) -> Draft:
    name = f["gap_name"]
    where = f"line {f['line']}" if f.get("line") else "somewhere"
    return Draft(
        hypothesis=f"SYNTAX_ERROR_{_slug(name)}",
        question=f"{name} does not parse ({f.get('message', 'syntax error')} at {where}). "
        "Fix it so the module can load?",
        evidence=_evidence(f, f"{name}:{f.get('line', '?')}: {f.get('message', '')}"),
        action_class=ActionClass.PROPOSE_FIX,
        autonomy=3,
        value_estimate=0.9,
        cost=0.1,
        capability_key=f"code.{name}",
    )


def exception(f: dict[str, Any]) -> Draft:
    name = f["gap_name"]
    unit = f.get("unit") or f.get("identifier") or "a watched service"
    tb = f.get("traceback")
    return Draft(
        hypothesis=f"EXCEPTION_{_slug(name.split(':', 1)[0])}",
        question=f"{unit} raised {name}. What causes it, and how should the code handle it?",
        evidence=_evidence(
            f,
            f"Unit: {unit}",
            f"Fingerprint: {f['fingerprint']}" if f.get("fingerprint") else None,
            *(f"Code at {_clip(block, 1000)}" for block in (f.get("source_context") or [])[:3]),
            _clip(tb, 1500) if tb else None,
        ),
        action_class=ActionClass.INVESTIGATE,
        autonomy=2,
        value_estimate=0.85,
        cost=0.4,
        capability_key=f"diagnostics.{unit}.{name.split(':', 1)[0]}",
    )


def healing_failure(f: dict[str, Any]) -> Draft:
    """Counts (runs, failures, healing rate) live in the facts, not in the evidence, so
    each further failure updates counters instead of rewriting the question."""
    name = f["gap_name"]
    return Draft(
        hypothesis=f"HEALING_FAILURE_{_slug(name)}",
        question=f"Self-healing fails for chaos scenario '{name}'. "
        "Which recovery step is missing?",
        evidence=_evidence(
            f,
            f"Last error: {f['last_error']}" if f.get("last_error") else None,
        ),
        action_class=ActionClass.EXPERIMENT,
        autonomy=2,
        value_estimate=0.8,
        cost=0.5,
        capability_key=f"resilience.{name}",
    )


def test_failure(f: dict[str, Any]) -> Draft:
    """The duration (different on every run) stays in the facts, out of the evidence. A group
    (many tests, one cause) names the cause and lists its tests."""
    name = f["gap_name"]
    outcome = f.get("outcome", "failed")
    code = [
        f"Failing statement: {f['statement']}" if f.get("statement") else None,
        f"At: {f['crash_location']}" if f.get("crash_location") else None,
        f"Assertion / error detail:\n{_clip(f['explanation'], 1200)}"
        if f.get("explanation") else (f"Error: {_clip(f['error'])}" if f.get("error") else None),
    ]
    if f.get("kind") == "group":
        tests = f.get("tests") or []
        count = f.get("count", len(tests))
        return Draft(
            hypothesis=f"TEST_FAILURE_GROUP_{_slug(name)}",
            question=f"{count} tests fail with one cause ({name}). "
            "What is broken there (a fixture, a shared helper, an import), and what is the fix?",
            evidence=_evidence(f, *code, f"Tests: {_listing(tests, 10)}" if tests else None),
            action_class=ActionClass.PROPOSE_FIX,
            autonomy=3,
            value_estimate=0.9,
            cost=0.3,
            capability_key=f"quality.{name}",
        )
    return Draft(
        hypothesis=f"TEST_FAILURE_{_slug(name)}",
        question=f"Test {name} {outcome}. Is the code or the test wrong, and what is the fix?",
        evidence=_evidence(f, f"Outcome: {outcome}", *code),
        action_class=ActionClass.PROPOSE_FIX,
        autonomy=3,
        value_estimate=0.85,
        cost=0.3,
        capability_key=f"quality.{name}",
    )


def new_module(f: dict[str, Any]) -> Draft:
    name = f["gap_name"]
    summary = f.get("docstring") or f.get("summary")
    public = list(f.get("classes") or []) + list(f.get("functions") or [])
    return Draft(
        hypothesis=f"NEW_MODULE_{_slug(name)}",
        question=f"A new module {name} appeared"
        + (f" ({summary})" if summary else "")
        + ". What capability does it add, and is it wired into the system?",
        evidence=_evidence(
            f,
            f"Path: {f['path']}" if f.get("path") else None,
            f"Public API: {_listing(public, 10)}" if public else None,
            f"Imports: {_listing(f.get('imports') or [], 10)}" if f.get("imports") else None,
        ),
        action_class=ActionClass.EXPLORE,
        autonomy=3,
        value_estimate=0.6,
        cost=0.2,
        capability_key=f"module.{name}",
    )


def missing_tool(f: dict[str, Any]) -> Draft:
    name = f["gap_name"]
    return Draft(
        hypothesis=f"MISSING_TOOL_{_slug(name)}",
        question=f"The executable '{name}' is required but not on PATH. "
        "Install it, or find a substitute?",
        evidence=_evidence(f, f"Searched: {_listing(f.get('searched') or [], 8)}"
                           if f.get("searched") else None),
        action_class=ActionClass.REQUEST_USER_ACTION,
        autonomy=1,
        value_estimate=0.7,
        cost=0.3,
        capability_key=f"tool.{name}",
    )


def missing_library(f: dict[str, Any]) -> Draft:
    """Says what was seen: imported and not installed, a module of the roots that does not
    exist, or only listed in ``required_modules``."""
    name = f["gap_name"]
    files = f.get("files") or f.get("importers") or []
    lines = f.get("import_lines") or []
    if f.get("kind") == "source_module":
        seen = f" by {_listing(files, 3)}" if files else ""
        question = (f"Module '{name}' is imported{seen} but the source tree has no such module. "
                    "Was it moved or renamed, or is it still to be written?")
        action = ActionClass.PROPOSE_FIX
    elif files:
        question = (f"Python module '{name}' is imported by {_listing(files, 3)} but is not "
                    "installed. Install it, or replace the import?")
        action = ActionClass.FIND_SUBSTITUTE
    else:
        question = (f"Python module '{name}' is listed as required but is not installed. "
                    "Install it, or drop the requirement?")
        action = ActionClass.FIND_SUBSTITUTE
    return Draft(
        hypothesis=f"MISSING_LIBRARY_{_slug(name)}",
        question=question,
        evidence=_evidence(
            f,
            f"Importing lines:\n{_clip(chr(10).join(lines), 1000)}" if lines else None,
            f"Imported by: {_listing(files, 10)}" if files and not lines else None,
        ),
        action_class=action,
        autonomy=2,
        value_estimate=0.75,
        cost=0.3,
        capability_key=f"library.{name}",
    )


def idle_accelerator(f: dict[str, Any]) -> Draft:
    name = f["gap_name"]
    minutes = f.get("idle_minutes")
    idle = f"{minutes:.0f} min" if isinstance(minutes, (int, float)) else "a long time"
    return Draft(
        hypothesis=f"IDLE_ACCELERATOR_{_slug(name)}",
        question=(f"{f['device_name']} ({name})" if f.get("device_name") else name)
        + f" has been idle {idle}: run the queued experiments on it?",
        evidence=_evidence(f, f"Utilisation {f.get('utilization_pct', '?')}% "
                              f"(threshold {f.get('threshold_pct', '?')}%)"),
        action_class=ActionClass.EXPERIMENT,
        autonomy=2,
        value_estimate=0.7,
        cost=0.2,
        capability_key=f"hardware.{name}",
    )


def hardware_change(f: dict[str, Any]) -> Draft:
    name = f["gap_name"]
    change = f.get("change", "changed")
    return Draft(
        hypothesis=f"HARDWARE_CHANGE_{_slug(name)}",
        question=f"Device {name} was {change}. What can it be used for, "
        "and does anything depend on it?",
        evidence=_evidence(f, f"Device: {name} ({change})"),
        action_class=ActionClass.EXPLORE,
        autonomy=2,
        value_estimate=0.5,
        cost=0.2,
        capability_key=f"hardware.{name}",
    )


def suspicious_metrics(f: dict[str, Any]) -> Draft:
    """One question per rule: the experiments it flagged are in the facts, so another
    flagged experiment counts up instead of rewriting the question."""
    name = f["gap_name"]
    return Draft(
        hypothesis=f"SUSPICIOUS_METRICS_{_slug(name)}",
        question=f"Experiment metrics look fabricated or broken ({name}). "
        "Are the measurements real?",
        evidence=_evidence(f),
        action_class=ActionClass.INVESTIGATE,
        autonomy=2,
        value_estimate=0.8,
        cost=0.3,
        capability_key=f"metacognition.{name}",
    )


def unindexed_doc(f: dict[str, Any]) -> Draft:
    name = f["gap_name"]
    return Draft(
        hypothesis=f"UNINDEXED_DOC_{_slug(name)}",
        question=f"Document {name} is new or changed and not in the knowledge index. "
        "Read and index it?",
        evidence=_evidence(f, f"Path: {f['path']}" if f.get("path") else None),
        action_class=ActionClass.EXPLORE,
        autonomy=3,
        value_estimate=0.5,
        cost=0.1,
        capability_key=f"knowledge.{name}",
    )


def stale_doc(f: dict[str, Any]) -> Draft:
    name = f["gap_name"]
    code = f.get("changed_code") or f.get("code") or []
    return Draft(
        hypothesis=f"STALE_DOC_{_slug(name)}",
        question=f"Document {name} has not changed in a long time while the code it describes "
        f"did ({_listing(code, 3)}). Is it still accurate?",
        evidence=_evidence(f, f"Changed code: {_listing(code, 10)}" if code else None),
        action_class=ActionClass.INVESTIGATE,
        autonomy=2,
        value_estimate=0.4,
        cost=0.3,
        capability_key=f"knowledge.{name}",
    )


def generic(f: dict[str, Any]) -> Draft:
    """Any gap_type without a template of its own: never drop a signal."""
    gap_type, name = f["gap_type"], f["gap_name"]
    return Draft(
        hypothesis=f"{_slug(gap_type)}_{_slug(name)}",
        question=f"{gap_type.replace('_', ' ').capitalize()} '{name}'"
        + (f": {reason.rstrip('.')}." if (reason := f.get("gap_reason")) else ".")
        + " What does it mean, and what should change?",
        evidence=_evidence(f, f"Category: {f.get('gap_category')}"),
        action_class=ActionClass.INVESTIGATE,
        autonomy=2,
        value_estimate=0.5,
        cost=0.5,
        capability_key=f"{f.get('gap_category') or gap_type}.{name}",
    )


TEMPLATES: dict[str, Callable[[dict[str, Any]], Draft]] = {
    "orphaned_queue": orphaned_queue,
    "syntax_error": syntax_error,
    "exception": exception,
    "healing_failure": healing_failure,
    "test_failure": test_failure,
    "new_module": new_module,
    "missing_tool": missing_tool,
    "missing_library": missing_library,
    "idle_accelerator": idle_accelerator,
    "hardware_change": hardware_change,
    "suspicious_metrics": suspicious_metrics,
    "unindexed_doc": unindexed_doc,
    "stale_doc": stale_doc,
}


def draft_question(facts: dict[str, Any]) -> Draft:
    """The draft for ``facts`` using its gap_type's template (or the generic one)."""
    return TEMPLATES.get(facts["gap_type"], generic)(facts)
