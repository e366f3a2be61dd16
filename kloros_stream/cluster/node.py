"""One process's part in the cluster: an edge, a core, or both (``[cluster] role``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ClusterConfig
from ..core.curiosity import CuriosityCore
from ..models import Signal
from .connect import host_name
from .core import Core
from .edge import Edge


class ClusterNode:
    def __init__(self, cfg: ClusterConfig, state_dir: Path, view: CuriosityCore,
                 write: Callable[[], None],
                 pending: Callable[[], None]) -> None:
        self.cfg = cfg
        self.host = host_name(cfg)
        self.edge = Edge(cfg, self.host, state_dir) if cfg.role in ("edge", "both") else None
        self.core = (Core(cfg, self.host, view, write, pending)
                     if cfg.role in ("core", "both") else None)

    @property
    def runs_monitors(self) -> bool:
        return self.edge is not None

    def accept(self, batch: list[Signal]) -> None:
        """This host's signals: to the edge's buffer (a core-only node has none)."""
        if self.edge is not None:
            self.edge.accept(batch)

    def start(self) -> None:
        for part in (self.edge, self.core):
            if part is not None:
                part.start()

    async def stop(self) -> None:
        if self.edge is not None:
            await self.edge.stop()
        if self.core is not None:
            await self.core.stop()

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"role": self.cfg.role, "host": self.host,
                                  "nats_url": self.cfg.nats_url}
        if self.edge is not None:
            report["edge"] = self.edge.health()
        if self.core is not None:
            report["core"] = self.core.health()
        return report
