"""The chaos monitor through a real ``kloros-stream run``: kill -9 mid-stream, then a restart
counts no history entry twice and re-announces nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest

from tests.support.inputs import append_jsonl, chaos_entry
from tests.support.service import (
    ServiceProcess,
    assert_no_duplicates,
    wait_file_contains,
    write_config,
)


@pytest.mark.e2e
def test_e2e_chaos_kill9_mid_stream_then_restart(tmp_path: Path) -> None:
    history = tmp_path / "var" / "chaos.jsonl"
    history.parent.mkdir()
    config = write_config(
        tmp_path,
        {
            "monitors": {
                "chaos": {
                    "history_file": "var/chaos.jsonl",
                    "recovery_runs": 2,
                    "recovery_rate": 1.0,
                }
            }
        },
    )
    total = 150

    def writer() -> None:
        for i in range(total):
            append_jsonl(history, chaos_entry(f"burst{i:03d}", False, f"error {i}"))
            time.sleep(0.002)

    svc = ServiceProcess(config).start()
    thread = threading.Thread(target=writer)
    try:
        append_jsonl(history, chaos_entry("db_failover", False, "replica lagging"))
        svc.wait_feed(lambda qs: any(q["metadata"]["gap_name"] == "db_failover" for q in qs))
        wait_file_contains(tmp_path / "var" / "state" / "chaos" / "stats.json", b"db_failover")
        thread.start()
        svc.wait_feed(lambda qs: len(qs) >= 20)
        svc.kill()  # mid-stream: the writer keeps appending while the service is down
    finally:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.kill()
    with ServiceProcess(config) as svc2:
        thread.join(timeout=30)
        qs = svc2.wait_feed(lambda qs: len(qs) == total + 1, timeout=30)
        assert {q["metadata"]["gap_name"] for q in qs} == {"db_failover"} | {
            f"burst{i:03d}" for i in range(total)
        }
        assert all(q["metadata"]["gap_type"] == "healing_failure" for q in qs)
        # Exactly-once statistics: the replay after kill -9 counted no entry twice.
        assert all(q["metadata"]["facts"]["total"] == 1 for q in qs), [
            (q["metadata"]["gap_name"], q["metadata"]["facts"]["total"])
            for q in qs
            if q["metadata"]["facts"]["total"] != 1
        ]
        append_jsonl(history, chaos_entry("db_failover", True), chaos_entry("db_failover", True))
        svc2.wait_feed(
            lambda qs: any(
                q["metadata"]["gap_name"] == "db_failover" and q["status"] == "resolved" for q in qs
            )
        )
        status, body = svc2.get("/questions?status=all&top=1000")
        assert status == 200
        db = next(q for q in orjson.loads(body) if q["metadata"]["gap_name"] == "db_failover")
        assert db["metadata"]["occurrences"] == 1  # not re-announced by either restart
        assert "heals again" in db["metadata"]["resolution"]
    assert_no_duplicates(svc2.feed_path)
