"""Restarts of a real ``kloros-stream run`` re-announce nothing (the contract's restart rule).

A gap announced before a restart and still open is not published again: its question keeps
``occurrences`` 1 and gets no new feed line, however often the service restarts.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.service import ServiceProcess, write_config

pytestmark = pytest.mark.e2e

WATCHED = {
    ("unindexed_doc", "readme.md"),
    ("missing_tool", "kloros-e2e-absent-tool"),
    ("missing_library", "kloros_e2e_absent_lib"),
}
MONITORS = ("capability_discovery", "knowledge_discovery")


def _feed_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _key(q: dict[str, Any]) -> tuple[str, str]:
    return q["metadata"]["gap_type"], q["metadata"]["gap_name"]


def _open(qs: list[dict[str, Any]], wanted: set[tuple[str, str]]) -> bool:
    return wanted <= {_key(q) for q in qs if q["status"] != "resolved"}


def _live_questions(svc: ServiceProcess) -> dict[tuple[str, str], dict[str, Any]]:
    status, body = svc.get("/questions?" + urllib.parse.urlencode({"status": "all"}))
    assert status == 200
    return {_key(q): q for q in json.loads(body)}


def test_restarts_reannounce_nothing(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("# KLoROS\nHow the voice loop works.\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "job.py").write_text("import kloros_e2e_absent_lib\n")
    cfg = write_config(
        tmp_path,
        {
            "monitors": {
                "integration": {"enabled": False, "roots": ["src"]},
                "capability_discovery": {"required_executables": ["kloros-e2e-absent-tool"]},
                "knowledge_discovery": {
                    "docs_dirs": ["docs"],
                    "index_file": "var/knowledge_index.json",
                },
            }
        },
    )
    env = {"PATH": os.environ["PATH"]}
    with ServiceProcess(cfg, env=env) as svc:
        svc.wait_feed(lambda qs: _open(qs, WATCHED))
        svc.wait_scanned(*MONITORS)
    feed = svc.feed_path
    lines_before = Counter(q["id"] for q in _feed_lines(feed))
    watched_ids = {q["id"] for q in _feed_lines(feed) if _key(q) in WATCHED}
    assert len(watched_ids) == len(WATCHED)

    for restart in (1, 2):
        with ServiceProcess(cfg, env=env) as svc:
            svc.wait_scanned(*MONITORS)
            # a new gap after both initial scans: once its question is in the feed, every
            # signal the restart published before it has been through the core
            barrier = f"barrier{restart}.md"
            (tmp_path / "docs" / barrier).write_text(f"# Barrier {restart}\n")
            svc.wait_feed(lambda qs, b=barrier: _open(qs, {("unindexed_doc", b)}))
            live = _live_questions(svc)
            assert {k: live[k]["metadata"]["occurrences"] for k in WATCHED} == {
                k: 1 for k in WATCHED
            }
        lines = _feed_lines(feed)
        assert Counter(q["id"] for q in lines if q["id"] in watched_ids) == Counter(
            {i: lines_before[i] for i in watched_ids}
        ), f"restart {restart} wrote new lines for questions that did not change"
        latest = {_key(q): q for q in lines}
        for key in WATCHED:
            assert latest[key]["metadata"]["occurrences"] == 1, key
            assert latest[key]["status"] == "ready", key
    # the barrier of the first restart was not announced again by the second
    assert latest[("unindexed_doc", "barrier1.md")]["metadata"]["occurrences"] == 1
