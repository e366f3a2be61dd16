"""Fake event sinks and contexts for unit tests of monitors and logic."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kloros_stream.checkpoint import CheckpointStore
from kloros_stream.config import Config, parse_config
from kloros_stream.models import Signal
from kloros_stream.monitors.base import MonitorContext


class ListPublisher:
    """Collects published signals in order."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []

    def publish(self, item: Signal) -> None:
        self.signals.append(item)

    def gaps(self, gap_type: str | None = None) -> list[Signal]:
        return [s for s in self.signals if not s.resolved and (gap_type in (None, s.gap_type))]

    def resolutions(self, gap_type: str | None = None) -> list[Signal]:
        return [s for s in self.signals if s.resolved and (gap_type in (None, s.gap_type))]

    async def wait_for(
        self, predicate: Callable[[list[Signal]], bool], timeout: float = 10.0
    ) -> list[Signal]:
        """Wait until ``predicate(signals)`` holds; fail the test after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.signals):
            if loop.time() > deadline:
                raise AssertionError(f"condition not met in {timeout}s; got {self.signals!r}")
            await asyncio.sleep(0.01)
        return self.signals


def make_config(tmp_path: Path, data: dict[str, Any] | None = None) -> Config:
    """A validated config whose relative paths resolve against ``tmp_path``."""
    return parse_config(data or {}, tmp_path)


def make_context(
    name: str,
    tmp_path: Path,
    data: dict[str, Any] | None = None,
    *,
    one_shot: bool = False,
    publisher: ListPublisher | None = None,
) -> tuple[MonitorContext, ListPublisher]:
    """A monitor context with a list publisher and checkpoints under ``tmp_path/state``."""
    config = make_config(tmp_path, data)
    pub = publisher or ListPublisher()
    store = CheckpointStore(config.service.state_dir).child(name)
    return MonitorContext(
        name=name, config=config, publisher=pub, checkpoints=store, one_shot=one_shot
    ), pub
