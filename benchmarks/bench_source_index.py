"""The source index, measured from outside a real ``kloros-stream run``.

Corpus: real Python files copied from this machine's interpreter (the standard library
with its site-packages, the venv's site-packages, Debian's dist-packages; the standard
library again under another prefix when more are needed), the first N by path, at N = 2 k,
10 k and 20 k. The service runs integration, module_discovery and capability_discovery
(``scan_imports``) on the copy; every figure is read from outside the process:

- cold scan: the index's own scan time (walk, stat, read, hash, parse, extract, journal;
  its ``source_index_scanned`` log line) and the wall time from spawning the process until
  the three monitors report their initial scans in /health; same-run reference: a bare
  ``read + ast.parse`` loop over the same files in a fresh interpreter (one core); and
  the CPU time of the service with its parse processes against that loop (the scan
  runs on every core: wall and CPU are both quoted);
- warm restart (nothing changed): the journal's load, the walk and stat, the wall time
  until every monitor has folded the records in (or taken its fold saved at the stop),
  ``files_parsed_total`` and the RSS then; same-run reference: the interpreter importing
  the service's modules and exiting (``python -c "import kloros_stream.service"``, median
  of 3), the floor under any restart;
- RSS of the service once settled (its heap trimmed after the scans) after the scan and
  the edits, and after the warm restart (psutil);
- one-file edit -> feed line: a file is rewritten to emit a topic nobody subscribes to
  (a new question) and back (its resolution); the time from the write to the feed line
  (seen with inotify on the feed file; only the line about that edit counts);
- inotify watches held by the process (``/proc/PID/fdinfo``) against the directories of
  the tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import Report, median, percentile

SIZES = (2000, 10_000, 20_000)
EDITS = 100
REPO = Path(__file__).resolve().parent.parent
SOURCES = (
    Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}",
    Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}",
    Path("/usr/lib/python3/dist-packages"),
)
MONITORS = ("integration", "module_discovery", "capability_discovery")
BARE = """
import ast, sys, time
paths = open(sys.argv[1]).read().split("\\n")
t = time.perf_counter()
for p in paths:
    try:
        with open(p, "rb") as fh:
            ast.parse(fh.read(), filename=p)
    except (SyntaxError, ValueError, OSError):
        pass
print(time.perf_counter() - t)
"""


def corpus(n: int) -> list[tuple[Path, Path]]:
    """(source, relative destination) of the first ``n`` real .py files."""
    picked: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for copy in range(3):
        for i, base in enumerate(SOURCES):
            if not base.is_dir():
                continue
            for path in sorted(base.rglob("*.py")):
                real = path.resolve()
                if "__pycache__" in path.parts or not path.is_file():
                    continue
                if copy == 0 and real in seen:
                    continue
                seen.add(real)
                picked.append((path, Path(f"c{copy}s{i}") / path.relative_to(base)))
                if len(picked) >= n:
                    return picked
    return picked


def build(root: Path, n: int) -> list[Path]:
    files = []
    for src, rel in corpus(n):
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        files.append(dest)
    bench = root / "zz_bench"
    bench.mkdir()
    (bench / "edited.py").write_text("X = 0\n")
    return files


def bare_loop(files: list[Path], work: Path) -> float:
    listing = work / "files.txt"
    listing.write_text("\n".join(map(str, files)))
    out = subprocess.run([sys.executable, "-c", BARE, str(listing)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip())


def watches(pid: int) -> int:
    total = 0
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            total += sum(line.startswith("inotify wd:") for line in fd.read_text().splitlines())
        except OSError:
            continue
    return total


def _index_seconds(svc: Any) -> tuple[float, float]:
    """(walk + stat + load seconds, journal load seconds) of the index's scan."""
    entry = svc.wait_log(lambda e: e.get("event") == "source_index_scanned", timeout=600)
    return float(entry["seconds"]), float(entry.get("journal_load_s") or 0.0)


def _cpu_seconds(pid: int) -> float:
    """CPU time of the service and of its finished children (the parse processes)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _metric(svc: Any, name: str) -> float:
    _status, body = svc.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def _start(svc: Any) -> tuple[float, float, float]:
    """(index scan seconds, spawn -> every monitor scanned wall seconds, the slowest
    /health answer meanwhile: how long the event loop was held). Also sets
    ``svc.journal_load_s`` and ``svc.cpu_s`` (service + parse processes until scanned)."""
    started = time.perf_counter()
    svc.start(timeout=600)
    slowest = 0.0
    while True:
        asked = time.perf_counter()
        try:
            monitors = svc.health()["monitors"]
        except OSError:  # timed out: the loop was held for more than 5 s
            monitors = {}
        slowest = max(slowest, time.perf_counter() - asked)
        if monitors and all("initial_scan_s" in monitors[m].get("details", {})
                            for m in MONITORS):
            svc.scan_seconds = {m: monitors[m]["details"]["initial_scan_s"] for m in MONITORS}
            break
        assert time.perf_counter() - started < 2400, "initial scans not done"
        time.sleep(0.05)
    wall = time.perf_counter() - started
    assert svc.proc is not None
    svc.cpu_s = _cpu_seconds(svc.proc.pid)
    index_s, svc.journal_load_s = _index_seconds(svc)
    return index_s, wall, slowest


def _trimmed(svc: Any, timeout: float = 30.0) -> None:
    """Wait until the service has trimmed its heap after the scans (``heap_trimmed``; a C
    library without ``malloc_trim`` never logs it: then the timeout), and a moment more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == "heap_trimmed" for e in list(svc.logs)):
            break
        time.sleep(0.05)
    time.sleep(1.0)


