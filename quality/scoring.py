"""Precision, recall and grouping of reported gaps against labels."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .corpora import Label


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one gap module reported on one corpus."""

    reported: frozenset[str]
    """Gap names the analysis reports (one per question)."""
    size: Mapping[str, int] = field(default_factory=dict)
    """Corpus size, e.g. ``{"files": 1127, "lines": 250000}``."""
    groups: Mapping[str, frozenset[str]] | None = None
    """For grouping gap types: question -> the labelled items it covers."""
    details: Mapping[str, str] = field(default_factory=dict)
    """Per reported name, a short piece of evidence (shown for unlabelled findings)."""


@dataclass(frozen=True, slots=True)
class Score:
    gap_type: str
    corpus: str
    size: Mapping[str, int]
    reported: int
    tp: tuple[str, ...]
    fp: tuple[str, ...]
    fn: tuple[str, ...]
    unlabelled: tuple[str, ...]
    grouping: float | None = None
    bugs: int = 0

    @property
    def precision(self) -> float | None:
        judged = len(self.tp) + len(self.fp)
        return len(self.tp) / judged if judged else None

    @property
    def recall(self) -> float | None:
        truth = len(self.tp) + len(self.fn)
        return len(self.tp) / truth if truth else None

    def to_json(self) -> dict[str, object]:
        return {
            "gap_type": self.gap_type,
            "corpus": self.corpus,
            "size": dict(self.size),
            "reported": self.reported,
            "precision": self.precision,
            "recall": self.recall,
            "grouping": self.grouping,
            "tp": len(self.tp),
            "fp": list(self.fp),
            "fn": list(self.fn),
            "unlabelled": list(self.unlabelled),
        }


def score(gap_type: str, corpus: str, outcome: Outcome, labels: Iterable[Label]) -> Score:
    """Reported names vs labels. A reported name labelled true is a hit, labelled false a
    false alarm; a true label not reported is a miss; a reported name without a label is
    ``unlabelled`` (left out of precision, listed so the labels can be completed)."""
    by_name = {label.name: label for label in labels}
    reported = outcome.reported
    tp = sorted(n for n in reported if n in by_name and by_name[n].verdict)
    fp = sorted(n for n in reported if n in by_name and not by_name[n].verdict)
    fn = sorted(n for n, lab in by_name.items() if lab.verdict and n not in reported)
    unlabelled = sorted(n for n in reported if n not in by_name)
    grouping, bugs = None, 0
    if outcome.groups is not None:
        grouping, bugs = grouping_score(outcome.groups, by_name.values())
    return Score(
        gap_type,
        corpus,
        dict(outcome.size),
        len(reported),
        tuple(tp),
        tuple(fp),
        tuple(fn),
        tuple(unlabelled),
        grouping,
        bugs,
    )


def grouping_score(
    groups: Mapping[str, frozenset[str]], labels: Iterable[Label]
) -> tuple[float | None, int]:
    """Share of labelled bugs (labels with a ``group``) reported as exactly one question
    that holds only that bug's items; and the number of bugs."""
    bug_of = {lab.name: lab.group for lab in labels if lab.group}
    bugs = set(bug_of.values())
    if not bugs:
        return None, 0
    questions_of: dict[str, set[str]] = {b: set() for b in bugs}
    mixed: set[str] = set()
    for question, items in groups.items():
        seen = {bug_of[i] for i in items if i in bug_of}
        for bug in seen:
            questions_of[bug].add(question)
        if len(seen) > 1:
            mixed.update(seen)
    good = sum(1 for b in bugs if len(questions_of[b]) == 1 and b not in mixed)
    return good / len(bugs), len(bugs)
