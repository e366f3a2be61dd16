"""FileTailer throughput and memory on a 1 GiB JSONL file, beside ``wc -l`` on the same file.

The file (~200-byte JSON lines) is generated in a temp directory and deleted afterwards.
Both ``wc -l`` and the tailer read it warm from the page cache, in the same run; each is
run ``RUNS`` times and the median is reported (range beside it). The tailer runs in follow
mode (inotify watch, checkpoints every 0.5 s) and stops at EOF; RSS is sampled by a thread
every 20 ms while it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil

from kloros_stream.checkpoint import CheckpointStore
from kloros_stream.sources.tailer import FileTailer

from .common import Report, median

RUNS = 3
TARGET_BYTES = 1 << 30
MIB = 1024 * 1024
COMMAND = (
    '.venv/bin/python -c "from benchmarks.common import Report; '
    'from benchmarks.bench_tailer import run; run(Report())"'
)


def generate(path: Path, target: int = TARGET_BYTES) -> tuple[int, int]:
    """Write ~``target`` bytes of distinct ~200-byte JSON lines; return (lines, bytes)."""
    template = (
        '{"ts":%.6f,"seq":%d,"scenario":"scenario-%03d","healed":%s,'
        '"duration_ms":%.3f,"detail":"%s"}\n'
    )
    pad = "x" * 64
    count = size = 0
    with path.open("w", buffering=8 * MIB) as out:
        while size < target:
            block = "".join(
                template
                % (1.7e9 + i / 1000, i, i % 997, "true" if i % 7 else "false", (i % 5000) / 7, pad)
                for i in range(count, count + 50_000)
            )
            out.write(block)
            count += 50_000
            size += len(block)
        out.flush()
        os.fsync(out.fileno())  # no writeback competing with the measurements
    return count, path.stat().st_size


class RssSampler(threading.Thread):
    """Samples this process's RSS every ``interval`` seconds until stopped."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.process = psutil.Process()
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(self.process.memory_info().rss)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def rss() -> int:
    return psutil.Process().memory_info().rss


async def tail_to_eof(path: Path, state: Path, *, parse_json: bool) -> dict[str, float]:
    """Follow ``path`` until its current size is handed on; count records and RSS."""
    size = path.stat().st_size
    tailer = FileTailer(
        path, CheckpointStore(state), name=f"bench-{parse_json}", parse_json=parse_json
    )
    records = 0
    rss_10pct = 0
    sampler = RssSampler()
    rss_start = rss()
    sampler.start()
    started = time.perf_counter()
    async with contextlib.aclosing(tailer.batches()) as batches:
        async for batch in batches:
            records += len(batch.records)
            if not rss_10pct and batch.offset >= size // 10:
                rss_10pct = rss()
            if batch.offset >= size:
                break
    elapsed = time.perf_counter() - started
    sampler.stop()
    return {
        "seconds": elapsed,
        "records": records,
        "bytes": size,
        "rss_start": rss_start,
        "rss_10pct": rss_10pct,
        "rss_peak": max(sampler.samples or [rss_start]),
        "rss_end": rss(),
        "samples": len(sampler.samples),
    }


def wc_lines(path: Path) -> tuple[int, float]:
    started = time.perf_counter()
    out = subprocess.run(["wc", "-l", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0]), time.perf_counter() - started


def run(report: Report) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench_tailer_"))
    try:
        path = workdir / "big.jsonl"
        started = time.perf_counter()
        lines, size = generate(path)
        print(
            f"  generated {size / 2**30:.2f} GiB, {lines:,} lines in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        wc_runs = []
        for _ in range(RUNS):
            wc_count, wc_seconds = wc_lines(path)
            assert wc_count == lines, (wc_count, lines)
            wc_runs.append(wc_seconds)
        wc_seconds = median(wc_runs)
        wc_ref = (
            f"wc -l: {size / wc_seconds / 2**20:,.0f} MiB/s, "
            f"{lines / wc_seconds / 1e6:.1f} M lines/s ({wc_seconds:.2f} s)"
        )
        for parse_json, label in ((False, "bytes lines"), (True, "parse_json dicts")):
            results = []
            for i in range(RUNS):
                state = workdir / f"state-{parse_json}-{i}"
                result = asyncio.run(tail_to_eof(path, state, parse_json=parse_json))
                assert result["records"] == lines, (result["records"], lines)
                results.append(result)
            times = sorted(r["seconds"] for r in results)
            seconds = median(times)
            report.add(
                "tailer",
                f"throughput, 1 GiB JSONL, {label}",
                f"{lines / seconds / 1e6:.2f} M lines/s, {size / seconds / 2**20:,.0f} MiB/s "
                f"({seconds:.2f} s; runs {times[0]:.2f}-{times[-1]:.2f} s)",
                wc_ref,
                COMMAND,
            )
            first = results[0]
            report.add(
                "tailer",
                f"RSS while tailing 1 GiB, {label}",
                f"start {first['rss_start'] / MIB:.1f} MiB, after 10% "
                f"{first['rss_10pct'] / MIB:.1f} MiB, "
                f"peak {max(r['rss_peak'] for r in results) / MIB:.1f} MiB, "
                f"end {results[-1]['rss_end'] / MIB:.1f} MiB",
                f"file {size / MIB:,.0f} MiB; {RUNS} runs, sampled every 20 ms",
                COMMAND,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