def edit_latencies(svc: Any, edited: Path, feed: Path, n: int) -> list[float]:
    """Edit ``n`` times; each edit's latency ends at the feed line *about that edit* (the
    topic's question, or its resolution). Any other line (an initial-scan question still
    being written, a deferred counter update) is not the edit's, and is skipped."""
    from asyncinotify import Inotify, Mask

    out = []
    with Inotify(sync_timeout=1.0) as inotify, open(feed, "rb") as lines:
        inotify.add_watch(feed, Mask.MODIFY)
        lines.seek(0, os.SEEK_END)
        pending = b""
        for i in range(n):
            time.sleep(0.02)
            topic = f"BENCH_{i // 2}"
            text = f'def go(bus):\n    bus.emit("{topic}")\n' if i % 2 == 0 else "X = 0\n"
            want = (f"'{topic}'".encode(), b'"status":"resolved"' if i % 2 else b'"status":"ready"')
            started = time.perf_counter()
            with open(edited, "w") as fh:
                fh.write(text)
            deadline = started + 30
            while True:
                pending += lines.read()
                *complete, pending = pending.split(b"\n")
                if any(all(w in line for w in want) for line in complete):
                    break
                inotify.sync_get()  # the feed grew (or a second passed)
                assert time.perf_counter() < deadline, f"no feed line for edit {i} ({topic})"
            out.append(time.perf_counter() - started)
    return out


def measure(n: int, work: Path) -> dict[str, Any]:
    import psutil

    sys.path.insert(0, str(REPO))
    from tests.support.service import ServiceProcess, write_config

    tree = work / "tree"
    files = build(tree, n)
    dirs = sum(1 for p in tree.rglob("*") if p.is_dir()) + 1
    bare = bare_loop(files, work)
    cfg = write_config(work, {
        "service": {"log_level": "info"},
        "monitors": {
            "integration": {"roots": [str(tree)]},
            "module_discovery": {"roots": [str(tree)]},
            "capability_discovery": {"scan_imports": True},
        },
    })
    svc = ServiceProcess(cfg, env={"PYTHONPATH": str(REPO)})
    result: dict[str, Any] = {"files": len(files), "dirs": dirs, "bare_s": bare}
    try:
        result["cold_s"], result["cold_wall_s"], result["cold_health_max"] = _start(svc)
        result["cold_monitors"] = svc.scan_seconds
        result["cold_cpu_s"] = svc.cpu_s
        result["parsed_cold"] = _metric(svc, "kloros_stream_files_parsed_total")
        assert svc.proc is not None
        result["watches"] = watches(svc.proc.pid)
        feed = svc.feed_path
        if not feed.exists():
            feed.parent.mkdir(parents=True, exist_ok=True)
            feed.touch()
        _trimmed(svc)
        lat = edit_latencies(svc, tree / "zz_bench" / "edited.py", feed, EDITS)
        result["edit_p50"], result["edit_p99"] = median(lat), percentile(lat, 99)
        result["edit_max"] = max(lat)
        time.sleep(2)
        result["rss_mib"] = psutil.Process(svc.proc.pid).memory_info().rss / 2**20
        assert svc.stop(timeout=60) == 0
        result["warm_s"], result["warm_wall_s"], result["warm_health_max"] = _start(svc)
        result["warm_monitors"] = svc.scan_seconds
        result["warm_journal_s"] = svc.journal_load_s
        result["parsed_warm"] = _metric(svc, "kloros_stream_files_parsed_total")
        _trimmed(svc)
        result["warm_rss_mib"] = psutil.Process(svc.proc.pid).memory_info().rss / 2**20
        assert svc.stop(timeout=60) == 0
        result["import_s"] = import_floor()
    finally:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.kill()
    return result


