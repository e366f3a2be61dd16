"""The question stream over a real feed file: live events, replay after an id, compaction,
and a subscriber that falls too far behind."""

from __future__ import annotations

from pathlib import Path

import orjson

from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.feed import QuestionFeed
from kloros_stream.store import FeedStore
from kloros_stream.stream import OVERFLOW, QuestionStream, StreamEvent, Subscription, parse_event_id
from tests.support.questions import T0, sig


def setup(tmp_path: Path, buffer_events: int = 1024
          ) -> tuple[QuestionFeed, CuriosityCore, QuestionStream]:
    feed = QuestionFeed(tmp_path / "feed.jsonl", compact_bytes=1 << 30)
    feed.open()
    stream = QuestionStream(feed, buffer_events)
    feed.listeners.append(stream.on_written)
    return feed, CuriosityCore(), stream


def write(feed: QuestionFeed, core: CuriosityCore, *names: str) -> None:
    for name in names:
        q = core.handle(sig(name), T0)
        assert q is not None
        feed.append(q)
    feed.flush()


async def take(sub: Subscription, n: int) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    events = sub.events()
    async for ev in events:
        out.append(ev)
        if len(out) == n:
            break
    await events.aclose()
    return out


def names(events: list[StreamEvent]) -> list[str]:
    return [orjson.loads(e.data)["metadata"]["gap_name"] for e in events]


async def test_live_events_carry_file_and_offset_ids(tmp_path: Path) -> None:
    feed, core, stream = setup(tmp_path)
    sub = stream.subscribe()
    write(feed, core, "a", "b")
    events = await take(sub, 2)
    assert names(events) == ["a", "b"]
    inode, offset = parse_event_id(events[-1].id) or (0, 0)
    assert (inode, offset) == (feed.inode, feed.size)


async def test_reconnect_with_last_id_replays_the_missed_then_live(tmp_path: Path) -> None:
    feed, core, stream = setup(tmp_path)
    first = stream.subscribe()
    write(feed, core, "a", "b")
    seen = await take(first, 2)
    stream.unsubscribe(first)
    write(feed, core, "c", "d")  # missed while away
    again = stream.subscribe(seen[-1].id)
    write(feed, core, "e")  # live after the reconnect
    events = await take(again, 3)
    assert names(events) == ["c", "d", "e"]
    assert again.replayed == 2


async def test_an_id_from_before_a_compaction_replays_the_current_state(tmp_path: Path
                                                                        ) -> None:
    feed = QuestionFeed(tmp_path / "feed.jsonl", compact_bytes=1 << 30)
    store = FeedStore(feed)
    store.open(T0)
    stream = QuestionStream(feed)
    feed.listeners.append(stream.on_written)
    core = CuriosityCore(store=store)
    sub = stream.subscribe()
    for name in ("a", "b"):
        assert core.handle(sig(name), T0) is not None
    store.flush()
    seen = await take(sub, 2)
    stream.unsubscribe(sub)
    assert await store.compact()
    again = stream.subscribe(seen[0].id)
    assert sorted(names(await take(again, 2))) == ["a", "b"]
    store.close()


async def test_unknown_or_current_ids_replay_nothing_or_all(tmp_path: Path) -> None:
    feed, core, stream = setup(tmp_path)
    write(feed, core, "a")
    assert stream.subscribe(f"{feed.inode:x}-{feed.size}").replay is None
    garbage = stream.subscribe("not-an-id")
    assert names(await take(garbage, 1)) == ["a"]


async def test_a_subscriber_too_far_behind_is_dropped_and_told(tmp_path: Path) -> None:
    feed, core, stream = setup(tmp_path, buffer_events=4)
    slow = stream.subscribe()
    fast = stream.subscribe()
    write(feed, core, "a", "b", "c")
    assert names(await take(fast, 3)) == ["a", "b", "c"]
    write(feed, core, "d", "e")  # slow now holds 5 > 4
    assert slow.dropped and slow not in stream.clients and stream.dropped == 1
    assert await take(slow, 1) == [OVERFLOW]
    assert names(await take(fast, 2)) == ["d", "e"]  # the writer never waited
