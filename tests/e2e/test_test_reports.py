"""The test monitor through a real ``kloros-stream run``: reports written while it is killed
or down are read once after the restart; a later pass resolves."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.support.inputs import json_report, write_atomic
from tests.support.service import (
    ServiceProcess,
    assert_no_duplicates,
    wait_file_contains,
    write_config,
)


@pytest.mark.e2e
def test_e2e_reports_kill9_then_restart(tmp_path: Path) -> None:
    results = tmp_path / "var" / "results"
    config = write_config(tmp_path, {"monitors": {"test": {"results_dir": "var/results"}}})
    svc = ServiceProcess(config).start()
    try:
        write_atomic(
            results / "run1.json",
            json_report(
                100,
                ("tests/test_broken.py",),
                tests_a__t1="failed",
                tests_a__t2="error",
                tests_a__t3="passed",
            ),
        )
        svc.wait_feed(lambda qs: len(qs) == 3)
        wait_file_contains(tmp_path / "var" / "state" / "test" / "reports.json", b"run1.json")
        # Reports keep arriving; the service dies without any chance to save.
        for i in range(20):
            write_atomic(
                results / "burst" / f"r{i:02d}.json",
                json_report(200 + i, **{f"tests_b__t{i:02d}": "failed"}),
            )
        svc.kill()
    finally:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.kill()
    write_atomic(results / "while_down.json", json_report(300, tests_c__t="failed"))
    with ServiceProcess(config) as svc2:
        qs = svc2.wait_feed(lambda qs: len(qs) == 3 + 20 + 1, timeout=30)
        assert all(q["metadata"]["gap_type"] == "test_failure" for q in qs)
        assert {"tests_a::t1", "tests_a::t2", "tests/test_broken.py", "tests_c::t"} <= {
            q["metadata"]["gap_name"] for q in qs
        }
        write_atomic(
            results / "run2.json",
            json_report(
                400,
                tests_a__t1="passed",
                tests_a__t2="passed",
                **{"tests/test_broken.py__x": "passed"},
            ),
        )
        svc2.wait_feed(lambda qs: sum(q["status"] == "resolved" for q in qs) == 3)
        status, body = svc2.get("/questions?status=all&top=1000")
        assert status == 200
        t1 = next(q for q in orjson.loads(body) if q["metadata"]["gap_name"] == "tests_a::t1")
        assert t1["metadata"]["occurrences"] == 1 and t1["status"] == "resolved"
    assert_no_duplicates(svc2.feed_path)
