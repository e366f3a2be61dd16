"""Views over a core's questions in distributed mode (no network, no NATS import)."""

from __future__ import annotations

from dataclasses import replace

from ..core.curiosity import CuriosityCore
from ..core.store import QuestionEntry, Selection


def on_host(core: CuriosityCore, sel: Selection, host: str) -> list[QuestionEntry]:
    """``sel``'s ranked entries limited to questions seen on ``host`` (``metadata.hosts``).

    The index has no hosts column: this reads each selected question, so it costs one read
    per question of the selection; it serves ``/questions?host=`` only.
    """
    out: list[QuestionEntry] = []
    for entry in core.select(replace(sel, limit=None)):
        q = core.question(entry)
        hosts = q.metadata.get("hosts") if q is not None else None
        if isinstance(hosts, dict) and host in hosts:
            out.append(entry)
            if sel.limit is not None and len(out) >= sel.limit:
                break
    return out
