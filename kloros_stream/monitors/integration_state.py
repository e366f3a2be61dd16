"""integration's checkpoint of the gaps it announced (the files are the source index's,
the flow index a :class:`~kloros_stream.sources.folds.FoldCheckpoint`)."""

from __future__ import annotations

from typing import Any

from ..analysis.flow_index import Channel, ChannelKind
from ..checkpoint import CheckpointStore

CHECKPOINT = "index"
CHECKPOINT_FORMAT = 2
"""1: files, flows and announced gaps; 2: announced gaps only (the index keeps files)."""

Announced = tuple[set[Channel], dict[str, str]]
"""Announced orphans; announced syntax errors (absolute path -> gap name)."""


def announced_to_json(orphans: set[Channel], errors: dict[str, str]) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "announced_orphans": [[c.kind.value, c.name] for c in sorted(orphans)],
        "announced_errors": dict(errors),
    }


def load_announced(store: CheckpointStore, log: Any) -> Announced:
    """The gaps announced before the last stop; none if there is no checkpoint or it is
    malformed (logged)."""
    try:
        announced = announced_from_json(store.load(CHECKPOINT))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        log.error("integration_checkpoint_invalid", error=str(err))
        return set(), {}
    if announced is None:
        return set(), {}
    log.info("integration_checkpoint_loaded", orphans=len(announced[0]),
             syntax_errors=len(announced[1]))
    return announced


def announced_from_json(data: Any) -> Announced | None:
    """The announced gaps of a checkpoint; None if there is none of a known format.
    Raises KeyError/TypeError/ValueError/IndexError if it is malformed."""
    if not isinstance(data, dict) or data.get("format") not in (1, CHECKPOINT_FORMAT):
        return None
    orphans = {Channel(ChannelKind(kind), str(name))
               for kind, name in data.get("announced_orphans") or []}
    errors = {str(k): str(v) for k, v in (data.get("announced_errors") or {}).items()}
    return orphans, errors
