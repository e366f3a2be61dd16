"""Question templates: one per gap_type of the contract, each producing a question a
person can act on, and a generic one for anything else."""

from __future__ import annotations

from typing import Any

import pytest

from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.core.templates import TEMPLATES, Draft, draft_question, generic
from kloros_stream.models import ActionClass, CuriosityQuestion, Signal

# Every gap_type of the contract's table with the facts its monitor gives.
FULL_FACTS: dict[str, dict[str, Any]] = {
    "exception": {
        "gap_name": "KeyError: 'voice_model'", "gap_category": "error_handling",
        "gap_reason": "KeyError raised 3 times in kloros-voice.service",
        "fingerprint": "9f2c1ab0", "unit": "kloros-voice.service",
        "traceback": "Traceback (most recent call last):\n  File \"voice.py\", line 3, in load\n"
                     "KeyError: 'voice_model'",
    },
    "orphaned_queue": {
        "gap_name": "voice.Pipeline.pending", "gap_category": "integration",
        "gap_reason": "appended to but never read",
        "producers": ["voice.Pipeline.enqueue"], "files": ["src/voice.py"],
    },
    "syntax_error": {
        "gap_name": "pkg/broken.py", "gap_category": "integration",
        "gap_reason": "the module does not parse", "line": 12,
        "message": "invalid syntax",
    },
    "healing_failure": {
        "gap_name": "gpu_oom", "gap_category": "resilience",
        "gap_reason": "self-healing failed 4 of 5 runs", "failures": 4, "total": 5,
        "healing_rate": 0.2, "last_error": "CUDA out of memory",
    },
    "test_failure": {
        "gap_name": "tests/test_voice.py::test_load", "gap_category": "quality",
        "gap_reason": "the test failed", "outcome": "failed", "duration": 0.125,
        "error": "AssertionError: assert 1 == 2", "report": "var/test-results/report.json",
    },
    "new_module": {
        "gap_name": "kloros.skills.weather", "gap_category": "discovery",
        "gap_reason": "a module appeared", "path": "src/kloros/skills/weather.py",
        "docstring": "Weather lookups", "classes": ["Weather"], "functions": ["forecast"],
        "imports": ["httpx"],
    },
    "missing_tool": {
        "gap_name": "ffmpeg", "gap_category": "environment",
        "gap_reason": "required executable not on PATH", "searched": ["/usr/bin", "/bin"],
    },
    "missing_library": {
        "gap_name": "whisper", "gap_category": "environment",
        "gap_reason": "imported but not installed", "files": ["src/stt.py"],
    },
    "idle_accelerator": {
        "gap_name": "GPU-1234", "gap_category": "hardware",
        "gap_reason": "idle for 45 minutes", "device_name": "NVIDIA RTX 3090",
        "idle_minutes": 45.0, "utilization_pct": 2, "threshold_pct": 10,
    },
    "hardware_change": {
        "gap_name": "GPU-5678", "gap_category": "hardware",
        "gap_reason": "a new device appeared", "change": "added",
    },
    "suspicious_metrics": {
        "gap_name": "identical_metrics", "gap_category": "metacognition",
        "gap_reason": "all runs report identical metrics", "experiment": "exp-42",
        "values": [0.91, 0.91, 0.91],
    },
    "unindexed_doc": {
        "gap_name": "guide/setup.md", "gap_category": "knowledge",
        "gap_reason": "not in the knowledge index", "path": "docs/guide/setup.md",
    },
    "stale_doc": {
        "gap_name": "architecture.md", "gap_category": "knowledge",
        "gap_reason": "not updated while its code changed",
        "changed_code": ["src/bus.py", "src/core.py"],
    },
}
CONTRACT_GAP_TYPES = tuple(FULL_FACTS)


def _facts(gap_type: str, *, minimal: bool = False) -> dict[str, Any]:
    full = {"gap_type": gap_type, **FULL_FACTS[gap_type]}
    if minimal:
        return {k: full[k] for k in ("gap_type", "gap_name", "gap_category", "gap_reason")}
    return full


def _question(facts: dict[str, Any]) -> CuriosityQuestion:
    core = CuriosityCore()
    q = core.handle(Signal(ecosystem="testing", monitor="m", facts=facts), 1_700_000_000.0)
    assert q is not None
    return q


def _assert_actionable(q: CuriosityQuestion | Draft, facts: dict[str, Any]) -> None:
    name = facts["gap_name"]
    assert name in q.question
    assert q.question.rstrip().endswith("?"), q.question
    for junk in ("None", "{", "}", "[]", "''"):
        assert junk not in q.question, (junk, q.question)
    assert len(q.question) < 600
    assert q.hypothesis and q.hypothesis == q.hypothesis.upper()
    assert q.evidence and all(isinstance(e, str) and e for e in q.evidence)
    assert isinstance(q.action_class, ActionClass)
    assert isinstance(q.autonomy, int) and 0 <= q.autonomy <= 5
    assert 0 < q.value_estimate <= 1 and 0 < q.cost <= 1
    assert name.split(":")[0] in q.capability_key


def test_every_contract_gap_type_has_its_own_template() -> None:
    assert set(CONTRACT_GAP_TYPES) <= set(TEMPLATES)