def import_floor(runs: int = 3) -> float:
    """Seconds for a fresh interpreter to import the service's modules and exit."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import kloros_stream.service"], check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        seconds.append(time.perf_counter() - started)
    return median(seconds)


SCAN_RUNS = 50
SCAN_FILES = 2000


def scan_repeat(work: Path, n_files: int = SCAN_FILES, runs: int = SCAN_RUNS) -> dict[str, Any]:
    """``kloros-stream scan --json`` ``runs`` times over a real tree with the four source
    monitors: how many distinct outputs (clock fields aside), failures, seconds per run."""
    sys.path.insert(0, str(REPO))
    from tests.support.service import write_config

    tree = work / "tree"
    build(tree, n_files)
    (work / "docs").mkdir()
    (work / "docs" / "guide.md").write_text("See `zz_bench.edited` and `c0s0.os`.\n")
    cfg = write_config(work, {"monitors": {
        "integration": {"roots": [str(tree)]}, "module_discovery": {"roots": [str(tree)]},
        "capability_discovery": {"scan_imports": True},
        "knowledge_discovery": {"docs_dirs": ["docs"]},
    }})
    outputs, failures, seconds = set(), 0, []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "kloros_stream", "scan", "--config",
                               str(cfg), "--json"], capture_output=True, text=True,
                              cwd=work, env={**os.environ, "PYTHONPATH": str(REPO)})
        seconds.append(time.perf_counter() - started)
        failures += proc.returncode != 0
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        for row in rows:
            row.pop("ts", None), row.pop("observed_at", None)
        outputs.add(json.dumps(rows, sort_keys=True))
    return {"runs": runs, "distinct": len(outputs), "failures": failures,
            "gaps": len(rows), "median_s": median(seconds)}


def run(report: Report) -> None:
    run_scan_repeat(report)
    run_sizes(report, SIZES)


def run_scan_repeat(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        r = scan_repeat(Path(tmp))
    report.add(f"scan --json, {SCAN_FILES} files, 4 source monitors",
               f"{r['runs']} runs: distinct outputs / failures",
               f"{r['distinct']} / {r['failures']} "
               f"({r['gaps']} gaps, median {r['median_s']:.1f} s a run)",
               "identical every time, exit 0", "make bench (bench_source_index)")


def compile_package() -> None:
    """Byte-compile the package, as an installed service has it (pip compiles what it
    installs; an editable install, or ``PYTHONDONTWRITEBYTECODE``, leaves the ~60 modules
    to be compiled from source at every start, ~0.1-0.3 s of each restart here)."""
    import compileall

    compileall.compile_dir(REPO / "kloros_stream", quiet=1)


def run_sizes(report: Report, sizes: tuple[int, ...]) -> None:
    compile_package()
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
            r = measure(n, Path(tmp))
        results.append(r)
        print(json.dumps(r), flush=True)
        label = f"source index, {r['files']} files ({r['dirs']} dirs)"
        cmd = "make bench (bench_source_index)"
        report.add(label, "cold scan (index) / spawn -> scanned",
                   f"{r['cold_s']:.2f} s / {r['cold_wall_s']:.2f} s; "
                   f"{r['parsed_cold']:.0f} parsed",
                   f"bare read+ast.parse loop: {r['bare_s']:.2f} s "
                   f"({r['cold_s'] / r['bare_s']:.2f}x)", cmd)
        report.add(label, "cold: CPU of the service and its parse processes, spawn -> scanned",
                   f"{r['cold_cpu_s']:.2f} s",
                   f"bare loop (one core): {r['bare_s']:.2f} s "
                   f"({r['cold_cpu_s'] / r['bare_s']:.2f}x)", cmd)
        report.add(label, "warm restart: journal load + walk and stat / spawn -> scanned",
                   f"{r['warm_journal_s']:.2f} + {r['warm_s']:.2f} s / {r['warm_wall_s']:.2f} s; "
                   f"{r['parsed_warm']:.0f} parsed",
                   f"interpreter + imports alone: {r['import_s']:.2f} s; monitors' own "
                   "initial scans (s): " + ", ".join(
                       f"{m} {v}" for m, v in r["warm_monitors"].items()), cmd)
        report.add(label, "RSS settled (after the cold scan and edits / after the warm "
                   "restart)", f"{r['rss_mib']:.1f} / {r['warm_rss_mib']:.1f} MiB", "", cmd)
        report.add(label, "slowest /health answer during the cold scan / the warm restart",
                   f"{r['cold_health_max'] * 1000:.0f} / {r['warm_health_max'] * 1000:.0f} ms",
                   "how long the event loop was held at worst", cmd)
        report.add(label, f"edit -> feed line p50 / p99 / max ({EDITS} edits)",
                   f"{r['edit_p50'] * 1000:.1f} / {r['edit_p99'] * 1000:.1f} / "
                   f"{r['edit_max'] * 1000:.1f} ms", "", cmd)
        report.add(label, "inotify watches (whole process)", str(r["watches"]),
                   f"{r['dirs']} directories in the tree", cmd)
    if len(results) > 1:
        first, last = results[0], results[-1]
        slope = (last["rss_mib"] - first["rss_mib"]) * 1024 / (last["files"] - first["files"])
        report.add("source index", "RSS per additional file",
                   f"{slope:.2f} KiB", f"{first['files']} -> {last['files']} files",
                   "make bench (bench_source_index)")


if __name__ == "__main__":  # python -m benchmarks.bench_source_index [N ...]: sizes only
    rep = Report()
    run_sizes(rep, tuple(int(a) for a in sys.argv[1:]) or SIZES)
