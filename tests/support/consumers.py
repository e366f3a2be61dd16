"""Helpers for consumer tests against a real service: a seeded feed, a free port, HTTP."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from kloros_stream.core.curiosity import CuriosityCore
from kloros_stream.feed import QuestionFeed
from tests.support.questions import T0, sig


def seed_feed(path: Path, n: int, prefix: str = "q") -> list[str]:
    """A feed of ``n`` ready questions (as the service would have written them); their ids."""
    core = CuriosityCore()
    feed = QuestionFeed(path, compact_bytes=1 << 30)
    feed.open()
    ids = []
    for i in range(n):
        q = core.handle(sig(f"{prefix}{i:05d}", gap_type="exception" if i % 3 else
                            "test_failure"), T0 + i)
        assert q is not None
        feed.append(q)
        ids.append(q.id)
    feed.close()
    return ids


def free_port() -> int:
    """A port free on 127.0.0.1 right now (for configs the CLI must read a port from)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def post(session: aiohttp.ClientSession, base: str, path: str, body: dict[str, Any]
               ) -> tuple[int, dict[str, Any] | None]:
    async with session.post(base + path, data=orjson.dumps(body),
                            timeout=aiohttp.ClientTimeout(total=15)) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw) if raw else None
