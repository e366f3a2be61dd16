"""Helpers for the exception monitor's tests: journal entries as ``journalctl -o json``
prints them, the monitor's config section, and the monitor following in a task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from kloros_stream.models import Signal
from kloros_stream.monitors.exception import ExceptionMonitor
from tests.support.fakes import ListPublisher, make_context


# -- a journal as journalctl -o json prints it ----------------------------------------------
class Journal:
    """Builds journal entries with increasing cursors."""

    def __init__(self) -> None:
        self.n = 0
        self.entries: list[dict[str, Any]] = []

    def add(
        self,
        message: str,
        *,
        unit: str = "kloros-brain.service",
        pid: int = 100,
        ident: str = "brain",
        priority: int = 6,
        stream: str = "s1",
        **extra: Any,
    ) -> dict[str, Any]:
        self.n += 1
        e = {
            "__CURSOR": f"s=feed;i={self.n:x};b=b;m={self.n:x};t=1;x=2",
            "__REALTIME_TIMESTAMP": str(1_700_000_000_000_000 + self.n * 1000),
            "_SYSTEMD_UNIT": unit,
            "_PID": str(pid),
            "SYSLOG_IDENTIFIER": ident,
            "PRIORITY": str(priority),
            "_STREAM_ID": stream,
            "MESSAGE": message,
            **extra,
        }
        self.entries.append(e)
        return e

    def lines(self, messages: list[str], **kw: Any) -> list[dict[str, Any]]:
        return [self.add(m, **kw) for m in messages]

    @staticmethod
    def text(entries: list[dict[str, Any]]) -> str:
        return "".join(orjson.dumps(e).decode() + "\n" for e in entries)


def config(jc: Path | str, **section: Any) -> dict[str, Any]:
    return {"monitors": {"exception": {"journalctl": str(jc), **section}}}


@contextlib.asynccontextmanager
async def following(
    tmp_path: Path, data: dict[str, Any], publisher: ListPublisher | None = None
) -> AsyncIterator[tuple[ExceptionMonitor, ListPublisher]]:
    ctx, pub = make_context("exception", tmp_path, data, publisher=publisher)
    monitor = ExceptionMonitor(ctx)
    task = asyncio.create_task(monitor.run())
    try:
        yield monitor, pub
    finally:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def names(signals: list[Signal]) -> list[str]:
    return sorted(s.gap_name for s in signals)
