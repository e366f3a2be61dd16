"""Read Server-Sent Events from an aiohttp client response (tests only)."""

from __future__ import annotations

import asyncio

import aiohttp

READ_TIMEOUT_S = 10.0


async def read_events(resp: aiohttp.ClientResponse, n: int,
                      timeout: float = READ_TIMEOUT_S) -> list[dict[str, str]]:
    """The next ``n`` events (comments such as pings skipped), each {field: value}."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async with asyncio.timeout(timeout):
        while len(events) < n:
            raw = await resp.content.readline()
            if not raw:
                raise AssertionError(f"stream ended after {len(events)} of {n} events")
            line = raw.decode().rstrip("\r\n")
            if not line:
                if current:
                    events.append(current)
                current = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            current[key] = current[key] + "\n" + value if key in current else value
    return events
