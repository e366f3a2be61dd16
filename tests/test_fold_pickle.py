"""fold_pickle: a state written in parts (large maps in chunks, our objects attribute by
attribute) comes back equal, with what its parts share still shared."""

from __future__ import annotations

import asyncio
import io
import pickle
from collections import Counter, defaultdict

from kloros_stream.analysis.capabilities import FileImports, ImportIndex
from kloros_stream.analysis.compact import SetMap
from kloros_stream.sources.fold_pickle import (
    CHUNK_ITEMS,
    FoldPickler,
    FoldUnpickler,
    dump_values,
    load_value,
)


class Installed:
    def resolves(self, name: str) -> bool:
        return name in {"os", "json"}

    def invalidate(self) -> None:
        pass


def roundtrip(*values: object) -> list[object]:
    out = io.BytesIO()
    dump_values(FoldPickler(out, {}), values)
    unpickler = FoldUnpickler(io.BytesIO(out.getvalue()), {})

    async def load() -> list[object]:
        return [await load_value(unpickler) for _ in values]

    return asyncio.run(load())


def test_large_maps_come_back_whole_in_their_own_types() -> None:
    n = CHUNK_ITEMS * 2 + 7
    plain = {f"k{i}": i for i in range(n)}
    sets: defaultdict[str, set[int]] = defaultdict(set, {f"s{i}": {i} for i in range(n)})
    counts = Counter({f"c{i}": i + 1 for i in range(n)})
    back = roundtrip(plain, sets, counts, {"small": 1})
    assert back == [plain, sets, counts, {"small": 1}]
    assert type(back[1]) is defaultdict and back[1].default_factory is set  # type: ignore[union-attr]
    assert type(back[2]) is Counter


def test_our_objects_come_back_by_their_parts_and_keep_what_they_share() -> None:
    index = ImportIndex(Installed())
    for i in range(CHUNK_ITEMS + 500):
        index.set_file("/r", f"pkg{i % 40}/m{i}.py",
                       FileImports(frozenset({"os", f"lib{i % 7}", "pkg1"}), frozenset()))
    shared = SetMap()
    for i in range(CHUNK_ITEMS + 10):
        shared.add(f"ch{i}", f"/r/f{i}.py")
    pair = (shared, shared)
    restored, again = roundtrip(index, pair)
    assert isinstance(restored, ImportIndex)
    restored.resolver = Installed()
    assert restored.missing() == index.missing()
    assert restored.modules == index.modules
    assert isinstance(again, tuple) and again[0] is again[1]  # one object, written once
    assert sorted(again[0]) == sorted(shared)


def test_anything_but_our_classes_and_plain_containers_is_refused() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, ...]:
            return (print, ("ran",))

    data = pickle.dumps(("raw",)) + pickle.dumps(Boom())
    unpickler = FoldUnpickler(io.BytesIO(data), {})
    try:
        asyncio.run(load_value(unpickler))
    except pickle.UnpicklingError as err:
        assert "not allowed" in str(err)
    else:
        raise AssertionError("unpickled a foreign global")


def test_a_container_split_into_parts_and_held_elsewhere_is_not_saved() -> None:
    """Rebuilt at load, it would come back as two objects: refused, whichever comes
    first."""
    big = {i: i for i in range(CHUNK_ITEMS + 1)}
    for values in ([big, [big]], [[big], big]):
        try:
            dump_values(FoldPickler(io.BytesIO(), {}), values)
        except pickle.PicklingError as err:
            assert "held elsewhere" in str(err)
        else:
            raise AssertionError("saved a state holding a split map twice")
