"""Shared helpers for ``make bench``: a results table and robust statistics."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Row:
    benchmark: str
    metric: str
    value: str
    reference: str = ""
    command: str = ""


@dataclass
class Report:
    """Rows collected by every ``benchmarks/bench_*.py`` module's ``run(report)``."""

    rows: list[Row] = field(default_factory=list)

    def add(self, benchmark: str, metric: str, value: str, reference: str = "",
            command: str = "") -> None:
        """One figure; ``reference`` is the same-run comparison (physical floor, old design)."""
        self.rows.append(Row(benchmark, metric, value, reference, command))
        print(f"  {benchmark}: {metric} = {value}" + (f"  [{reference}]" if reference else ""),
              flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"
