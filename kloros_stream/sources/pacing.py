"""Long folds on the event loop, a slice at a time (:func:`paced`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

SLICE_S = 0.004
"""How long a fold runs before :func:`paced` hands the event loop back (the loop is held
that long plus one item's work)."""


async def paced(items: Iterable[Any], slice_s: float = SLICE_S) -> AsyncIterator[Any]:
    """``items``, handing the event loop back whenever ``slice_s`` has passed since it
    last did (the caller's work on each item included): a subscriber folding a snapshot
    of 20 k files, or checking every module, never holds the loop for long, however
    uneven the items' costs."""
    deadline = time.perf_counter() + slice_s
    for item in items:
        yield item
        if time.perf_counter() >= deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + slice_s
