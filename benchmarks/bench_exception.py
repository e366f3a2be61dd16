"""Exception monitor: parser throughput beside journalctl's own, and journal-entry-to-feed-line
latency beside journalctl -f's own delivery latency, on a real namespaced journald.

1. Throughput. A private ``systemd-journald NS`` (rate limit off) is filled with a mixed
   stream through its stdout socket: plain and structlog-style JSON lines, some with
   "error" in the text, 1% of the lines in 7-line tracebacks, 0.1% at priority err, 0.05%
   JSON lines with an ``exception`` field. Measured in the same run (median of 3):
   ``journalctl -o json --all | wc -l`` (the ceiling), the monitor's parser alone (reading
   the same JSON from ``cat``: split, orjson, filter, assembly, fingerprint, publish), and
   the monitor behind the real journalctl.
2. Latency. A real ``kloros-stream run`` follows the namespace; a reference
   ``journalctl -f -o json`` reads it too. Probes (new bugs: a priority-err line, or a
   traceback) are written every ~0.3 s; for each, the time from the write to its feed line
   and to the reference journalctl's delivery of its last line are recorded, and p50/p99 of
   both distributions are reported. Per entry the two are not comparable: journald
   announces changes on a timer, so each journalctl (ours and the reference) sees a given
   entry either at once or ~250 ms later, independently.

Needs root and /lib/systemd/systemd-journald; otherwise the parts are skipped with a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from kloros_stream.checkpoint import read_only_store
from kloros_stream.config import parse_config
from kloros_stream.logs import configure_logging
from kloros_stream.models import Signal
from kloros_stream.monitors.base import MonitorContext
from kloros_stream.monitors.exception import ExceptionMonitor
from tests.support.journald import NamespacedJournald, journald_skip_reason, wait_until
from tests.support.service import ServiceProcess, write_config

from .common import Report, median, ms, percentile

BENCH = "exception"
LINES = 200_000
RUNS = 3
PROBES = 80
CMD = "python -m benchmarks exception"


def word(n: int) -> str:
    """Digits-free distinct words, so normalisation keeps every probe a new bug."""
    out = ""
    n += 26 * 26
    while n:
        n, r = divmod(n, 26)
        out = chr(97 + r) + out
    return out


def traceback_lines(exc: str, func: str) -> list[str]:
    return [
        "Traceback (most recent call last):",
        '  File "/srv/kloros/kloros/main.py", line 12, in <module>',
        "    run()",
        f'  File "/srv/kloros/kloros/jobs.py", line 40, in {func}',
        "    return jobs[job_id]",
        "           ~~~~^^^^^^^^",
        exc,
    ]


def mixed_stream(lines: int) -> tuple[list[str], dict[str, int]]:
    """The benchmark's journal lines (with ``<N>`` level prefixes) and what they hold."""
    out: list[str] = []
    kinds = {"traceback": 0, "priority": 0, "json_log": 0}
    i = 0
    while len(out) < lines:
        i += 1
        if i % 700 == 0:  # 7 lines every ~700: 1% of lines
            out += [
                f"<6>{line}"
                for line in traceback_lines(f"KeyError: 'job {i}'", f"dispatch_{word(i % 5)}")
            ]
            kinds["traceback"] += 1
        elif i % 1000 == 0:
            out.append(f"<3>queue consumer {word(i % 7)} lost its connection to 10.0.0.{i % 250}")
            kinds["priority"] += 1
        elif i % 2000 == 1:
            out.append(
                "<6>"
                + json.dumps(
                    {
                        "event": "request failed",
                        "level": "error",
                        "exception": f"ValueError: bad request {i}",
                    }
                )
            )
            kinds["json_log"] += 1
        elif i % 5 == 0:
            out.append(
                "<6>"
                + json.dumps(
                    {
                        "event": "request served",
                        "path": f"/api/{i}",
                        "status": 200,
                        "duration_ms": i % 97,
                    }
                )
            )
        else:
            out.append(f"<6>worker {i % 13} handled job {i}: 0 errors, {i % 50} ms")
    return out[:lines], kinds


