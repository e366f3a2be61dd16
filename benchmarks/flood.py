"""The chaos flood of issue 11: 1 M chaos lines, 100 k distinct failing scenarios.

    python -m benchmarks.flood [--lines N] [--scenarios N]

The history file is written whole before the service starts (the worst case: everything
is backlog), with the shipped defaults (bus 10,000, ``max_scenarios`` 1,000). The service
must end with one open question per failing scenario and no drop; we report the time to
get there, the service's RSS when done and its peak (VmHWM), against the shipped unit's
``MemoryMax`` (256 MiB).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.support.service import ServiceProcess, write_config


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def health_of(port: int) -> tuple[dict[str, Any], float]:
    """/health and how long it took to answer (the event loop's responsiveness)."""
    t0 = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=120) as r:
        body = json.loads(r.read())
    return body, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--scenarios", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="kloros-flood-"))
    history = root / "chaos.jsonl"
    with history.open("wb") as fh:
        for i in range(args.lines):
            fh.write(orjson.dumps({"scenario": f"scenario-{i % args.scenarios}",
                                   "healed": False, "error": f"run {i}"}) + b"\n")
    size = history.stat().st_size
    config = write_config(root, {"service": {"log_level": "info"},
                                 "monitors": {"chaos": {"history_file": "chaos.jsonl"}}})
    with ServiceProcess(config) as svc:
        assert svc.proc is not None
        started = time.monotonic()
        deadline = started + args.timeout
        peak_depth = 0
        slowest = 0.0
        assert svc.port is not None
        while True:
            health, took_s = health_of(svc.port)
            slowest = max(slowest, took_s)
            peak_depth = max(peak_depth, health["bus"]["depth"])
            if health["questions"]["open"] >= args.scenarios and health["bus"]["depth"] == 0:
                break
            if time.monotonic() > deadline:
                print(f"timeout: {health['questions']}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        took = time.monotonic() - started
        rss, hwm = rss_mib(svc.proc.pid)
        details = health["monitors"]["chaos"]["details"]
    questions = health["questions"]
    print(f"flood: {args.lines:,} lines ({size / 2**20:.0f} MiB), {args.scenarios:,} distinct "
          f"failing scenarios")
    print(f"  open questions {questions['open']:,} (total {questions['total']:,}) after "
          f"{took:.1f} s; bus published {health['bus']['published']:,}, dropped "
          f"{health['bus']['dropped']:,}, peak depth seen {peak_depth:,}")
    print(f"  chaos monitor: {details.get('scenarios'):,} scenarios held, open "
          f"{details.get('open'):,}, evicted {details.get('evicted'):,}")
    print(f"  service RSS {rss:.0f} MiB, peak {hwm:.0f} MiB (unit MemoryMax 256 MiB); "
          f"slowest /health answer meanwhile {slowest:.2f} s")
    ok = questions["open"] == args.scenarios and health["bus"]["dropped"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
