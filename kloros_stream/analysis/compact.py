"""One shared empty container in place of the many empty ones of long-lived facts.

Most files' facts hold several empty sets and maps; each empty ``frozenset`` costs 216
bytes and each empty ``dict`` 64, and the source index keeps the facts of every file of
the tree. Facts that arrive from a parse process (unpickled) or from the index's journal
are stored with these shared instead. The shared map is read-only: facts are never
changed once built.
"""

from __future__ import annotations

from dataclasses import fields
from types import MappingProxyType
from typing import Any

EMPTY_SET: frozenset[Any] = frozenset()
EMPTY_MAP: Any = MappingProxyType({})


def shared_empty(value: Any) -> Any:
    """``value``, or the shared empty frozenset or map in place of an empty one."""
    kind = type(value)
    if kind is frozenset and not value:
        return EMPTY_SET
    if kind is dict and not value:
        return EMPTY_MAP
    return value


def share_empties(obj: Any) -> Any:
    """``obj`` (a frozen dataclass), its empty containers replaced by the shared ones."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        shared = shared_empty(value)
        if shared is not value:
            object.__setattr__(obj, f.name, shared)
    return obj


def set_state_shared(obj: Any, state: list[Any]) -> None:
    """``__setstate__`` of a frozen slots dataclass (pickle), sharing empty containers."""
    for f, value in zip(fields(obj), state, strict=True):
        object.__setattr__(obj, f.name, shared_empty(value))
