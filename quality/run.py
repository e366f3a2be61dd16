"""Run every gap module over its labelled corpora and print the figures."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .corpora import Corpus, CorpusError, discover, locate
from .gaps import gap_modules
from .scoring import Score, score

TARGETS = {"precision": 0.95, "recall": 0.95, "grouping": 0.95}


def evaluate(
    corpus: Corpus, overrides: dict[str, Path] | None = None, *, only_slice: bool = False
) -> tuple[Score | None, str]:
    """Score one corpus; (None, why) when it is skipped."""
    module = gap_modules().get(corpus.gap_type)
    if module is None:
        return None, f"no gap module for {corpus.gap_type}"
    tree, how = locate(corpus, overrides)
    if tree is None and corpus.kind != "none":
        return None, how
    outcome = module.evaluate(corpus, tree)
    labels = [lab for lab in corpus.labels if lab.slice] if only_slice else corpus.labels
    if only_slice:
        names = {lab.name for lab in labels}
        outcome = type(outcome)(
            reported=frozenset(n for n in outcome.reported if n in names),
            size=outcome.size,
            groups=outcome.groups,
            details=outcome.details,
        )
    return score(corpus.gap_type, corpus.name, outcome, labels), how


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(scores: list[Score], verbose: bool = False) -> str:
    lines = [
        f"{'gap type':<16} {'corpus':<20} {'size':<28} {'reported':>8} {'TP':>4} {'FP':>4} "
        f"{'FN':>4} {'unlab':>5} {'precision':>9} {'recall':>7} {'grouping':>8}"
    ]
    for s in scores:
        size = " ".join(f"{k}={v}" for k, v in s.size.items())
        lines.append(
            f"{s.gap_type:<16} {s.corpus:<20} {size:<28} {s.reported:>8} {len(s.tp):>4} "
            f"{len(s.fp):>4} {len(s.fn):>4} {len(s.unlabelled):>5} {_fmt(s.precision):>9} "
            f"{_fmt(s.recall):>7} {_fmt(s.grouping):>8}"
        )
        if verbose:
            lines += [f"    false alarm: {n}" for n in s.fp]
            lines += [f"    missed:      {n}" for n in s.fn]
            lines += [f"    unlabelled:  {n}" for n in s.unlabelled]
    return "\n".join(lines)


def totals(scores: list[Score]) -> dict[str, dict[str, float | None]]:
    """Pooled precision/recall per gap type (sums over corpora)."""
    out: dict[str, dict[str, float | None]] = {}
    for gap in sorted({s.gap_type for s in scores}):
        mine = [s for s in scores if s.gap_type == gap]
        tp = sum(len(s.tp) for s in mine)
        fp = sum(len(s.fp) for s in mine)
        fn = sum(len(s.fn) for s in mine)
        out[gap] = {
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quality", description=__doc__)
    parser.add_argument("--gap", action="append", help="only these gap types")
    parser.add_argument("--corpus", action="append", help="only these corpora")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="use PATH for corpus NAME (instead of its recipe)",
    )
    parser.add_argument("--slice", action="store_true", help="only labels marked slice")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    parser.add_argument("-v", "--verbose", action="store_true", help="list FP/FN/unlabelled")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a scored corpus is below target or has unlabelled findings",
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.tree:
        name, _, path = item.partition("=")
        overrides[name] = Path(path)
    scores: list[Score] = []
    failed = False
    for corpus in discover():
        if args.gap and corpus.gap_type not in args.gap:
            continue
        if args.corpus and corpus.name not in args.corpus:
            continue
        started = time.monotonic()
        try:
            result, how = evaluate(corpus, overrides, only_slice=args.slice)
        except CorpusError as err:
            print(f"{corpus.gap_type}/{corpus.name}: error: {err}", file=sys.stderr)
            failed = True
            continue
        if result is None:
            print(f"{corpus.gap_type}/{corpus.name}: skipped ({how})", file=sys.stderr)
            continue
        print(
            f"{corpus.gap_type}/{corpus.name}: {how}, {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
        scores.append(result)
        if args.check and _below(result):
            failed = True
    print(render(scores, args.verbose))
    for gap, figures in totals(scores).items():
        print(
            f"{gap} pooled: precision {_fmt(figures['precision'])}, "
            f"recall {_fmt(figures['recall'])}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([s.to_json() for s in scores], indent=2) + "\n")
    return 1 if failed else 0


def _below(s: Score) -> bool:
    figures = {"precision": s.precision, "recall": s.recall, "grouping": s.grouping}
    low = any(v is not None and v < TARGETS[k] for k, v in figures.items())
    return low or bool(s.unlabelled)
