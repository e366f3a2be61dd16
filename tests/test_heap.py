"""The heap settled once a level is built: frozen at once, trimmed once quiet."""

from __future__ import annotations

import asyncio
import gc

import pytest

from kloros_stream.heap import HeapSettler, rss_bytes


def test_levels_arriving_together_freeze_at_once_and_trim_once_quiet() -> None:
    async def main() -> HeapSettler:
        settler = HeapSettler(delay_s=0.05)
        gc.unfreeze()
        settler.level_built()
        assert gc.get_freeze_count() > 0
        await asyncio.sleep(0.02)
        settler.level_built()  # another level within the delay: still one trim
        await asyncio.sleep(0.3)
        return settler

    settler = asyncio.run(main())
    gc.unfreeze()
    assert settler.trims == (0 if settler.trim is None else 1)


@pytest.mark.skipif(HeapSettler().trim is None, reason="no malloc_trim in this C library")
def test_a_trim_hands_freed_heap_pages_back() -> None:
    """Blocks freed between survivors stay in the process until the heap is trimmed."""
    blocks = [bytes(2000) for _ in range(40_000)]  # ~80 MB from malloc (not pymalloc)
    survivors = blocks[::50]
    del blocks
    before = rss_bytes()
    released = asyncio.run(HeapSettler().trim_now())
    assert before is not None and released > 20 * 2**20
    assert len(survivors) == 800


def test_a_cancelled_settler_does_not_trim() -> None:
    async def main() -> HeapSettler:
        settler = HeapSettler(delay_s=0.05)
        settler.level_built()
        settler.cancel()
        await asyncio.sleep(0.2)
        return settler

    assert asyncio.run(main()).trims == 0
    gc.unfreeze()
