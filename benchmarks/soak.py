"""``make soak``: the real service under a random schedule of faults, then a truth check.

    python -m benchmarks.soak [--seconds S] [--seed N]     (env: SOAK_SECONDS, SOAK_SEED)

A ``kloros-stream run`` subprocess watches a source tree (integration), a chaos history
file (chaos) and a test-results directory (test), with a small bus. A random schedule
edits the tree (syntax errors made and fixed, hostile file names with undecodable bytes
and newlines, deletions), appends chaos results (single ones and floods of thousands of
distinct failing scenarios), writes JUnit reports, kills the service with SIGKILL and
restarts it, truncates the feed at a random byte while it is down, and, when run as root,
fills the tmpfs (512 MiB) that holds the feed and the state (disk full) for a few seconds.

At the end the service settles and stops; the open questions of the feed are compared with
the truth computed from the final files alone:

* lost: a gap the files have that has no open question;
* stale: an open question whose gap the files no longer have;
* duplicated: a gap with more than one question id.

Prints the figures (target 0 / 0 / 0) and exits 1 if any is non-zero.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from kloros_stream.analysis.chaos_stats import ChaosStats, normalize_entry
from kloros_stream.escape import clean
from kloros_stream.feed import read_feed
from tests.support.service import ServiceProcess, write_config

RECOVERY_RUNS = 3
RECOVERY_RATE = 0.67
MAX_SCENARIOS = 200
TESTS = [f"tests/test_soak.py::test_case_{i}" for i in range(40)]
HOSTILE = [b"h\xffx", b"nl\nname", b"sp ace", b"\xe9t\xe9", b"z\xfe\xfd"]


class Soak:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.src = root / "src"
        self.var = root / "var"
        self.chaos = root / "chaos.jsonl"  # outside the tmpfs: a full disk is the service's
        self.results = root / "results"
        self.tmpfs = False
        self.counts: Counter[str] = Counter()
        self.svc: ServiceProcess | None = None

    # -- set-up ----------------------------------------------------------------------------
    def prepare(self) -> Path:
        self.src.mkdir(parents=True)
        self.results.mkdir()
        self.var.mkdir()
        if os.geteuid() == 0 and shutil.which("mount"):
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs",
                                   str(self.var)], capture_output=True)
            self.tmpfs = done.returncode == 0
        self.chaos.touch()
        for i in range(30):
            self._write_source(f"mod{i}.py".encode(), broken=self.rng.random() < 0.2)
        return write_config(self.root, {
            "service": {"log_level": "info"},
            "bus": {"maxsize": 500},
            "feed": {"path": "var/feed.jsonl"},
            "supervisor": {"breaker_retry_s": 3.0, "breaker_retry_max_s": 10.0,
                           "backoff_max_s": 2.0, "stable_after_s": 10.0},
            "monitors": {
                "integration": {"roots": ["src"]},
                "chaos": {"history_file": "chaos.jsonl", "max_scenarios": MAX_SCENARIOS,
                          "recovery_runs": RECOVERY_RUNS, "recovery_rate": RECOVERY_RATE},
                "test": {"results_dir": "results", "group_threshold": 0},
            },
        })

    def cleanup(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.var)], capture_output=True)

    # -- actions -----------------------------------------------------------------------------
    def _write_source(self, name: bytes, *, broken: bool) -> None:
        body = b"def f(:\n" if broken else b"def f():\n    return 1\n"
        with open(os.path.join(os.fsencode(self.src), name), "wb") as fh:
            fh.write(body)

    def edit_source(self) -> None:
        if self.rng.random() < 0.3:
            name = self.rng.choice(HOSTILE) + b".py"
        else:
            name = f"mod{self.rng.randrange(40)}.py".encode()
        self._write_source(name, broken=self.rng.random() < 0.4)

    def delete_source(self) -> None:
        files = os.listdir(os.fsencode(self.src))
        if files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(os.fsencode(self.src), self.rng.choice(files)))

    def chaos_results(self, count: int = 0) -> None:
        count = count or self.rng.randrange(1, 30)
        lines = []
        for _ in range(count):
            scenario = f"sc{self.rng.randrange(300)}"
            lines.append({"scenario": scenario, "healed": self.rng.random() < 0.6})
        self._append_chaos(lines)

    def chaos_flood(self) -> None:
        base = self.rng.randrange(1_000_000)
        lines = [{"scenario": f"flood{base}-{i}", "healed": False} for i in range(3000)]
        lines += [{"scenario": f"flood{base}-{i}", "healed": True}
                  for i in range(0, 3000, 2) for _ in range(RECOVERY_RUNS)]
        self._append_chaos(lines)

    def _append_chaos(self, lines: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        with self.chaos.open("ab") as fh:
            fh.write(data)

    def test_report(self) -> None:
        failing = set(self.rng.sample(TESTS, self.rng.randrange(0, 8)))
        cases = []
        for nodeid in TESTS:
            module, name = nodeid.split("::")
            classname = module[:-3].replace("/", ".")
            if nodeid in failing:
                cases.append(f'<testcase classname="{classname}" name="{name}" time="0.1">'
                             f'<failure message="boom {name}">AssertionError: boom {name}'
                             f"</failure></testcase>")
            else:
                cases.append(f'<testcase classname="{classname}" name="{name}" time="0.1"/>')
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**6:06d}"
        xml = (f'<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="{len(TESTS)}" '
               f'timestamp="{stamp}">' + "".join(cases) + "</testsuite></testsuites>")
        tmp = self.results / ".report.tmp"
        tmp.write_text(xml)
        os.replace(tmp, self.results / f"report-{self.rng.randrange(3)}.xml")
        time.sleep(0.002)

    def kill_restart(self, truncate: bool = False) -> None:
        assert self.svc is not None
        self.svc.kill()
        feed = self.svc.feed_path
        if truncate and feed.exists():
            size = feed.stat().st_size
            with feed.open("r+b") as fh:
                fh.truncate(self.rng.randrange(size + 1))
            self.counts["feed_truncated"] += 1
        self.svc.start(timeout=60)

    def kill_truncate_restart(self) -> None:
        self.kill_restart(truncate=True)

    def disk_full(self) -> None:
        if not self.tmpfs:
            return
        filler = self.var / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
        time.sleep(self.rng.uniform(1.0, 4.0))
        filler.unlink()

    # -- the run -----------------------------------------------------------------------------
    def run(self, seconds: float) -> None:
        actions = [
            (self.edit_source, 30), (self.delete_source, 5), (self.chaos_results, 25),
            (self.chaos_flood, 3), (self.test_report, 10), (self.kill_restart, 4),
            (self.kill_truncate_restart, 2), (self.disk_full, 2),
        ]
        funcs, weights = zip(*actions, strict=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            action = self.rng.choices(funcs, weights)[0]
            action()
            self.counts[action.__name__] += 1
            time.sleep(self.rng.uniform(0.05, 0.6))

    def settle(self, quiet_s: float = 8.0, timeout_s: float = 300.0) -> None:
        """Until each monitor caught up and reconciled in this run (its ``reconciled``
        log line), then the feed did not change for ``quiet_s`` and the bus is empty."""
        assert self.svc is not None
        deadline = time.monotonic() + timeout_s
        for monitor in ("integration", "chaos", "test"):
            self.svc.wait_log(lambda e, m=monitor: e.get("monitor") == m and e.get("event")
                              in ("reconciled", "reconciled_clean"), timeout=timeout_s)
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            st = self.svc.feed_path.stat() if self.svc.feed_path.exists() else None
            now = (st.st_size, st.st_mtime_ns) if st else None
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s and self.svc.health()["bus"]["depth"] == 0:
                return
            time.sleep(0.5)

    # -- the truth ---------------------------------------------------------------------------
    def truth(self) -> set[tuple[str, str]]:
        gaps: set[tuple[str, str]] = set()
        for raw in os.listdir(os.fsencode(self.src)):
            if not raw.endswith(b".py"):
                continue
            try:
                with open(os.path.join(os.fsencode(self.src), raw), "rb") as fh:
                    ast.parse(fh.read())
            except (SyntaxError, ValueError):
                gaps.add(("syntax_error", clean(os.fsdecode(raw))))
        stats = ChaosStats(max_scenarios=MAX_SCENARIOS, recovery_runs=RECOVERY_RUNS,
                           recovery_rate=RECOVERY_RATE)
        for line in self.chaos.read_bytes().splitlines():
            entry = normalize_entry(orjson.loads(line))
            if entry is not None:
                stats.observe(entry)
        gaps |= {("healing_failure", s) for s in stats.open_scenarios()}
        gaps |= {("test_failure", n) for n in self._failing_tests()}
        return gaps

    def _failing_tests(self) -> set[str]:
        """The latest verdict of each test over the reports on disk."""
        import xml.etree.ElementTree as ET

        verdict: dict[str, tuple[str, bool]] = {}
        for report in self.results.glob("report-*.xml"):
            suite = ET.parse(report).getroot().find("testsuite")
            assert suite is not None
            stamp = suite.get("timestamp", "")
            for case in suite.iter("testcase"):
                nodeid = f"tests/test_soak.py::{case.get('name')}"
                failed = case.find("failure") is not None
                if nodeid not in verdict or stamp > verdict[nodeid][0]:
                    verdict[nodeid] = (stamp, failed)
        return {n for n, (_, failed) in verdict.items() if failed}


def compare(truth: set[tuple[str, str]], feed_path: Path) -> dict[str, Any]:
    questions = read_feed(feed_path).questions.values()
    ids: dict[tuple[str, str], set[str]] = {}
    open_keys: set[tuple[str, str]] = set()
    for q in questions:
        key = (q["metadata"]["gap_type"], q["metadata"]["gap_name"])
        ids.setdefault(key, set()).add(q["id"])
        if q["status"] != "resolved":
            open_keys.add(key)
    lost = truth - open_keys
    stale = open_keys - truth
    duplicated = {k for k, v in ids.items() if len(v) > 1}
    return {"truth": len(truth), "open": len(open_keys), "lost": sorted(lost),
            "stale": sorted(stale), "duplicated": sorted(duplicated)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("SOAK_SECONDS", "600")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", "1")))
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="kloros-soak-"))
    soak = Soak(root, args.seed)
    started = time.monotonic()
    try:
        config = soak.prepare()
        soak.svc = ServiceProcess(config).start(timeout=60)
        soak.run(args.seconds)
        soak.settle()
        health = soak.svc.health()
        code = soak.svc.stop(signal.SIGTERM, timeout=30)
        result = compare(soak.truth(), soak.svc.feed_path)
        reconciles = [e for e in soak.svc.logs if e.get("event") == "reconciled"]
    finally:
        if soak.svc is not None and soak.svc.proc is not None and soak.svc.proc.poll() is None:
            soak.svc.kill()
        soak.cleanup()
    print(f"soak: {time.monotonic() - started:.0f} s (faults for {args.seconds:g} s), "
          f"seed {args.seed}, tmpfs disk-full {'on' if soak.tmpfs else 'off (not root)'}")
    print("actions: " + ", ".join(f"{k} {v}" for k, v in sorted(soak.counts.items())))
    print(f"bus: published {health['bus']['published']}, dropped {health['bus']['dropped']}; "
          f"reconcile (last run): {health['reconcile']}; reconciled repairs logged in the "
          f"last run: {len(reconciles)}; exit code {code}")
    print(f"truth {result['truth']} open gaps, feed {result['open']} open questions: "
          f"lost {len(result['lost'])}, duplicated {len(result['duplicated'])}, "
          f"stale {len(result['stale'])}")
    for kind in ("lost", "duplicated", "stale"):
        if result[kind]:
            print(f"  {kind}: {result[kind][:20]}")
    bad = result["lost"] or result["duplicated"] or result["stale"] or code != 0
    if bad and soak.svc is not None:
        log = Path(tempfile.gettempdir()) / f"kloros-soak-{args.seed}.log"
        log.write_text("\n".join(soak.svc.raw_output) + "\n")
        print(f"  the last run's log: {log}")
    shutil.rmtree(root, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
