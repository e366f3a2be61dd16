"""``make bench``: run every ``benchmarks/bench_*.py`` and write benchmarks/RESULTS.md.

``python -m benchmarks [NAME ...]`` runs only the named modules (``spine``, ``tailer``...).
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from .common import Report

HERE = Path(__file__).parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} cores{mem}, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    report = Report()
    failures = []
    started = time.monotonic()
    for name in names:
        print(f"== bench_{name}", flush=True)
        try:
            importlib.import_module(f"benchmarks.bench_{name}").run(report)
        except Exception:
            traceback.print_exc()
            failures.append(name)
    lines = [
        "# Benchmark results",
        "",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {machine()}",
        f"- command: `make bench` (python -m benchmarks {' '.join(argv)})".rstrip(),
        f"- wall time: {time.monotonic() - started:.0f} s",
        "- figures are medians / percentiles of one run; references were measured in the",
        "  same run on the same data (shared, noisy 2-core machine)",
        "",
        "| benchmark | metric | value | same-run reference | command |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r.benchmark} | {r.metric} | {r.value} | {r.reference} | {r.command} |"
              for r in report.rows]
    if failures:
        lines += ["", f"Failed to run: {', '.join(failures)}"]
    out = HERE / "RESULTS.md"
    if argv:
        out = HERE / f"RESULTS-{'-'.join(argv)}.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
