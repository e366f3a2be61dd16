"""End to end through a real ``kloros-stream run`` subprocess: signals, shutdown within the
contract's 5 s, config errors, and kill -9 followed by a restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kloros_stream.feed import read_feed
from tests.support.service import (
    ServiceProcess,
    append_chaos,
    chaos_config,
    failure,
    questions_of,
    write_config,
)

pytestmark = pytest.mark.e2e

SHUTDOWN_LIMIT_S = 5.0
REPO = Path(__file__).resolve().parents[2]


def stop_timed(proc: ServiceProcess, sig: int) -> tuple[int, float]:
    started = time.monotonic()
    code = proc.stop(sig, timeout=30)
    return code, time.monotonic() - started


def feed_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_within_the_contract(tmp_path: Path, sig: int) -> None:
    proc = ServiceProcess(write_config(tmp_path)).start()
    assert proc.health()["status"] == "ok"
    code, elapsed = stop_timed(proc, sig)
    assert code == 0
    assert elapsed < SHUTDOWN_LIMIT_S
    events = [e["event"] for e in proc.logs]
    assert events.index("service_stopping") < events.index("service_stopped")
    # Logs are JSON lines on stdout when it is not a terminal: nothing else is printed.
    assert all(line.startswith("{") for line in proc.raw_output if line.strip()), \
        proc.raw_output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_a_busy_monitor_drains_into_the_feed(tmp_path: Path, sig: int) -> None:
    pytest.importorskip("kloros_stream.monitors.chaos")
    append_chaos(tmp_path, *(failure(f"scenario-{i}") for i in range(20)))
    proc = ServiceProcess(chaos_config(tmp_path)).start()
    proc.wait_feed(lambda qs: len(questions_of(qs, "healing_failure")) == 20)
    append_chaos(tmp_path, *(failure(f"late-{i}") for i in range(50)))
    code, elapsed = stop_timed(proc, sig)
    assert code == 0
    assert elapsed < SHUTDOWN_LIMIT_S
    stopped = proc.wait_log(lambda e: e.get("event") == "service_stopped", timeout=1)
    assert stopped["dropped"] == 0
    view = read_feed(proc.feed_path)
    assert view.torn_bytes == 0
    assert len(view.questions) == stopped["questions"] >= 20  # everything taken was written


def test_config_error_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[http]\nport = 99999\n[monitors.chaos]\nenabeld = true\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kloros_stream", "run", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "http.port" in proc.stderr
    assert "monitors.chaos.enabeld" in proc.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kloros_stream", "run", "--config", str(tmp_path / "no.toml")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "no.toml" in proc.stderr


def test_health_and_metrics_of_the_real_process(tmp_path: Path) -> None:
    pytest.importorskip("kloros_stream.monitors.chaos")
    append_chaos(tmp_path, failure("disk_full"))
    with ServiceProcess(chaos_config(tmp_path)) as proc:
        proc.wait_feed(lambda qs: len(qs) == 1)
        health = proc.health()
        assert health["status"] == "ok"
        assert health["monitors"]["chaos"]["state"] == "running"
        assert health["monitors"]["exception"]["state"] == "disabled"
        assert set(health["monitors"]) == {
            "exception", "integration", "chaos", "test", "module_discovery",
            "capability_discovery", "exploration", "metric_quality", "knowledge_discovery"}
        status, body = proc.get("/metrics")
        assert status == 200
        text = body.decode()
        assert 'kloros_stream_signals_total{monitor="chaos"} 1.0' in text
        assert "kloros_stream_gap_latency_seconds_count 1.0" in text
        assert "process_resident_memory_bytes" in text
        status, body = proc.get("/questions?top=5")
        assert [q["metadata"]["gap_name"] for q in json.loads(body)] == ["disk_full"]


def test_resolution_reaches_the_feed(tmp_path: Path) -> None:
    pytest.importorskip("kloros_stream.monitors.chaos")
    append_chaos(tmp_path, failure("net_split"))
    cfg = chaos_config(tmp_path, recovery_runs=2, recovery_rate=1.0)
    with ServiceProcess(cfg) as proc:
        [q] = proc.wait_feed(lambda qs: len(qs) == 1)
        assert q["status"] == "ready"
        append_chaos(tmp_path, *({"scenario": "net_split", "healed": True},) * 2)
        [q] = proc.wait_feed(lambda qs: qs[0]["status"] == "resolved")
        assert q["metadata"]["gap_name"] == "net_split"
        assert proc.get("/questions")[1] == b"[]"


def test_kill_9_then_restart_neither_duplicates_nor_loses(tmp_path: Path) -> None:
    pytest.importorskip("kloros_stream.monitors.chaos")
    cfg = chaos_config(tmp_path)
    append_chaos(tmp_path, *(failure(f"s{i}") for i in range(10)))
    proc = ServiceProcess(cfg).start()
    before = proc.wait_feed(lambda qs: len(qs) == 10)
    append_chaos(tmp_path, *(failure(f"s{i}", "again") for i in range(5)))
    proc.kill()
    with proc.feed_path.open("ab") as fh:  # as if the crash had cut a write short
        fh.write(b'{"id": "healing_failure-0000", "hypothesis": "HEAL')

    proc.start()
    append_chaos(tmp_path, *(failure(f"new{i}") for i in range(3)))
    after = proc.wait_feed(lambda qs: len(qs) == 13)
    code = proc.stop(signal.SIGTERM, timeout=30)
    assert code == 0

    recovered = proc.wait_log(lambda e: e.get("event") == "feed_recovered", timeout=1)
    assert recovered["torn_bytes"] > 0
    view = read_feed(proc.feed_path)
    assert view.torn_bytes == 0 and view.invalid == 0
    ids_before = {q["id"] for q in before}
    assert ids_before <= set(view.questions)  # none lost
    assert len(view.questions) == len(after) == 13
    names = sorted(q["metadata"]["gap_name"] for q in view.questions.values())
    assert names == sorted([f"s{i}" for i in range(10)] + [f"new{i}" for i in range(3)])
    # No question was created twice: every line of an id carries its first created_at.
    created: dict[str, set[str]] = {}
    for line in feed_lines(proc.feed_path):
        created.setdefault(line["id"], set()).add(line["created_at"])
    assert all(len(stamps) == 1 for stamps in created.values()), created
    for q in before:
        assert view.questions[q["id"]]["created_at"] == q["created_at"]


def test_a_monitor_blocked_in_a_thread_does_not_hold_the_exit(tmp_path: Path) -> None:
    """The contract's 5 s hold even while a monitor's blocking scan runs in a worker
    thread (capability_discovery and integration scan in threads)."""
    cfg = write_config(tmp_path, {"monitors": {"chaos": {}}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.scripted", "run", "--config", str(cfg)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:  # the thread is blocked once the service is ready
            if b'"service_ready"' in raw:
                break
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)  # drains the log pipe so it cannot block the exit
        code = proc.returncode
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
    assert elapsed < SHUTDOWN_LIMIT_S


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kloros_stream", "run", "--config", str(config)],
        cwd=config.parent, capture_output=True, text=True, timeout=30,
    )


def test_a_port_in_use_exits_2_naming_http_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = write_config(tmp_path, {"http": {"port": taken.getsockname()[1]}})
        done = _run(cfg)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "http.port" in done.stderr


@pytest.mark.parametrize(("section", "key", "value"), [
    ("feed", "path", "blocker/feed.jsonl"),
    ("service", "state_dir", "blocker/state"),
])
def test_an_unusable_path_exits_2_naming_its_key(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    (tmp_path / "blocker").write_text("a file, not a directory")
    cfg = write_config(tmp_path, {section: {key: value}})
    done = _run(cfg)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{section}.{key}" in done.stderr


def test_sigterm_during_start_up_still_exits_0(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"monitors": {"chaos": {}}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "kloros_stream", "run", "--config", str(cfg)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen = []
    for raw in proc.stdout:  # the config is loaded: the service is still starting
        seen.append(raw)
        if b'"service_starting"' in raw:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=15)
    output = (b"".join(seen) + rest).decode(errors="replace")
    assert proc.returncode == 0, f"exit {proc.returncode}; the service said:\n{output}"
