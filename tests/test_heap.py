"""The heap settled once a level is built: frozen at once, trimmed once quiet."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from kloros_stream.heap import HeapSettler, rss_bytes

needs_trim = pytest.mark.skipif(HeapSettler().trim is None,
                                reason="no malloc_trim in this C library")


def settled(main: Callable[[], Coroutine[Any, Any, HeapSettler]]) -> HeapSettler:
    """Run ``main`` on a fresh loop; the heap is unfrozen again after it."""
    try:
        return asyncio.run(main())
    finally:
        gc.unfreeze()


@needs_trim
def test_levels_arriving_before_the_delay_ends_are_trimmed_once() -> None:
    async def main() -> HeapSettler:
        settler = HeapSettler(delay_s=0.05)
        settler.level_built()
        assert gc.get_freeze_count() > 0
        await asyncio.sleep(0)  # the settling task has started waiting
        settler.level_built()  # another level: the wait starts again, one trim for both
        await settler.wait_idle()
        return settler

    assert settled(main).trims == 1


@needs_trim
def test_a_level_built_during_a_trim_is_trimmed_after_it() -> None:
    async def main() -> HeapSettler:
        settler = HeapSettler(delay_s=0.01)
        trim = settler.trim
        assert trim is not None
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        def slow_trim(pad: int) -> int:
            loop.call_soon_threadsafe(started.set)
            return trim(pad)

        settler.trim = slow_trim
        settler.level_built()
        await started.wait()
        settler.level_built()  # while the first trim runs
        await settler.wait_idle()
        return settler

    assert settled(main).trims == 2


@needs_trim
def test_a_trim_hands_freed_heap_pages_back() -> None:
    """Blocks freed between survivors stay in the process until the heap is trimmed."""
    blocks = [bytes(2000) for _ in range(40_000)]  # ~80 MB from malloc (not pymalloc)
    survivors = blocks[::50]
    del blocks
    before = rss_bytes()
    released = asyncio.run(HeapSettler().trim_now())
    assert before is not None and released > 20 * 2**20
    assert len(survivors) == 800


def test_a_closed_settler_only_freezes() -> None:
    async def main() -> HeapSettler:
        settler = HeapSettler(delay_s=0.01)
        settler.level_built()
        settler.close()  # the pending trim is cancelled
        settler.level_built()  # after the close: frozen, never trimmed
        await asyncio.sleep(0.1)
        return settler

    settler = settled(main)
    assert settler.trims == 0 and settler.closed
