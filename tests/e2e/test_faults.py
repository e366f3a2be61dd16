"""The faults of issue 11, each on a real ``kloros-stream run`` with real files.

1. hostile file names (undecodable bytes, a newline) survive logs, checkpoints and feed;
2. a chaos burst of more distinct failing scenarios than ``max_scenarios`` through a
   small bus: every one becomes a question, nothing is dropped;
3. kill -9 after an announcement, the file changed while down: reconciled at start-up;
4. a cut, torn or deleted feed: re-announced / resolved from the monitors' levels;
5. the restart breaker's half-open retries: ``tests/test_supervisor.py`` (scripted crashes);
7. HTTP: half-sent headers time out, HTTP/0.9 and bad parameters get 400;
8. bus counters and a drop repaired by reconciliation: ``tests/test_bus.py`` and
   ``tests/test_reconcile.py`` (in-process, a bus too small on purpose).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.service import ServiceProcess, write_config

pytestmark = pytest.mark.e2e

HOSTILE = [b"bad\xffname.py", b"new\nline.py"]


def _open(qs: list[dict[str, Any]], gap_type: str) -> set[str]:
    return {q["metadata"]["gap_name"] for q in qs
            if q["metadata"]["gap_type"] == gap_type and q["status"] != "resolved"}


def _chaos_lines(path: Path, entries: list[tuple[str, bool]]) -> None:
    with path.open("a") as fh:
        for scenario, healed in entries:
            fh.write(json.dumps({"scenario": scenario, "healed": healed}) + "\n")


# -- 1. names that are not UTF-8 --------------------------------------------------------------
def test_hostile_file_names_survive_logs_checkpoints_and_the_feed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"broken{i}.py").write_text("def f(:\n")
    for raw in HOSTILE:
        with open(os.path.join(os.fsencode(src), raw), "w") as fh:
            fh.write("def g(:\n")
    path = write_config(tmp_path, {"monitors": {
        "integration": {"roots": ["src"]}, "module_discovery": {"roots": ["src"]},
        "capability_discovery": {"scan_imports": True}}})
    # The names as published: each undecodable byte shown as a visible escape.
    expected = {f"broken{i}.py" for i in range(5)} | {"bad\\xffname.py", "new\nline.py"}
    with ServiceProcess(path) as svc:
        qs = svc.wait_feed(lambda qs: _open(qs, "syntax_error") == expected, timeout=30)
        health = svc.health()
        assert health["status"] == "ok", health
        assert all(m["state"] in ("running", "disabled") for m in health["monitors"].values())
        assert health["consumer"]["errors"] == 0
        # an edit after start: the live path copes too
        with open(os.path.join(os.fsencode(src), b"late\xfe.py"), "w") as fh:
            fh.write("x = (\n")
        svc.wait_feed(lambda qs: "late\\xfe.py" in _open(qs, "syntax_error"), timeout=20)
        time.sleep(2.5)  # the debounced checkpoints are written
    state = tmp_path / "var" / "state"
    for monitor in ("integration", "module_discovery"):
        assert any((state / monitor).iterdir()), f"{monitor} saved no checkpoint"
    with ServiceProcess(path) as svc:  # a restart re-reads them: nothing new, nothing lost
        svc.wait_log(lambda e: e.get("event") == "reconciled_clean"
                     and e.get("monitor") == "integration", timeout=30)
        qs = list(svc.questions().values())
        assert _open(qs, "syntax_error") == expected | {"late\\xfe.py"}
        assert all(q["metadata"]["occurrences"] == 1 for q in qs)


# -- 2. chaos bursts ---------------------------------------------------------------------------
def test_a_chaos_burst_past_max_scenarios_through_a_small_bus_loses_nothing(
        tmp_path: Path) -> None:
    path = write_config(tmp_path, {"bus": {"maxsize": 100}, "monitors": {"chaos": {
        "history_file": "var/chaos.jsonl", "max_scenarios": 50}}})
    history = tmp_path / "var" / "chaos.jsonl"
    history.parent.mkdir(parents=True)
    # 1,500 distinct failing scenarios, each failing twice (repeats coalesce), and healthy
    # ones between them that crowd the bounded statistics
    entries = [(f"fail-{i}", False) for i in range(1500)] * 2
    entries += [(f"ok-{i}", True) for i in range(3000)]
    _chaos_lines(history, entries)
    with ServiceProcess(path) as svc:
        svc.wait_feed(lambda qs: len(_open(qs, "healing_failure")) == 1500, timeout=60)
        health = svc.health()
        assert health["bus"]["dropped"] == 0
        assert health["monitors"]["chaos"]["details"]["open"] == 1500


# -- 3. kill -9 between publish and checkpoint ---------------------------------------------
def test_kill_9_after_announcing_then_changes_while_down_are_reconciled(
        tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("def f(:\n")
    (src / "b.py").write_text("x = 1\n")
    path = write_config(tmp_path, {"monitors": {"integration": {"roots": ["src"]}}})
    svc = ServiceProcess(path).start()
    svc.wait_feed(lambda qs: _open(qs, "syntax_error") == {"a.py"}, timeout=20)
    svc.kill()  # at once: integration saves what it announced only after a delay
    (src / "a.py").write_text("def f():\n    pass\n")  # fixed while down
    with ServiceProcess(path) as svc:
        svc.wait_feed(lambda qs: _open(qs, "syntax_error") == set()
                      and any(q["metadata"]["gap_name"] == "a.py" for q in qs), timeout=30)
        (src / "b.py").write_text("x = (\n")
        svc.wait_feed(lambda qs: _open(qs, "syntax_error") == {"b.py"}, timeout=20)
        (src / "b.py").write_text("x = 2\n")
        svc.wait_feed(lambda qs: _open(qs, "syntax_error") == set(), timeout=20)
        svc.kill()  # b.py's resolution announced, maybe not checkpointed
    (src / "b.py").write_text("x = (\n")  # broken again while down
    with ServiceProcess(path) as svc:
        svc.wait_feed(lambda qs: _open(qs, "syntax_error") == {"b.py"}, timeout=30)


# -- 4. a cut, torn or deleted feed -------------------------------------------------------------
@pytest.mark.parametrize("damage", ["cut", "torn_resolution", "deleted"])
def test_a_damaged_feed_is_repaired_from_the_monitors_levels(tmp_path: Path,
                                                              damage: str) -> None:
    path = write_config(tmp_path, {"monitors": {"chaos": {
        "history_file": "var/chaos.jsonl", "recovery_runs": 1, "recovery_rate": 1.0}}})
    history = tmp_path / "var" / "chaos.jsonl"
    history.parent.mkdir(parents=True)
    _chaos_lines(history, [(f"s{i}", False) for i in range(60)])
    with ServiceProcess(path) as svc:
        svc.wait_feed(lambda qs: len(_open(qs, "healing_failure")) == 60, timeout=30)
        _chaos_lines(history, [("s0", True)])  # s0 heals: its resolution is the last line
        svc.wait_feed(lambda qs: len(_open(qs, "healing_failure")) == 59, timeout=20)
    feed = svc.feed_path
    data = feed.read_bytes()
    if damage == "cut":
        feed.write_bytes(data[: len(data) // 2 + 7])  # half the questions, a torn tail
    elif damage == "torn_resolution":
        feed.write_bytes(data[:-20])  # the final resolved line loses its end
    else:
        feed.unlink()
        for index in feed.parent.glob(feed.name + "*"):
            index.unlink()  # and whatever sits beside it
    want = {f"s{i}" for i in range(1, 60)}
    with ServiceProcess(path) as svc:
        qs = svc.wait_feed(lambda qs: _open(qs, "healing_failure") == want, timeout=30)
        repaired = svc.wait_log(lambda e: e.get("event") in ("reconciled", "reconciled_clean")
                                and e.get("monitor") == "chaos", timeout=20)
        assert repaired["event"] == "reconciled"
        assert repaired["reannounced"] + repaired["resolved"] > 0
        assert len({q["id"] for q in qs}) == len(qs)


# -- 7. HTTP hardening ---------------------------------------------------------------------
def test_http_half_sent_headers_time_out_and_bad_requests_get_400(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"http": {"idle_timeout_s": 1.0}})
    with ServiceProcess(path) as svc:
        assert svc.port is not None
        held = []
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append(s)
        assert svc.get("/health")[0] == 200  # the service still answers meanwhile
        time.sleep(1.5)
        closed = 0
        for s in held:
            s.settimeout(10)
            try:
                closed += s.recv(1024) == b""
            except ConnectionResetError:
                closed += 1
            s.close()
        assert closed == 300
        s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        s.sendall(b"GET /health\r\n\r\n")  # HTTP/0.9
        reply = s.recv(4096)
        s.close()
        assert b" 400 " in reply.split(b"\r\n")[0], reply
        for query in ("top=-5", "top=x", "status=nope", "cursor=%%%"):
            assert svc.get(f"/questions?{query}")[0] == 400, query
