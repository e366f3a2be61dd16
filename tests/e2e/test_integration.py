"""integration (with module_discovery) through a real ``kloros-stream run``: questions in
the feed, resolutions, restarts and kill -9 repeat nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.service import ServiceProcess, write_config

PRODUCER = "class Worker:\n    def feed(self, x):\n        self.pending.append(x)\n"
CONSUMER = "def drain(worker):\n    return worker.pending.popleft()\n"
CHANNEL = "pkg.worker.Worker.pending"


def _open(qs: list[dict[str, Any]], gap_type: str, gap_name: str) -> bool:
    return any(
        q["metadata"]["gap_type"] == gap_type
        and q["metadata"]["gap_name"] == gap_name
        and q["status"] != "resolved"
        for q in qs
    )


def _resolved(qs: list[dict[str, Any]], gap_type: str, gap_name: str) -> bool:
    return any(
        q["metadata"]["gap_type"] == gap_type
        and q["metadata"]["gap_name"] == gap_name
        and q["status"] == "resolved"
        for q in qs
    )


def _feed_ids(svc: ServiceProcess) -> list[str]:
    return [json.loads(line)["id"] for line in svc.feed_path.read_text().splitlines() if line]


@pytest.mark.e2e
def test_e2e_orphan_consumer_syntax_error_new_module_and_restart(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "worker.py").write_text(PRODUCER)
    cfg = write_config(
        tmp_path,
        {"monitors": {"integration": {"roots": ["src"]}, "module_discovery": {"roots": ["src"]}}},
    )
    svc = ServiceProcess(cfg)
    with svc:
        qs = svc.wait_feed(lambda qs: _open(qs, "orphaned_queue", CHANNEL))
        question = next(q for q in qs if q["metadata"]["gap_name"] == CHANNEL)
        assert question["metadata"]["monitor"] == "integration"
        assert "pkg.worker:Worker.feed" in " ".join(question["evidence"])

        (pkg / "consumer.py").write_text(CONSUMER)
        svc.wait_feed(lambda qs: _resolved(qs, "orphaned_queue", CHANNEL))
        # consumer.py is also a module that appeared after the start.
        svc.wait_feed(lambda qs: _open(qs, "new_module", "pkg.consumer"))

        (pkg / "bad.py").write_text("def oops(:\n")
        svc.wait_feed(lambda qs: _open(qs, "syntax_error", "pkg/bad.py"))
        (pkg / "bad.py").write_text("def oops():\n    pass\n")
        svc.wait_feed(lambda qs: _resolved(qs, "syntax_error", "pkg/bad.py"))
        svc.wait_scanned("integration", "module_discovery")
        assert svc.stop() == 0

    before = _feed_ids(svc)
    with svc:
        svc.wait_scanned("integration", "module_discovery")
        (pkg / "later.py").write_text('emit("AFTER_RESTART")\n')
        svc.wait_feed(
            lambda qs: (
                _open(qs, "orphaned_queue", "AFTER_RESTART")
                and _open(qs, "new_module", "pkg.later")
            )
        )
        after = _feed_ids(svc)
    assert after[: len(before)] == before
    new_ids = after[len(before) :]
    assert new_ids, "the barrier's questions were written"
    assert not set(new_ids) & set(before), "an existing question was re-announced"


@pytest.mark.e2e
def test_e2e_kill_9_then_restart_repeats_nothing(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "worker.py").write_text(PRODUCER)
    (pkg / "bad.py").write_text("def oops(:\n")
    svc = ServiceProcess(write_config(tmp_path, {"monitors": {"integration": {"roots": ["src"]}}}))
    with svc:
        svc.wait_feed(
            lambda qs: (
                _open(qs, "orphaned_queue", CHANNEL) and _open(qs, "syntax_error", "pkg/bad.py")
            )
        )
        (pkg / "consumer.py").write_text(CONSUMER)
        svc.wait_feed(lambda qs: _resolved(qs, "orphaned_queue", CHANNEL))
        svc.kill()
    before = _feed_ids(svc)
    with svc:
        svc.wait_scanned("integration")
        (pkg / "later.py").write_text('emit("AFTER_KILL")\n')
        qs = svc.wait_feed(lambda qs: _open(qs, "orphaned_queue", "AFTER_KILL"))
        after = _feed_ids(svc)
    assert _resolved(qs, "orphaned_queue", CHANNEL)
    assert _open(qs, "syntax_error", "pkg/bad.py")
    assert not set(after[len(before) :]) & set(before)


def _metric(svc: ServiceProcess, name: str) -> float:
    status, body = svc.get("/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.e2e
def test_e2e_four_monitors_parse_each_file_once(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / "pkg"
    pkg.mkdir(parents=True)
    for i in range(10):
        (pkg / f"m{i}.py").write_text(f"import os\nVALUE = {i}\n")
    (pkg / "worker.py").write_text(PRODUCER)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("See `pkg.worker`.\n")
    monitors = ("integration", "module_discovery", "capability_discovery", "knowledge_discovery")
    cfg = write_config(tmp_path, {"monitors": {
        "integration": {"roots": ["src"]}, "module_discovery": {"roots": ["src"]},
        "capability_discovery": {}, "knowledge_discovery": {"docs_dirs": ["docs"]},
    }})
    svc = ServiceProcess(cfg)
    with svc:
        svc.wait_feed(lambda qs: _open(qs, "orphaned_queue", CHANNEL))
        svc.wait_scanned(*monitors)
        assert _metric(svc, "kloros_stream_files_parsed_total") == 11
        (pkg / "consumer.py").write_text(CONSUMER)
        svc.wait_feed(lambda qs: _resolved(qs, "orphaned_queue", CHANNEL)
                      and _open(qs, "new_module", "pkg.consumer"))
        assert _metric(svc, "kloros_stream_files_parsed_total") == 12
        assert _metric(svc, 'kloros_stream_source_size{source="index",what="watched_dirs"}') == 2
        assert svc.stop() == 0
    with svc:  # warm restart: nothing changed, nothing parsed
        svc.wait_scanned(*monitors)
        assert _metric(svc, "kloros_stream_files_parsed_total") == 0