@pytest.mark.parametrize("gap_type", CONTRACT_GAP_TYPES)
def test_template_builds_an_actionable_question(gap_type: str) -> None:
    facts = _facts(gap_type)
    q = _question(facts)
    _assert_actionable(q, facts)
    assert facts["gap_reason"] in q.evidence
    assert q.question != generic(facts).question  # its own template, not the fallback
    assert q.metadata["gap_type"] == gap_type
    assert q.metadata["gap_name"] == facts["gap_name"]
    assert q.metadata["gap_category"] == facts["gap_category"]
    assert q.metadata["ecosystem"] == "testing"
    assert q.metadata["monitor"] == "m"
    assert q.metadata["occurrences"] == 1
    assert q.metadata["first_seen"] and q.metadata["last_seen"]
    assert q.status == "ready"
    assert q.created_at == q.updated_at


@pytest.mark.parametrize("gap_type", CONTRACT_GAP_TYPES)
def test_template_copes_with_only_the_required_facts(gap_type: str) -> None:
    facts = _facts(gap_type, minimal=True)
    _assert_actionable(_question(facts), facts)


@pytest.mark.parametrize("gap_type", CONTRACT_GAP_TYPES)
def test_templates_are_pure(gap_type: str) -> None:
    facts = _facts(gap_type)
    assert draft_question(facts) == draft_question(dict(facts))


def test_templates_use_their_specific_facts() -> None:
    def text(gap_type: str) -> str:
        d = draft_question(_facts(gap_type))
        return d.question + "\n" + "\n".join(d.evidence)

    assert "kloros-voice.service" in text("exception")
    assert "9f2c1ab0" in text("exception")
    assert "voice.Pipeline.enqueue" in text("orphaned_queue")
    assert "line 12" in text("syntax_error") and "invalid syntax" in text("syntax_error")
    assert "CUDA out of memory" in text("healing_failure")
    assert "AssertionError" in text("test_failure") and "failed" in text("test_failure")
    assert "Weather lookups" in text("new_module") and "forecast" in text("new_module")
    assert "/usr/bin" in text("missing_tool")
    assert "src/stt.py" in text("missing_library")
    assert "NVIDIA RTX 3090" in text("idle_accelerator") and "45 min" in text("idle_accelerator")
    assert "added" in text("hardware_change")
    assert "all runs report identical metrics" in text("suspicious_metrics")
    assert "docs/guide/setup.md" in text("unindexed_doc")
    assert "src/bus.py" in text("stale_doc")


def test_action_classes_fit_the_gap() -> None:
    def action(gap_type: str) -> ActionClass:
        return draft_question(_facts(gap_type)).action_class

    assert action("missing_tool") == ActionClass.REQUEST_USER_ACTION
    assert action("missing_library") == ActionClass.FIND_SUBSTITUTE
    assert action("exception") == ActionClass.INVESTIGATE
    assert action("syntax_error") == ActionClass.PROPOSE_FIX
    assert action("healing_failure") == ActionClass.EXPERIMENT
    assert action("new_module") == ActionClass.EXPLORE


def test_unknown_gap_type_gets_the_generic_question() -> None:
    facts = {"gap_type": "queue_stall", "gap_name": "jobs", "gap_category": "pipeline",
             "gap_reason": "the queue has not moved in an hour"}
    q = _question(facts)
    _assert_actionable(q, facts)
    assert q.action_class == ActionClass.INVESTIGATE
    assert "the queue has not moved in an hour" in q.question
    assert q.capability_key == "pipeline.jobs"
    assert q.metadata["gap_type"] == "queue_stall"
    assert q.id.startswith("queue_stall-")


def test_generic_question_without_reason_or_category() -> None:
    facts = {"gap_type": "odd", "gap_name": "thing", "gap_category": "", "gap_reason": ""}
    q = _question(facts)
    assert "thing" in q.question and q.question.endswith("?")
    assert q.capability_key == "odd.thing"
    assert q.evidence


def test_long_facts_are_clipped_in_evidence() -> None:
    facts = _facts("exception")
    facts["traceback"] = "x" * 50_000
    facts["gap_reason"] = "y" * 50_000
    q = _question(facts)
    assert all(len(e) <= 1500 for e in q.evidence)
    assert len(q.metadata["facts"]["traceback"]) <= 2000


@pytest.mark.parametrize(
    ("gap_type", "first", "second"),
    [
        ("healing_failure", {"total": 5, "failures": 4, "healing_rate": 0.2},
         {"total": 6, "failures": 5, "healing_rate": 0.17}),
        ("suspicious_metrics", {"experiment": "exp-1", "values": [1, 1]},
         {"experiment": "exp-2", "values": [2, 2]}),
        ("test_failure", {"duration": 0.12}, {"duration": 0.31}),
    ],
)
def test_counters_and_ids_stay_out_of_the_evidence(
    gap_type: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    """A repeat that only changes counters is a counters-only update (at most one feed
    line a minute), not changed evidence (a line at once)."""
    base = _facts(gap_type, minimal=True)
    a = _question({**base, **first})
    b = _question({**base, **second})
    assert a.evidence_hash == b.evidence_hash
