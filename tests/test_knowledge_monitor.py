"""knowledge_discovery on real directories with real inotify (in-process, list publisher)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from kloros_stream.monitors.knowledge_discovery import KnowledgeDiscoveryMonitor
from tests.support.fakes import ListPublisher, make_monitor, running
from tests.support.inputs import write_index

DAY = 86_400.0


def _monitor(
    tmp_path: Path, one_shot: bool = False, **section: object
) -> tuple[KnowledgeDiscoveryMonitor, ListPublisher]:
    data = {
        "monitors": {
            "integration": {"enabled": False, "roots": ["src"]},
            "knowledge_discovery": {
                "docs_dirs": ["docs"],
                "index_file": "var/index.json",
                **section,
            },
        }
    }
    return make_monitor(KnowledgeDiscoveryMonitor, tmp_path, data, one_shot=one_shot)


async def _names(pub: ListPublisher, gap_type: str, names: set[str]) -> None:
    await pub.wait_for(lambda _: set(pub.open_gaps(gap_type)) == names, timeout=10)


async def test_unindexed_until_the_index_covers_it(tmp_path: Path) -> None:
    docs, index = tmp_path / "docs", tmp_path / "var" / "index.json"
    (docs / "guide").mkdir(parents=True)
    old = b"# Old\nalready indexed\n"
    (docs / "old.md").write_bytes(old)
    write_index(index, {"old.md": old})
    monitor, pub = _monitor(tmp_path)
    async with running(monitor):
        await pub.wait_for(lambda _: monitor.ctx.status.details.get("docs") == 1)
        assert pub.signals == []
        new = b"Install guide\n"
        (docs / "guide" / "install.rst").write_bytes(new)
        (docs / "guide" / "image.png").write_bytes(b"\x89PNG")  # not a document
        await _names(pub, "unindexed_doc", {"guide/install.rst"})
        gap = pub.open_gaps("unindexed_doc")["guide/install.rst"]
        assert gap.facts["status"] == "new"
        assert gap.facts["path"] == str(docs / "guide" / "install.rst")
        write_index(index, {"old.md": old, "guide/install.rst": new})  # atomic rename
        await _names(pub, "unindexed_doc", set())
        (docs / "old.md").write_bytes(b"# Old\nedited\n")
        await _names(pub, "unindexed_doc", {"old.md"})
        assert pub.open_gaps("unindexed_doc")["old.md"].facts["status"] == "changed"
        write_index(
            index, {"old.md": b"# Old\nedited\n", "guide/install.rst": new}, atomic=False
        )  # written in place: read at close
        await _names(pub, "unindexed_doc", set())
        index.write_text('{"documents": {"old.md": "tru')  # invalid: last index kept
        await pub.wait_for(lambda _: monitor.ctx.status.details.get("index_error"))
        (docs / "notes.txt").write_text("a note\n")
        await _names(pub, "unindexed_doc", {"notes.txt"})
        (docs / "notes.txt").unlink()
        await _names(pub, "unindexed_doc", set())
        index.unlink()  # no index at all: everything is unindexed
        await _names(pub, "unindexed_doc", {"old.md", "guide/install.rst"})
    assert not any(s.gap_name.endswith(".png") for s in pub.signals)


async def test_one_shot_and_missing_index(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a\n")
    (tmp_path / "docs" / ".a.md.swp").write_text("editor junk\n")
    monitor, pub = _monitor(tmp_path, one_shot=True)
    await asyncio.wait_for(monitor.run(), 10)
    assert [(s.gap_type, s.gap_name) for s in pub.signals] == [("unindexed_doc", "a.md")]


async def test_invalid_index_at_start_judges_nothing(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a\n")
    index = tmp_path / "var" / "index.json"
    index.parent.mkdir()
    index.write_text("[1, 2]")
    monitor, pub = _monitor(tmp_path)
    async with running(monitor):
        await pub.wait_for(lambda _: monitor.ctx.status.details.get("docs") == 1)
        assert "top level must be an object" in monitor.ctx.status.details["index_error"]
        assert pub.signals == []
        write_index(index, {"b.md": b"b"})
        await _names(pub, "unindexed_doc", {"a.md"})
        assert monitor.ctx.status.details["index_error"] is None


async def test_stale_when_named_code_changes_after_an_old_doc(tmp_path: Path) -> None:
    docs, src = tmp_path / "docs", tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    docs.mkdir()
    code = src / "pkg" / "engine.py"
    code.write_text("x = 1\n")
    (src / "pkg" / "other.py").write_text("y = 1\n")
    doc = docs / "engine.md"
    body = b"How `pkg/engine.py` works; see also pkg.other.helper.\n"
    doc.write_bytes(body)
    write_index(tmp_path / "var" / "index.json", {"engine.md": body})
    now = time.time()
    os.utime(doc, (now - 200 * DAY, now - 200 * DAY))
    os.utime(code, (now - 300 * DAY, now - 300 * DAY))
    os.utime(src / "pkg" / "other.py", (now - 300 * DAY, now - 300 * DAY))
    monitor, pub = _monitor(tmp_path, stale_after_days=180)
    async with running(monitor):
        await pub.wait_for(lambda _: monitor.ctx.status.details.get("code_files") == 2)
        assert pub.signals == []  # old doc, but the code is older still
        code.write_text("x = 2\n")
        await _names(pub, "stale_doc", {"engine.md"})
        gap = pub.open_gaps("stale_doc")["engine.md"]
        assert gap.facts["changed_code"] == [f"{src}/pkg/engine.py"]
        assert gap.facts["stale_after_days"] == 180
        (src / "pkg" / "other.py").write_text("y = 2\n")  # named as a dotted module
        await pub.wait_for(
            lambda _: (
                len(pub.open_gaps("stale_doc").get("engine.md", gap).facts["changed_code"]) == 2
            )
        )
        code.unlink()
        (src / "pkg" / "other.py").unlink()
        await _names(pub, "stale_doc", set())


async def test_stale_timer_fires_without_events(tmp_path: Path) -> None:
    docs, src = tmp_path / "docs", tmp_path / "src"
    docs.mkdir()
    src.mkdir()
    doc = docs / "a.md"
    doc.write_text("See mod.py\n")
    (src / "mod.py").write_text("z = 1\n")
    now = time.time()
    os.utime(doc, (now - 10, now - 10))
    os.utime(src / "mod.py", (now - 5, now - 5))
    # the doc is 10 s old; it becomes stale once it is 11 s old: a timer, not an event
    monitor, pub = _monitor(tmp_path, stale_after_days=11 / DAY)
    async with running(monitor):
        await _names(pub, "stale_doc", {"a.md"})
    assert monitor.next_stale_due() is None