class StreamWriter:
    """A service's stdout stream to the namespace (level prefixes on)."""

    def __init__(self, jd: NamespacedJournald, unit: str, identifier: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(jd.stdout_socket))
        self.sock.sendall(f"{identifier}\n{unit}\n6\n1\n0\n0\n0\n".encode())

    def write(self, lines: list[str]) -> float:
        data = "".join(f"{line}\n" for line in lines).encode()
        t = time.time()
        self.sock.sendall(data)
        return t

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.recv(1)
        self.sock.close()


def journal_count(ns: str) -> int:
    out = subprocess.run(
        ["journalctl", f"--namespace={ns}", "--output=json", "--all", "--no-pager"],
        capture_output=True,
        check=True,
    ).stdout
    return out.count(b"\n")


def timed(cmd: str) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


async def monitor_scan(journalctl: str, namespace: str, lines: int) -> tuple[float, list[Signal]]:
    config = parse_config(
        {
            "monitors": {
                "exception": {
                    "journalctl": journalctl,
                    "namespace": namespace,
                    "units": ["kloros-*"],
                    "initial_lines": lines,  # the whole benchmark journal
                }
            }
        },
        Path.cwd(),
    )
    sink: list[Signal] = []

    class Sink:
        def publish(self, item: Signal) -> None:
            sink.append(item)

    ctx = MonitorContext(
        name="exception",
        config=config,
        publisher=Sink(),
        checkpoints=read_only_store(),
        one_shot=True,
    )
    monitor = ExceptionMonitor(ctx)
    t = time.perf_counter()
    await monitor.run()
    return time.perf_counter() - t, sink


def throughput(report: Report, tmp: Path) -> None:
    lines, kinds = mixed_stream(LINES)
    with NamespacedJournald(settings={"RateLimitBurst": "0"}) as jd:
        writer = StreamWriter(jd, "kloros-bench.service", "bench")
        for start in range(0, len(lines), 10_000):
            writer.write(lines[start : start + 10_000])
        writer.close()
        ns = jd.namespace
        wait_until(
            lambda: journal_count(ns) >= LINES,
            timeout=120,
            interval=0.5,
            what="benchmark lines in the journal",
        )
        total = journal_count(ns)
        dump = tmp / "journal.json"
        subprocess.run(
            f"journalctl --namespace={ns} -o json --all --no-pager > {dump}", shell=True, check=True
        )
        fake = tmp / "cat-journalctl"
        fake.write_text(f"#!/bin/sh\nexec cat {dump}\n")
        fake.chmod(0o755)

        ceiling = [
            timed(f"journalctl --namespace={ns} -o json --all --no-pager | wc -l")
            for _ in range(RUNS)
        ]
        ours = [asyncio.run(monitor_scan(str(fake), "", total)) for _ in range(RUNS)]
        real = [asyncio.run(monitor_scan("journalctl", ns, total)) for _ in range(RUNS)]

    gaps = ours[0][1]
    found = {k: sum(1 for s in gaps if s.facts["kind"] == k) for k in kinds}
    found_real = {k: sum(1 for s in real[0][1] if s.facts["kind"] == k) for k in kinds}
    ceiling_rate = total / median(ceiling)
    parser_rate = total / median([t for t, _ in ours])
    real_rate = total / median([t for t, _ in real])
    report.add(
        BENCH,
        "journalctl -o json --all piped to wc -l",
        f"{ceiling_rate:,.0f} lines/s",
        f"{total:,} entries, median of {RUNS}",
        CMD,
    )
    report.add(
        BENCH,
        "parser throughput (monitor on the same JSON via cat)",
        f"{parser_rate:,.0f} lines/s",
        f"{parser_rate / ceiling_rate:.1f}x journalctl; found {found} of {kinds}",
        CMD,
    )
    report.add(
        BENCH,
        "monitor behind the real journalctl",
        f"{real_rate:,.0f} lines/s",
        f"{real_rate / ceiling_rate:.2f}x journalctl piped to wc -l; found {found_real}",
        CMD,
    )


