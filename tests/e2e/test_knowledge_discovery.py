"""The knowledge discovery monitor through a real ``kloros-stream run``: a document the index
does not cover is a question until the index covers it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.inputs import write_index
from tests.support.service import ServiceProcess, write_config


@pytest.mark.e2e
def test_e2e_doc_then_index(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    cfg = write_config(
        tmp_path,
        {
            "monitors": {
                "knowledge_discovery": {
                    "docs_dirs": ["docs"],
                    "index_file": "var/knowledge_index.json",
                }
            }
        },
    )
    with ServiceProcess(cfg) as svc:
        deadline = time.monotonic() + 15
        while "initial_scan_s" not in svc.health()["monitors"]["knowledge_discovery"].get(
            "details", {}
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = b"# Runbook\nRestart the bridge with systemctl.\n"
        (docs / "ops").mkdir()
        (docs / "ops" / "runbook.md").write_bytes(body)
        qs = svc.wait_feed(
            lambda qs: any(
                q["metadata"]["gap_name"] == "ops/runbook.md" and q["status"] != "resolved"
                for q in qs
            )
        )
        q = next(q for q in qs if q["metadata"]["gap_name"] == "ops/runbook.md")
        assert q["metadata"]["gap_type"] == "unindexed_doc"
        write_index(tmp_path / "var" / "knowledge_index.json", {"ops/runbook.md": body})
        svc.wait_feed(
            lambda qs: any(
                q["metadata"]["gap_name"] == "ops/runbook.md" and q["status"] == "resolved"
                for q in qs
            )
        )
