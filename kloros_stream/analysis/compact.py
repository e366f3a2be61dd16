"""Compact containers for what is kept per file of a tree: one shared empty container in
place of the many empty ones of long-lived facts, and maps whose keys mostly hold a single
member (:class:`SetMap`, :class:`CountMap`).

Most files' facts hold several empty sets and maps; each empty ``frozenset`` costs 216
bytes and each empty ``dict`` 64, and the source index keeps the facts of every file of
the tree. Facts that arrive from a parse process (unpickled) or from the index's journal
are stored with these shared instead. The shared map is read-only: facts are never
changed once built.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator
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
    for name in _field_names(type(obj)):
        value = getattr(obj, name)
        shared = shared_empty(value)
        if shared is not value:
            object.__setattr__(obj, name, shared)
    return obj


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def set_state_shared(obj: Any, state: list[Any]) -> None:
    """``__setstate__`` of a frozen slots dataclass (pickle), sharing empty containers."""
    for f, value in zip(fields(obj), state, strict=True):
        object.__setattr__(obj, f.name, shared_empty(value))


class _LoneMembers:
    """A dict whose value is a lone member itself or a container of several: reading."""

    __slots__ = ("_data",)
    _data: dict[Any, Any]

    def get(self, key: Any, default: Any = ()) -> Any:
        """The key's members (a tuple or the container: iterate, ``len``, ``in``)."""
        held = self._data.get(key)
        if held is None:
            return default
        return (held,) if type(held) is str else held

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


SMALL_GROUP = 8
"""A :class:`SetMap` key's members are a tuple (56-104 bytes) while they grow to this
many, then a set (728 bytes from 5 to 18 members), back to a tuple at half of it."""


class SetMap(_LoneMembers):
    """key -> a set of strings, for the aggregates of a tree (``channel -> producing
    files``). Most keys have one member, held alone (a string in the dict); a few members
    are a tuple, many a set, so that a key costs what its members need, not a set's
    table. :meth:`get` gives a key's members (a tuple or a set: iterate, ``len``, ``in``;
    never change it)."""

    __slots__ = ()

    def __init__(self) -> None:
        self._data: dict[Any, str | tuple[str, ...] | set[str]] = {}

    def add(self, key: Any, member: str) -> None:
        held = self._data.get(key)
        if held is None:
            self._data[key] = member
        elif type(held) is str:
            if held != member:
                self._data[key] = (held, member)
        elif type(held) is tuple:
            if member not in held:
                self._data[key] = (*held, member) if len(held) < SMALL_GROUP else {
                    *held, member}
        else:
            held.add(member)

    def discard(self, key: Any, member: str) -> None:
        held = self._data.get(key)
        if held is None:
            return
        if type(held) is str:
            if held == member:
                del self._data[key]
        elif type(held) is tuple:
            if member in held:
                rest = tuple(m for m in held if m != member)
                self._data[key] = rest[0] if len(rest) == 1 else rest
        else:
            held.discard(member)
            if len(held) <= SMALL_GROUP // 2:  # shrunk well below a set's worth
                self._data[key] = next(iter(held)) if len(held) == 1 else tuple(held)

    def change(self, key: Any, member: str, sign: int) -> None:
        """:meth:`add` (``sign`` > 0) or :meth:`discard`."""
        if sign > 0:
            self.add(key, member)
        else:
            self.discard(key, member)


class CountMap(_LoneMembers):
    """key -> a multiset of strings (``constant value -> names defining it``), each key
    with one member counted once held alone, as in :class:`SetMap`. :meth:`get` gives a
    key's distinct members."""

    __slots__ = ()

    def __init__(self) -> None:
        self._data: dict[Any, str | Counter[str]] = {}

    def bump(self, key: Any, member: str, sign: int) -> None:
        """Count ``member`` under ``key`` once more (``sign`` +1) or once less (-1)."""
        held = self._data.get(key)
        if held is None:
            if sign > 0:
                self._data[key] = member
            return
        if type(held) is str:
            if held == member and sign < 0:
                del self._data[key]
            elif sign > 0:
                self._data[key] = Counter({held: 1}) + Counter({member: 1})
            return
        value = held[member] + sign
        if value > 0:
            held[member] = value
        else:
            held.pop(member, None)
        if not held:
            del self._data[key]
        elif len(held) == 1:
            (only, count), = held.items()
            if count == 1:
                self._data[key] = only

