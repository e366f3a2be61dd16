"""The shipped unit's ``MemoryMax`` holds while distinct gaps keep arriving: a real
``kloros-stream run``, the real chaos monitor, 20 k distinct failing scenarios, RSS sampled
throughout. They arrive in chunks the service keeps up with (a burst bigger than the bus
would be dropped, oldest first, by design). ``make bench`` does 100 k and records the
figures."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import psutil

from kloros_stream.feed import read_feed
from tests.support.service import ServiceProcess, append_chaos, failure, write_config

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "kloros-stream.service"
DISTINCT = 6_000
CHUNK = 1_000
UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def memory_max() -> int:
    match = re.search(r"(?m)^MemoryMax=(\d+)([KMG])$", UNIT.read_text(encoding="utf-8"))
    assert match, "the unit sets MemoryMax=<n>[KMG]"
    return int(match.group(1)) * UNITS[match.group(2)]


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def test_the_service_stays_under_memory_max_while_distinct_gaps_arrive(tmp_path: Path
                                                                       ) -> None:
    limit = memory_max()
    cfg = write_config(tmp_path, {"service": {"log_level": "info"}, "monitors": {"chaos": {
        "history_file": "var/chaos_history.jsonl", "max_scenarios": DISTINCT + 100}}})
    append_chaos(tmp_path)
    with ServiceProcess(cfg) as svc:
        assert svc.proc is not None
        proc = psutil.Process(svc.proc.pid)
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(proc.memory_info().rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            for start in range(0, DISTINCT, CHUNK):
                append_chaos(tmp_path, *(failure(f"scenario-{i}")
                                         for i in range(start, start + CHUNK)))
                deadline = time.monotonic() + 60
                while count_lines(svc.feed_path) < start + CHUNK \
                        and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            done.set()
            sampler.join(5)
        assert svc.stop() == 0
    assert len(read_feed(svc.feed_path).questions) == DISTINCT
    assert samples and max(samples) < limit, (
        f"peak RSS {max(samples) / 2**20:.1f} MiB >= MemoryMax {limit / 2**20:.0f} MiB")
