"""A slice of the exception corpus: real programs, real tracebacks, grouped per bug."""

from __future__ import annotations

import dataclasses

from quality.corpora import discover
from quality.gaps import exception
from quality.scoring import score


def test_real_tracebacks_slice_one_question_per_bug() -> None:
    corpus = next(c for c in discover() if c.gap_type == "exception")
    installs = ("srv/deploy", "opt/venv-a/lib/python3.11/site-packages", "frozen/app")
    sliced = dataclasses.replace(corpus, settings={"installs": installs, "inputs": ("id-1041",)})
    outcome = exception.evaluate(sliced, None)
    wanted = {name for name, _ in exception.label_names(installs, ("id-1041",))}
    labels = [lab for lab in corpus.labels if lab.name in wanted]
    result = score("exception", corpus.name, outcome, labels)
    assert result.size["runs"] == 39
    assert result.fp == () and result.fn == () and result.unlabelled == ()
    assert result.grouping == 1.0 and result.bugs == 10
