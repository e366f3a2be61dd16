"""`[feed] kloros_path` through a running service, read back with KLoROS's own readers
(tests/support/kloros.py, from KLoROS commit 09c094d7fe5c4f60ee9aacde57f8093c491c1789)."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.support import kloros as theirs
from tests.support.scripted import (
    Script,
    gap,
    resolution,
    running_service,
    service_config,
    wait_until,
)


def count(path: Path) -> int:
    return orjson.loads(path.read_bytes())["count"] if path.exists() else -1


async def test_kloros_feed_file_is_read_unchanged_by_kloros(tmp_path: Path) -> None:
    cfg = service_config(tmp_path, {"feed": {"kloros_path": "kloros/curiosity_feed.json"}})
    path = cfg.feed.kloros_path
    assert path is not None
    script = Script(gaps=[gap("orphaned_queue", "jobs", producers=["a.py"]),
                          gap("missing_tool", "jq"), gap("unknown_kind", "thing")])
    async with running_service(cfg, {"test": script}) as svc:
        await wait_until(lambda: count(path) == 3, what="three open questions in the file")
        script.push(resolution("missing_tool", "jq"))
        await wait_until(lambda: count(path) == 2, what="the resolved question leaves")
        ids = {q.metadata["gap_name"]: q.id for q in svc.core.questions.values()}
    loaded = theirs.load_questions(path)
    assert {q.id for q in loaded} == {ids["jobs"], ids["thing"]}
    assert all(q.status is theirs.QuestionStatus.READY for q in loaded)
    assert all(q.evidence_hash for q in loaded)  # KLoROS's cleanup drops null hashes
    seen = theirs.process_feed(path)
    assert [i["question_id"] for i in seen["intents"]] == [ids["jobs"]]
    assert seen["low_value"] == [ids["thing"]]
    assert sorted(p.name for p in path.parent.iterdir()) == ["curiosity_feed.json"]


async def test_the_file_is_written_at_start_from_the_recovered_feed(tmp_path: Path) -> None:
    cfg = service_config(tmp_path)
    async with running_service(cfg, {"test": Script(gaps=[gap("missing_tool", "jq")])}) as svc:
        await wait_until(lambda: svc.feed.lines_written == 1, what="one question")
    cfg = service_config(tmp_path, {"feed": {"kloros_path": "kloros/curiosity_feed.json"}})
    path = cfg.feed.kloros_path
    assert path is not None
    async with running_service(cfg, {"test": Script()}):
        assert count(path) == 1  # before any new signal
    loaded = theirs.load_questions(path)
    assert [q.capability_key for q in loaded] == ["tool.jq"]
