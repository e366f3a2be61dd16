"""The signal-quality harness (quality/): label files, scoring, and a real slice.

The slice downloads one small pinned sdist from PyPI (nbxmpp, ~190 KiB, cached under
var/quality) and scores the integration monitor's analysis on its labelled findings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from quality.corpora import CorpusError, Label, discover, load_corpus
from quality.run import evaluate, main
from quality.scoring import Outcome, grouping_score, score


def test_every_label_file_loads_and_says_how_each_verdict_was_made() -> None:
    corpora = discover()
    assert {c.gap_type for c in corpora} >= {"orphaned_queue"}
    for corpus in corpora:
        assert corpus.kind in ("pypi", "local", "none"), corpus.path
        for label in corpus.labels:
            assert label.how.strip(), f"{corpus.path}: {label.name} has no 'how'"


def test_bad_label_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "orphaned_queue" / "x.toml"
    bad.parent.mkdir()
    bad.write_text('[[label]]\nname = "a"\nverdict = "maybe"\nhow = "guess"\n')
    with pytest.raises(CorpusError, match="verdict"):
        load_corpus(bad)
    bad.write_text('[[label]]\nname = "a"\nverdict = "true"\n')
    with pytest.raises(CorpusError, match="how"):
        load_corpus(bad)


def test_score_counts_hits_false_alarms_misses_and_unlabelled() -> None:
    labels = [
        Label("hit", True, "read"),
        Label("false-alarm", False, "read"),
        Label("missed", True, "read"),
    ]
    outcome = Outcome(reported=frozenset({"hit", "false-alarm", "new"}))
    s = score("orphaned_queue", "c", outcome, labels)
    assert (s.tp, s.fp, s.fn, s.unlabelled) == (("hit",), ("false-alarm",), ("missed",), ("new",))
    assert s.precision == 0.5 and s.recall == 0.5


def test_grouping_rewards_one_question_per_bug() -> None:
    labels = [Label(n, True, "read", group=g) for n, g in [("a1", "A"), ("a2", "A"), ("b1", "B")]]
    assert grouping_score({"q1": frozenset({"a1", "a2"}), "q2": frozenset({"b1"})}, labels) == (
        1.0,
        2,
    )
    split = {"q1": frozenset({"a1"}), "q2": frozenset({"a2"}), "q3": frozenset({"b1"})}
    assert grouping_score(split, labels) == (0.5, 2)
    merged = {"q1": frozenset({"a1", "a2", "b1"})}
    assert grouping_score(merged, labels) == (0.0, 2)


def test_real_slice_meets_the_targets(capsys: pytest.CaptureFixture[str]) -> None:
    corpus = next(c for c in discover() if c.name == "nbxmpp")
    result, how = evaluate(corpus, only_slice=True)
    assert result is not None, how
    assert result.size["files"] > 50
    assert result.fp == () and result.fn == (), (result.fp, result.fn)
    assert result.precision == 1.0 and result.recall == 1.0
    assert main(["--corpus", "nbxmpp", "--slice", "--check"]) == 0
    assert "nbxmpp" in capsys.readouterr().out
