"""The question store over a real feed and a real SQLite index: start-up from the index
(only newer lines read), rebuilds of a missing, torn, foreign or stale index, compaction by
garbage with appends during the rewrite, retention to the archive, ranked pages."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import orjson
import pytest

from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.core.store import Selection, decode_cursor, encode_cursor
from kloros_stream.feed import QuestionFeed, read_feed
from kloros_stream.models import CuriosityQuestion
from kloros_stream.store import FeedStore
from kloros_stream.store import store as store_module
from kloros_stream.store.files import archive_path, index_generations
from tests.support.questions import T0, sig

DAY = 86400.0


def opened(path: Path, *, compact_bytes: int = 1 << 30, retention_s: float | None = 30 * DAY,
           now: float = T0) -> tuple[FeedStore, CuriosityCore]:
    store = FeedStore(QuestionFeed(path, compact_bytes=compact_bytes), retention_s=retention_s)
    store.open(now)
    core = CuriosityCore(store=store)
    core.recovered(now)
    return store, core


def ask(store: FeedStore, core: CuriosityCore, *names: str, at: float = T0,
        **kw: object) -> None:
    for name in names:
        core.handle(sig(name, at=at, **kw), at)  # type: ignore[arg-type]
    store.flush()
    store.commit()


def feed_view(path: Path) -> dict[str, dict[str, object]]:
    return read_feed(path).questions


def store_view(core: CuriosityCore) -> dict[str, dict[str, object]]:
    return {q.id: q.model_dump(mode="json") for q in core.ranked(include_resolved=True)}


def test_a_restart_reads_no_history(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    store, core = opened(path)
    ask(store, core, *(f"t::{i}" for i in range(50)))
    ask(store, core, "t::7", error="changed", at=T0 + 1)
    store.close()
    again = FeedStore(QuestionFeed(path, compact_bytes=1 << 30))
    recovery = again.open(T0)
    assert (recovery.rebuilt, recovery.lines_read, recovery.questions) == (None, 0, 50)
    core = CuriosityCore(store=again)
    assert store_view(core) == feed_view(path)
    again.close()


def test_only_the_unindexed_tail_is_read(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    store, core = opened(path)
    ask(store, core, "t::a", "t::b")
    store.close()
    line = orjson.dumps(CuriosityCore().handle(sig("t::c"), T0).model_dump(mode="json"))  # type: ignore[union-attr]
    with path.open("ab") as fh:
        fh.write(line + b"\n")
    store = FeedStore(QuestionFeed(path, compact_bytes=1 << 30))
    recovery = store.open(T0)
    assert (recovery.rebuilt, recovery.lines_read, recovery.questions) == (None, 1, 3)
    store.close()


def _drop_index(path: Path) -> None:
    for _, p in index_generations(path):
        p.unlink()


def _tear_index(path: Path) -> None:
    [(_, p)] = index_generations(path)
    p.write_bytes(p.read_bytes()[:1000])


def _garble_index(path: Path) -> None:
    [(_, p)] = index_generations(path)
    p.write_bytes(b"this is not a database" * 100)


def _replace_feed(path: Path) -> None:
    """Another file with the same content (a restore from backup): the inode differs."""
    copy = path.with_name("copy.jsonl")
    copy.write_bytes(path.read_bytes())
    copy.replace(path)


def _shorten_feed(path: Path) -> None:
    """Lost writes (power loss): the feed is shorter than the index says."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))


def _rewrite_tail(path: Path) -> None:
    """Same file, same size, other bytes before the indexed position."""
    data = bytearray(path.read_bytes())
    i = data.rfind(b'"hypothesis":"') + len(b'"hypothesis":"')
    data[i] = ord("X")
    with path.open("r+b") as fh:
        fh.write(bytes(data))


@pytest.mark.parametrize("damage", [_drop_index, _tear_index, _garble_index, _replace_feed,
                                    _shorten_feed, _rewrite_tail])
def test_a_missing_torn_or_stale_index_is_rebuilt_from_the_feed(tmp_path: Path,
                                                                damage: object) -> None:
    path = tmp_path / "feed.jsonl"
    store, core = opened(path)
    ask(store, core, *(f"t::{i}" for i in range(30)))
    ask(store, core, "t::3", error="changed", at=T0 + 1)
    store.close()
    damage(path)  # type: ignore[operator]
    store = FeedStore(QuestionFeed(path, compact_bytes=1 << 30))
    recovery = store.open(T0)
    assert recovery.rebuilt
    core = CuriosityCore(store=store)
    assert store_view(core) == feed_view(path)
    assert len(index_generations(path)) == 1  # the rejected index is gone
    store.close()


