"""The question store at 1 k, 10 k, 100 k and 1 M questions (issue 13).

Each size: a feed of distinct questions (a real question line as template, about 1.5 KB),
then a real ``kloros-stream run`` (chaos monitor only): first start (index built from the
feed), restart (ready time, RSS), ``GET /questions?top=20``, the disk work of one new
question (chaos history line -> question), ``kloros-stream questions --top 20``; at 100 k
the signal -> feed line latency at 1 k signals/s and the peak RSS while 100 k distinct
gaps arrive. References are measured in the same run: the same steps on an empty feed.
``design`` rows: RSS of a Bitcask-style key directory vs the SQLite index, 100 k entries.

Targets: 100 k -> RSS <= 90 MiB (whole service), ready <= 0.5 s, ``questions --top 20``
<= 0.3 s, a new question O(1) disk work, latency p99 unchanged.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from .common import Report, median, ms, percentile

SIZES = (1_000, 10_000, 100_000)
BIG = 1_000_000
CMD = "python -m benchmarks store"
MIB = 2**20


# -- feeds ------------------------------------------------------------------------------------
def template() -> dict[str, Any]:
    """One real question (a failing test with its error), as the core writes it."""
    from kloros_stream.core.curiosity import CuriosityCore
    from kloros_stream.models import Signal

    error = ("AssertionError: assert {'status': 'ok', 'items': [1, 2, 3]} == "
             "{'status': 'degraded', 'items': [1, 2]}\n" + "  where ... = fetch()\n" * 12)
    q = CuriosityCore().handle(Signal(
        ecosystem="kloros", monitor="test", facts={
            "gap_type": "test_failure", "gap_name": "tests/test_voice.py::test_load[0]",
            "gap_category": "quality", "gap_reason": "the test failed", "error": error,
            "file": "tests/test_voice.py", "line": 42, "duration_s": 0.12}), time.time())
    assert q is not None
    return q.model_dump(mode="json")


def write_feed(path: Path, n: int) -> int:
    """``n`` distinct questions; returns the file size."""
    from kloros_stream.core.identity import question_id

    base = template()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        chunk = []
        for i in range(n):
            name = f"tests/test_voice.py::test_load[{i}]"
            q = {**base, "id": question_id("test_failure", name),
                 "question": base["question"].replace("test_load[0]", f"test_load[{i}]"),
                 "priority": round(base["priority"] * (1 + (i % 997) / 1000), 4),
                 "metadata": {**base["metadata"], "gap_name": name}}
            chunk.append(orjson.dumps(q) + b"\n")
            if len(chunk) == 10_000:
                fh.write(b"".join(chunk))
                chunk.clear()
        fh.write(b"".join(chunk))
    return path.stat().st_size


def config(directory: Path, **chaos: Any) -> Path:
    from kloros_stream.config import MONITOR_NAMES

    lines = ["[http]", "port = 0", "", "[feed]", 'path = "var/feed.jsonl"', "",
             "[monitors.chaos]", 'history_file = "var/chaos_history.jsonl"']
    lines += [f"{k} = {v}" for k, v in chaos.items()]
    for name in MONITOR_NAMES:
        if name != "chaos":
            lines += ["", f"[monitors.{name}]", "enabled = false"]
    (directory / "var").mkdir(parents=True, exist_ok=True)
    (directory / "var" / "chaos_history.jsonl").touch()
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- a service process ------------------------------------------------------------------------
class Proc:
    def __init__(self, cfg: Path) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kloros_stream", "run", "--config", str(cfg)],
            cwd=cfg.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.events: dict[str, dict[str, Any]] = {}
        self.ready_at = 0.0
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(600):
            raise RuntimeError("service did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            self.events[entry.get("event", "")] = entry
            if entry.get("event") == "service_ready":
                self.ready_at = time.perf_counter()
                self.ready.set()

    @property
    def port(self) -> int:
        return int(self.events["http_listening"]["port"])

    def get(self, path: str) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=60) as r:
            body = r.read()
        return time.perf_counter() - t0, body

    def rss(self) -> int:
        import psutil

        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def wchar(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


def append_failures(directory: Path, names: list[str]) -> None:
    with (directory / "var" / "chaos_history.jsonl").open("a") as fh:
        fh.write("".join(json.dumps({"scenario": n, "healed": False, "error": "did not come "
                                     "back", "mode": "kill"}) + "\n" for n in names))


def feed_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def new_question_cost(proc: Proc, directory: Path, rounds: int = 5) -> tuple[float, float,
                                                                                bool]:
    """Median (feed bytes appended, bytes passed to write()) per new question; whether the
    feed file stayed the same (no rewrite)."""
    feed = directory / "var" / "feed.jsonl"
    inode = feed.stat().st_ino
    grew, wrote = [], []
    for i in range(rounds):
        size, lines, w0 = feed.stat().st_size, feed_lines(feed), proc.wchar()
        append_failures(directory, [f"bench-new-{time.monotonic_ns()}-{i}"])
        deadline = time.monotonic() + 30
        while feed_lines(feed) == lines and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.5)  # housekeeping's fsync pass included
        grew.append(feed.stat().st_size - size)
        wrote.append(proc.wchar() - w0)
    return median(grew), median(wrote), feed.stat().st_ino == inode


def cli_top(cfg: Path, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kloros_stream", "questions", "--config",
                        str(cfg), "--top", "20"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return median(times)


def json_loop(feed: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import json,sys; q={}; [q.__setitem__(j['id'], j) "
                    "for j in map(json.loads, open(sys.argv[1]))]", str(feed)], check=True)
    return time.perf_counter() - t0


# -- one size ------------------------------------------------------------------------------------
def measure(n: int, directory: Path) -> dict[str, Any]:
    cfg = config(directory, max_scenarios=1_000_000)
    size = write_feed(directory / "var" / "feed.jsonl", n) if n else 0
    first = Proc(cfg)
    build = first.events["feed_recovered"].get("seconds", 0.0)
    first.stop()
    proc = Proc(cfg)
    out: dict[str, Any] = {"n": n, "feed_mib": size / MIB, "build_s": build}
    try:
        out["ready_s"] = proc.ready_at - proc.started
        out["recover_s"] = proc.events["feed_recovered"]["seconds"]
        out["rss_ready"] = proc.rss()
        out["top20_s"] = median([proc.get("/questions?top=20")[0] for _ in range(5)])
        out["rss_served"] = proc.rss()
        out["grew"], out["wrote"], out["same_file"] = new_question_cost(proc, directory)
    finally:
        proc.stop()
    out["cli_s"] = cli_top(cfg)
    return out


def latency(directory: Path) -> list[float]:
    """Signal -> feed line at 1 k/s, 10 k distinct gaps, in-process (bench_spine's pacing)
    over the feed in ``directory``."""
    from kloros_stream.config import parse_config
    from kloros_stream.service import Service

    from .bench_spine import LATENCY_WARMUP, _PacedMonitor, _Recorder, _run

    async def main() -> list[float]:
        cfg = parse_config({"http": {"port": 0}, "feed": {"path": "var/feed.jsonl"},
                            "service": {"state_dir": "var/state"}}, directory)
        done = asyncio.Event()
        _PacedMonitor.done = done
        svc = Service(cfg, factories={"test": _PacedMonitor})
        recorder = _Recorder(svc.latency)
        svc.latency = recorder  # type: ignore[assignment]
        task = asyncio.create_task(svc.run())
        await asyncio.wait_for(done.wait(), 120)
        while svc.bus.depth or svc.core.handled < _PacedMonitor.count:
            await asyncio.sleep(0.01)
        svc.request_stop()
        await task
        return recorder.values[LATENCY_WARMUP:]

    return list(_run(main))


def peak_rss_while_arriving(directory: Path, n: int, chunk: int = 5000
                            ) -> tuple[int, int, float, int]:
    """Peak and final RSS while ``n`` distinct gaps arrive (chaos history, in chunks the
    bus holds: a bigger burst is dropped oldest-first by design), seconds, bus drops."""
    cfg = config(directory, max_scenarios=n + 1000)
    proc = Proc(cfg)
    feed = directory / "var" / "feed.jsonl"
    peak = 0
    try:
        t0 = time.perf_counter()
        for start in range(0, n, chunk):
            append_failures(directory, [f"storm-{i}" for i in range(start, start + chunk)])
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                peak = max(peak, proc.rss())
                if feed.exists() and feed_lines(feed) >= start + chunk:
                    break
                time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        time.sleep(2)
        dropped = json.loads(proc.get("/health")[1])["bus"]["dropped"]
        return max(peak, proc.rss()), proc.rss(), elapsed, dropped
    finally:
        proc.stop()


# -- design comparison (subprocesses for clean RSS) ---------------------------------------------
def _rss_now() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def design(kind: str, n: int) -> dict[str, float]:
    """RSS added by ``n`` entries: a key directory in a dict, or the SQLite index (entries
    made on the fly, so only what the structure keeps is counted)."""
    from kloros_stream.core.store import QuestionEntry, Selection

    def entry(i: int) -> QuestionEntry:
        ts = f"2026-12-01T10:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i % 1000:03d}+00:00"
        return QuestionEntry(f"test_failure-{i * 104729:016x}", "ready", 1.0 + i * 1e-6,
                             i % 300, ts, ts, ts, f"{i * 7919:032x}", "test_failure",
                             f"tests/test_x.py::test_{i}", "test", i * 1500, 1500)

    before = _rss_now()
    t0 = time.perf_counter()
    if kind == "keydir":
        class Slot:
            __slots__ = ("created", "ehash", "gap_type", "last_seen", "len", "monitor",
                         "occurrences", "off", "priority", "status", "updated")

        keydir = {}
        for i in range(n):
            e, s = entry(i), Slot()
            s.status, s.priority, s.occurrences = e.status, e.priority, e.occurrences
            s.created, s.updated, s.last_seen = 1.7e9 + i, 1.7e9 + i + 0.5, 1.7e9 + i + 0.25
            s.ehash = bytes.fromhex(e.evidence_hash)
            s.gap_type, s.monitor, s.off, s.len = e.gap_type, e.monitor, e.offset, e.length
            keydir[e.id] = s
        built = time.perf_counter()
        top = sorted((-s.priority, k) for k, s in keydir.items())[:20]
        return {"rss_mib": (_rss_now() - before) / MIB, "build_s": built - t0,
                "top20_ms": (time.perf_counter() - built) * 1000, "n": len(top)}
    from kloros_stream.store.index import QuestionIndex

    with tempfile.TemporaryDirectory() as tmp:
        index = QuestionIndex(Path(tmp) / "i.sqlite")
        for start in range(0, n, 5000):
            index.insert_new([entry(i) for i in range(start, min(n, start + 5000))])
        index.commit()
        built = time.perf_counter()
        top = index.select(Selection(limit=20))
        out = {"rss_mib": (_rss_now() - before) / MIB, "build_s": built - t0,
               "top20_ms": (time.perf_counter() - built) * 1000, "n": len(top)}
        index.close()
    return out


def bench_design(report: Report, n: int = 100_000) -> None:
    got = {}
    for kind in ("keydir", "sqlite"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_store", "design", kind,
                              str(n)], check=True, capture_output=True, text=True).stdout
        got[kind] = json.loads(out.splitlines()[-1])
    report.add("store.design", f"RSS added by {n // 1000} k entries: SQLite index",
               f"{got['sqlite']['rss_mib']:.1f} MiB (top 20: {got['sqlite']['top20_ms']:.2f} ms)",
               f"Bitcask-style dict of slotted entries: {got['keydir']['rss_mib']:.1f} MiB "
               f"({got['keydir']['rss_mib'] * MIB / n:.0f} B/question; top 20 by sorting: "
               f"{got['keydir']['top20_ms']:.0f} ms)", CMD + " (design)")


# -- the report ------------------------------------------------------------------------------------
def run(report: Report) -> None:
    bench_design(report)
    results = {}
    for n in (0, *SIZES):
        with tempfile.TemporaryDirectory(prefix=f"bench-store-{n}-") as tmp:
            results[n] = measure(n, Path(tmp))
            if n == SIZES[-1]:
                results[n]["json_loop_s"] = json_loop(Path(tmp) / "var" / "feed.jsonl")
                results[n]["latency"] = latency(Path(tmp))
        print(f"  {n}: {results[n] | {'latency': '...'}}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-store-empty-lat-") as tmp:
        config(Path(tmp))
        results[0]["latency"] = latency(Path(tmp))
    ref = results[0]
    for n in SIZES:
        r = results[n]
        label = f"{n // 1000} k questions ({r['feed_mib']:.0f} MiB feed)"
        report.add("store.start", f"{label}: restart -> ready (spawn to READY) / store open",
                   f"{r['ready_s']:.2f} s / {r['recover_s'] * 1000:.0f} ms",
                   f"empty feed: {ref['ready_s']:.2f} s / {ref['recover_s'] * 1000:.0f} ms; "
                   f"first start (index built from the feed): {r['build_s']:.1f} s; "
                   "target <= 0.5 s", CMD)
        report.add("store.rss", f"{label}: RSS of the whole service after restart / after "
                   "serving /questions",
                   f"{r['rss_ready'] / MIB:.1f} / {r['rss_served'] / MIB:.1f} MiB",
                   f"empty feed: {ref['rss_ready'] / MIB:.1f} / {ref['rss_served'] / MIB:.1f} "
                   "MiB; target <= 90 MiB", CMD)
        report.add("store.query", f"{label}: GET /questions?top=20 (median of 5) / "
                   "`kloros-stream questions --top 20` (median of 3, whole process)",
                   f"{ms(r['top20_s'])} / {r['cli_s']:.2f} s",
                   f"empty feed: {ms(ref['top20_s'])} / {ref['cli_s']:.2f} s"
                   + (f"; json one-liner over the feed {r['json_loop_s']:.2f} s"
                      if "json_loop_s" in r else "") + "; target <= 0.3 s", CMD)
        report.add("store.write", f"{label}: one new question: feed bytes appended / bytes "
                   "passed to write() (median of 5)",
                   f"{r['grew']:.0f} B / {r['wrote']:.0f} B"
                   + ("" if r["same_file"] else " (the feed was replaced!)"),
                   f"empty feed: {ref['grew']:.0f} B / {ref['wrote']:.0f} B", CMD)
    big = SIZES[-1]
    lat, ref_lat = results[big]["latency"], ref["latency"]
    report.add("store.latency", f"signal -> feed line p50 / p99 at 1 k/s, {len(lat)} new "
               f"distinct gaps on a {big // 1000} k-question feed",
               f"{ms(percentile(lat, 50))} / {ms(percentile(lat, 99))}",
               f"same run, empty feed: {ms(percentile(ref_lat, 50))} / "
               f"{ms(percentile(ref_lat, 99))}; before the store: p99 0.36 ms", CMD)
    with tempfile.TemporaryDirectory(prefix="bench-store-storm-") as tmp:
        peak, final, secs, dropped = peak_rss_while_arriving(Path(tmp), big)
    report.add("store.rss", f"peak RSS while {big // 1000} k distinct gaps arrive (chaos "
               "history -> questions, 5 k at a time)",
               f"{peak / MIB:.1f} MiB (after: {final / MIB:.1f} MiB)",
               f"{big / secs:.0f} questions/s, {dropped} dropped; unit MemoryMax=192M", CMD)
    with tempfile.TemporaryDirectory(prefix="bench-store-1m-") as tmp:
        r = measure(BIG, Path(tmp))
    report.add("store.1m", f"1 M questions ({r['feed_mib']:.0f} MiB feed): first start / "
               "restart -> ready / RSS / GET /questions?top=20 / questions --top 20",
               f"{r['build_s']:.0f} s / {r['ready_s']:.2f} s / {r['rss_served'] / MIB:.1f} MiB"
               f" / {ms(r['top20_s'])} / {r['cli_s']:.2f} s",
               f"one new question: {r['grew']:.0f} B appended, {r['wrote']:.0f} B written",
               CMD)


if __name__ == "__main__":
    if sys.argv[1:2] == ["design"]:
        print(json.dumps(design(sys.argv[2], int(sys.argv[3]))))
