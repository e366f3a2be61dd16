"""integration's checkpoint of the gaps it announced and the lines their questions quote
(the files are the source index's, the flow index a
:class:`~kloros_stream.sources.folds.FoldCheckpoint`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..analysis.flow_index import Channel, ChannelKind
from ..checkpoint import CheckpointStore

CHECKPOINT = "index"
CHECKPOINT_FORMAT = 2
"""1: files, flows and announced gaps; 2: announced gaps only (the index keeps files), and
since this version the evidence they quote (``evidence``, absent in older ones)."""

Announced = tuple[set[Channel], dict[str, str], "Evidence"]
"""Announced orphans; announced syntax errors (absolute path -> gap name); the lines the
orphans' questions quote."""


def announced_to_json(orphans: set[Channel], errors: dict[str, str],
                      evidence: Evidence) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "announced_orphans": [[c.kind.value, c.name] for c in sorted(orphans)],
        "announced_errors": dict(errors),
        "evidence": [[c.kind.value, c.name, evidence.lines[c], sorted(evidence.quoted(c))]
                     for c in sorted(orphans) if c in evidence.lines],
    }


def load_announced(store: CheckpointStore, log: Any) -> Announced:
    """The gaps announced before the last stop; none if there is no checkpoint or it is
    malformed (logged)."""
    try:
        announced = announced_from_json(store.load(CHECKPOINT))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        log.error("integration_checkpoint_invalid", error=str(err))
        return set(), {}, Evidence()
    if announced is None:
        return set(), {}, Evidence()
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
    evidence = Evidence()
    for kind, name, lines, paths in data.get("evidence") or []:
        channel = Channel(ChannelKind(kind), str(name))
        if channel in orphans:
            evidence.set(channel, [str(line) for line in lines], map(str, paths))
    return orphans, errors, evidence


class Evidence:
    """The producing statements last announced per orphan, and the files they quote
    (an edit of one of them re-checks exactly the orphans quoting it)."""

    def __init__(self) -> None:
        self.lines: dict[Channel, list[str]] = {}
        self._quoting: dict[str, set[Channel]] = {}
        self._quoted: dict[Channel, frozenset[str]] = {}

    def get(self, channel: Channel) -> list[str] | None:
        return self.lines.get(channel)

    def quoted(self, channel: Channel) -> frozenset[str]:
        """The files the lines of ``channel`` quote."""
        return self._quoted.get(channel, frozenset())

    def set(self, channel: Channel, lines: list[str], paths: Iterable[str]) -> None:
        """``lines`` quote the files ``paths`` (absolute)."""
        self.pop(channel)
        self.lines[channel] = lines
        quoted = self._quoted[channel] = frozenset(paths)
        for path in quoted:
            self._quoting.setdefault(path, set()).add(channel)

    def pop(self, channel: Channel) -> None:
        self.lines.pop(channel, None)
        for path in self._quoted.pop(channel, ()):
            channels = self._quoting[path]
            channels.discard(channel)
            if not channels:
                del self._quoting[path]

    def quoting(self, paths: Iterable[str]) -> set[Channel]:
        """The orphans whose evidence quotes one of ``paths``."""
        out: set[Channel] = set()
        for path in paths:
            out |= self._quoting.get(path, set())
        return out
