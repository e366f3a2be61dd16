"""How a :class:`~.folds.FoldCheckpoint` pickles a state: in parts, so that loading it
hands the event loop back between parts.

One pickler writes every part (its memo spans them: an object two parts share is written
once and comes back shared). A container split into parts is rebuilt at load, so nothing
else in the state may hold it: saving refuses a state that does (the whole plan of parts
is made before anything is written, so the order does not matter). A part is tagged:

- ``("obj", class, kind, n)``: one of our objects, then its ``n`` attributes (``attrs``:
  the default state, set back with ``object.__setattr__``) or the items of the dict or
  list its own ``__getstate__`` returns (``dict`` / ``list``: given to ``__setstate__``),
  each a part again (one level down: nested objects deeper are pickled whole);
- ``("map", kind, factory, n)``: a large dict, ``defaultdict`` or ``Counter`` as ``n``
  plain dicts of :data:`CHUNK_ITEMS` items;
- ``("raw",)``: anything else, pickled whole.

Packed facts are written by reference (their record's path) and taken from the records
at load; only our own classes and plain containers are unpickled (a state file is data,
never code).
"""

from __future__ import annotations

import asyncio
import io
import pickle
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..analysis.compact import EMPTY_MAP
from ..analysis.source_facts import PackedFacts

if TYPE_CHECKING:
    from .records import FileRecord

CHUNK_ITEMS = 2000
"""Items of a large map unpickled between two hand-backs of the event loop."""
SPLIT_DEPTH = 2
"""Our objects are split into their attributes this many levels down (a flow index and
its aggregates); deeper ones are pickled whole."""
_MAPS: dict[type, str] = {dict: "dict", defaultdict: "defaultdict", Counter: "Counter"}


def _mapping_proxy(items: dict[Any, Any]) -> Any:
    return MappingProxyType(items) if items else EMPTY_MAP


class FoldPickler(pickle.Pickler):
    """Packed facts by reference (their record's path); read-only maps as their items."""

    dispatch_table = {MappingProxyType: lambda m: (_mapping_proxy, (dict(m),))}

    def __init__(self, out: io.BytesIO, paths: dict[int, str]) -> None:
        super().__init__(out, protocol=pickle.HIGHEST_PROTOCOL)
        self._paths = paths
        self.split: set[int] = set()
        """The containers written in parts (:func:`dump_values`): never written whole."""

    def persistent_id(self, obj: Any) -> str | None:
        if id(obj) in self.split:
            raise pickle.PicklingError(f"a {type(obj).__name__} split into parts is also "
                                       "held elsewhere in the state")
        if type(obj) is PackedFacts:
            path = self._paths.get(id(obj))
            if path is None:
                raise pickle.PicklingError("packed facts of no record in the state")
            return path
        return None


_SAFE_GLOBALS = {
    "builtins": frozenset({"set", "frozenset", "dict", "list", "tuple", "str", "int", "float",
                           "bool", "bytes", "bytearray", "object", "slice", "range"}),
    "collections": frozenset({"Counter", "defaultdict", "OrderedDict", "deque"}),
    "copyreg": frozenset({"_reconstructor"}),
}


class FoldUnpickler(pickle.Unpickler):
    """Only our own classes and plain containers, packed facts from the records."""

    def __init__(self, data: io.BytesIO, records: Mapping[str, FileRecord]) -> None:
        super().__init__(data)
        self._records = records

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("kloros_stream.") or name in _SAFE_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a fold")

    def persistent_load(self, pid: Any) -> PackedFacts:
        record = self._records.get(pid)
        if record is None or record.facts is None:
            raise pickle.UnpicklingError(f"no packed facts for {pid!r}")
        return record.facts


def dump_values(pickler: FoldPickler, values: Sequence[Any]) -> None:
    """Write ``values`` as tagged parts (see the module's docstring)."""
    plan: list[Any] = []
    for value in values:
        _plan(value, 0, plan, pickler.split)
    for item in plan:
        pickler.dump(item)


def _plan(value: Any, depth: int, plan: list[Any], split: set[int]) -> None:
    kind = _MAPS.get(type(value))
    if kind is not None and len(value) > CHUNK_ITEMS:
        split.add(id(value))
        items = list(value.items())
        factory = value.default_factory if isinstance(value, defaultdict) else None
        plan.append(("map", kind, factory, -(-len(items) // CHUNK_ITEMS)))
        plan.extend(dict(items[start:start + CHUNK_ITEMS])
                    for start in range(0, len(items), CHUNK_ITEMS))
        return
    parts = _state_parts(value) if depth < SPLIT_DEPTH else None
    if parts is None:
        plan += [("raw",), value]
        return
    split.add(id(value))
    how, items = parts
    plan.append(("obj", type(value), how, len(items)))
    for item in items:
        if how == "list":
            _plan(item, depth + 1, plan, split)
        else:
            plan.append(item[0])
            _plan(item[1], depth + 1, plan, split)


def _state_parts(obj: Any) -> tuple[str, list[Any]] | None:
    """(kind, parts) of one of our objects' state; None for anything else."""
    if not type(obj).__module__.startswith("kloros_stream."):
        return None
    state = obj.__getstate__()
    if not hasattr(type(obj), "__setstate__"):  # the default state: dict and/or slots
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        return ("attrs", list(state.items())) if isinstance(state, dict) else None
    if isinstance(state, dict):
        return "dict", list(state.items())
    if isinstance(state, list):
        return "list", state
    return None


async def load_value(unpickler: pickle.Unpickler) -> Any:
    """Read one value written by :func:`dump_values`, handing the event loop back after
    each part."""
    tag = unpickler.load()
    if tag[0] == "map":
        _tag, kind, factory, count = tag
        value: Any = (defaultdict(factory) if kind == "defaultdict"
                      else Counter() if kind == "Counter" else {})
        for _ in range(count):
            value.update(unpickler.load())
            await asyncio.sleep(0)
        return value
    if tag[0] == "obj":
        _tag, cls, kind, count = tag
        parts = []
        for _ in range(count):
            if kind == "list":
                parts.append(await load_value(unpickler))
            else:
                name = unpickler.load()
                parts.append((name, await load_value(unpickler)))
        obj = cls.__new__(cls)
        if kind == "attrs":
            for name, part in parts:
                object.__setattr__(obj, name, part)
        else:
            obj.__setstate__(dict(parts) if kind == "dict" else parts)
        return obj
    if tag != ("raw",):
        raise pickle.UnpicklingError(f"unknown part {tag!r}")
    value = unpickler.load()
    await asyncio.sleep(0)
    return value
