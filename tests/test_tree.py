"""TreeEvents: the initial scans told apart from live changes, in lists or one by one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kloros_stream.sources.tree import TreeEvents, unique_events
from kloros_stream.sources.watcher import FileEvent, FileEventKind

E = FileEventKind


class _Watcher:
    """A watcher handing over scripted lists of events, then waiting for ever."""

    def __init__(self, batches: list[list[FileEvent]]) -> None:
        self._batches = batches
        self.idle = False

    async def __aenter__(self) -> _Watcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def batches(self) -> AsyncIterator[list[FileEvent]]:
        for batch in self._batches:
            yield batch
        self.idle = True
        await asyncio.Event().wait()


def _events(root: Path, *named: tuple[FileEventKind, str]) -> list[FileEvent]:
    return [FileEvent(kind, root / name, 0.0) for kind, name in named]


async def _tree(batches: list[list[FileEvent]]) -> Any:
    events = TreeEvents([Path("/r")], exclude=[], include=lambda _r, _p: True)
    events.watcher = lambda _root: _Watcher(batches)  # type: ignore[method-assign,assignment,return-value]
    return events


async def test_a_list_mixing_the_scan_and_a_live_change_is_split() -> None:
    root = Path("/r")
    scan = _events(root, (E.EXISTING, "a.py"), (E.EXISTING, "b.py"), (E.CREATED, "c.py"),
                   (E.EXISTING, "d.py"))
    later = _events(root, (E.CLOSED, "c.py"))
    async with await _tree([scan[:1], scan[1:], later]) as events:
        initial = [(r, [e.path.name for e in b]) async for r, b in events.initial_batches()]
        assert initial == [(root, ["a.py"]), (root, ["b.py"])]
        live = aiter(events.live())
        seen = [await anext(live) for _ in range(3)]  # an EXISTING after the scan is live
        assert [(e.kind, e.path.name) for _r, e in seen] == [
            (E.CREATED, "c.py"), (E.EXISTING, "d.py"), (E.CLOSED, "c.py")]


async def test_initial_one_event_at_a_time_for_plugins() -> None:
    root = Path("/r")
    scan = _events(root, (E.EXISTING, "a.py"), (E.EXISTING, "b.py"))
    async with await _tree([scan]) as events:
        assert [e.path.name async for _r, e in events.initial()] == ["a.py", "b.py"]


def test_a_file_reported_twice_by_the_scan_is_one_event() -> None:
    root = Path("/r")
    a1, b, a2 = (FileEvent(FileEventKind.EXISTING, root / n, float(i))
                 for i, n in enumerate(("a.py", "b.py", "a.py")))
    found, keys = unique_events([(root, a1), (root, b), (root, a2)])
    assert keys == ["/r/a.py", "/r/b.py"]
    assert found == [(root, a2), (root, b)]  # the last report of a path wins
    once = [(root, a1), (root, b)]
    assert unique_events(once) == (once, ["/r/a.py", "/r/b.py"])