class FeedWatcher(threading.Thread):
    """First appearance time of each gap_name in the feed, polled every 0.5 ms."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.seen: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        offset = 0
        buf = b""
        while not self.done.is_set():
            try:
                with self.path.open("rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                data = b""
            now = time.time()
            if data:
                offset += len(data)
                buf += data
                *complete, buf = buf.split(b"\n")
                for line in complete:
                    with contextlib.suppress(ValueError, KeyError):
                        name = json.loads(line)["metadata"]["gap_name"]
                        self.seen.setdefault(name, now)
            time.sleep(0.0005)


class JournalctlWatcher(threading.Thread):
    """``journalctl -f``'s own delivery time of each MESSAGE."""

    def __init__(self, ns: str) -> None:
        super().__init__(daemon=True)
        self.proc = subprocess.Popen(
            ["journalctl", f"--namespace={ns}", "--follow", "--output=json", "--all", "--lines=0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.seen: dict[str, float] = {}

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.time()
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.seen.setdefault(json.loads(line)["MESSAGE"], now)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def latency(report: Report, tmp: Path) -> None:
    with NamespacedJournald(settings={"RateLimitBurst": "0"}) as jd:
        path = write_config(
            tmp,
            {
                "monitors": {"exception": {"namespace": jd.namespace}},
                "service": {"log_level": "info"},
            },
        )
        with ServiceProcess(path) as svc:
            wait_until(
                lambda: (
                    svc.health()["monitors"]["exception"].get("details", {}).get("journal")
                    == "following"
                ),
                timeout=20,
                what="monitor following",
            )
            feed = FeedWatcher(svc.feed_path)
            feed.start()
            ref = JournalctlWatcher(jd.namespace)
            ref.start()
            time.sleep(1.0)  # the reference journalctl is at the tail
            writer = StreamWriter(jd, "kloros-latency.service", "latency")
            probes: list[tuple[str, float, str, str]] = []  # kind, written, feed name, last
            rng = random.Random(7)
            for k in range(PROBES):
                w = word(k)
                if k % 2:
                    msg = f"latency probe {w} lost its queue"
                    t = writer.write([f"<3>{msg}"])
                    probes.append(("priority line", t, f"err: {msg}", msg))
                else:
                    exc = f"RuntimeError: latency probe {w}"
                    t = writer.write(traceback_lines(exc, f"probe_{w}"))
                    probes.append(("traceback", t, exc, exc))
                time.sleep(0.25 + rng.random() * 0.1)
            with contextlib.suppress(AssertionError):
                wait_until(
                    lambda: all(p[2] in feed.seen and p[3] in ref.seen for p in probes),
                    timeout=20,
                    what="every probe in the feed and in journalctl",
                )
            writer.close()
            feed.done.set()
            ref.stop()
    for kind in ("priority line", "traceback"):
        mine = [p for p in probes if p[0] == kind]
        ours = [feed.seen[name] - t for _, t, name, _ in mine if name in feed.seen]
        theirs = [ref.seen[last] - t for _, t, _, last in mine if last in ref.seen]
        missing = len(mine) - len(ours)
        report.add(
            BENCH,
            f"journal entry -> feed line, {kind} (p50 / p99)",
            f"{ms(percentile(ours, 50))} / {ms(percentile(ours, 99))}",
            f"journalctl -f in the same run: {ms(percentile(theirs, 50))} / "
            f"{ms(percentile(theirs, 99))}; p99 difference "
            f"{ms(percentile(ours, 99) - percentile(theirs, 99))}; n={len(ours)}"
            + (f"; {missing} never reached the feed" if missing else ""),
            CMD,
        )


def run(report: Report) -> None:
    configure_logging("error", json=True)  # the in-process scans would log every new bug
    reason = journald_skip_reason()
    if reason:
        report.add(BENCH, "throughput and latency", "skipped", reason, CMD)
        return
    with tempfile.TemporaryDirectory(prefix="bench-exception-") as tmp:
        throughput(report, Path(tmp))
    with tempfile.TemporaryDirectory(prefix="bench-exception-") as tmp:
        latency(report, Path(tmp))