def test_new_questions_never_trigger_compaction_superseded_lines_do(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    store, core = opened(path, compact_bytes=4096)
    ask(store, core, *(f"t::{i}" for i in range(40)))
    assert path.stat().st_size > 4096
    assert store.garbage_bytes == 0 and not store.needs_compaction
    for round_ in range(3):  # every line superseded three times: garbage 3/4 of the file
        ask(store, core, *(f"t::{i}" for i in range(40)), error=f"round {round_}")
    assert store.needs_compaction


async def test_compaction_keeps_what_was_appended_during_the_rewrite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "feed.jsonl"
    store, core = opened(path, compact_bytes=4096)
    ask(store, core, *(f"t::{i}" for i in range(20)))
    ask(store, core, *(f"t::{i}" for i in range(20)), error="again")
    rewritten, appended = threading.Event(), threading.Event()
    real = store_module.rewrite

    def slow_rewrite(*args: object) -> object:
        out = real(*args)  # type: ignore[arg-type]
        rewritten.set()
        assert appended.wait(10)
        return out

    monkeypatch.setattr(store_module, "rewrite", slow_rewrite)
    task = asyncio.create_task(store.compact())
    while not rewritten.is_set():
        await asyncio.sleep(0.01)
    ask(store, core, "t::0", error="during")  # supersedes a copied line
    ask(store, core, "t::new")  # a new question
    appended.set()
    assert await task
    raws = path.read_bytes().splitlines(keepends=True)
    assert len(raws) == 22  # 20 copied + 2 appended during the rewrite
    assert store_view(core) == feed_view(path)
    by_name = {q.metadata["gap_name"]: q for q in core.questions.values()}
    assert "during" in " ".join(by_name["t::0"].evidence)
    copied = next(r for r in raws if orjson.loads(r)["id"] == by_name["t::0"].id)
    assert store.garbage_bytes == len(copied)  # the copy the appended line superseded
    store.close()
    store2, core2 = opened(path)
    assert store_view(core2) == feed_view(path) and len(core2.questions) == 21
    assert [p.name for _, p in index_generations(path)] == ["feed.index-2.sqlite"]
    store2.close()


async def test_retired_questions_leave_the_views_and_move_to_the_archive(
        tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    store, core = opened(path, compact_bytes=4096, retention_s=DAY)
    ask(store, core, "t::old", "t::kept")
    ask(store, core, "t::old", resolved=True, at=T0 + 1)
    old = core.questions.get(next(q.id for q in core.questions.values()
                                  if q.metadata["gap_name"] == "t::old"))
    assert old is not None and old.status == "resolved"
    assert store.expire(T0 + 0.5 * DAY) == 0
    assert store.expire(T0 + 2 * DAY) == 1
    store.commit()
    assert [q.metadata["gap_name"] for q in core.ranked(include_resolved=True)] == ["t::kept"]
    assert core.counts() == (1, 1)
    assert store.entry(old.id) is not None  # dedup still knows it until it is archived
    assert await store.compact()
    archived = [orjson.loads(raw) for raw in archive_path(path).read_bytes().splitlines()]
    assert [CuriosityQuestion.model_validate(d) for d in archived] == [old]
    assert old.id not in feed_view(path)
    assert store.entry(old.id) is None
    store.close()


def test_pages_follow_the_cursor_and_filters(tmp_path: Path) -> None:
    store, core = opened(tmp_path / "feed.jsonl")
    ask(store, core, *(f"t::{i}" for i in range(25)))
    ask(store, core, *(f"e::{i}" for i in range(5)), gap_type="exception")
    everything = core.select(Selection(status="open"))
    assert len(everything) == 30
    pages, after = [], None
    while True:
        page = core.select(Selection(after=after, limit=10))
        if not page:
            break
        pages.append(page)
        after = decode_cursor(encode_cursor(page[-1]))
    assert [e.id for p in pages for e in p] == [e.id for e in everything]
    assert [len(p) for p in pages] == [10, 10, 10]
    assert {e.gap_type for e in core.select(Selection(gap_type="exception"))} == {"exception"}
    assert core.select(Selection(monitor="nobody")) == []
    assert len(core.open_entries("test")) == 30
    store.close()


def test_pending_counters_rank_live_and_read_live(tmp_path: Path) -> None:
    store, core = opened(tmp_path / "feed.jsonl")
    ask(store, core, "t::a", "t::b")
    lines = store.feed.lines_written
    for _ in range(20):  # repeats of the lower-ranked one: counters only, no line yet
        core.handle(sig("t::b"), T0 + 1)
    assert store.feed.lines_written == lines
    [first, _] = core.select(Selection(limit=2))
    assert first.occurrences == 21
    assert orjson.loads(core.json(first) or b"{}")["metadata"]["occurrences"] == 21
    store.close()


def test_only_the_matching_index_generation_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    store, core = opened(path)
    ask(store, core, "t::a")
    store.close()
    path.with_name("feed.index-7.sqlite").write_bytes(b"")  # a leftover of another feed
    store, core = opened(path)
    assert [p.name for _, p in index_generations(path)] == ["feed.index-1.sqlite"]
    assert len(core.questions) == 1
    store.close()
