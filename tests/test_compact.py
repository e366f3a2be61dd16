"""The compact containers: maps holding a lone member as itself behave as a dict of sets
(or of counters) under any sequence of changes."""

from __future__ import annotations

import random
from collections import Counter

from kloros_stream.analysis.compact import CountMap, SetMap


def test_set_map_equals_a_dict_of_sets_under_random_changes() -> None:
    rng = random.Random(7)
    compact, plain = SetMap(), dict[str, set[str]]()
    members = [f"m{i}" for i in range(14)]  # enough for every form: lone, tuple, set
    forms = set()
    for _ in range(20_000):
        key, member = rng.choice("abcd"), rng.choice(members[: rng.choice((3, 14))])
        if rng.random() < 0.55:
            compact.add(key, member)
            plain.setdefault(key, set()).add(member)
        else:
            compact.discard(key, member)
            plain.get(key, set()).discard(member)
            if not plain.get(key, True):
                del plain[key]
        assert set(compact) == set(plain) and len(compact) == len(plain)
        for k in "abcd":
            assert set(compact.get(k)) == plain.get(k, set())
            assert len(compact.get(k)) == len(plain.get(k, ()))
            assert (k in compact) == (k in plain)
            forms.add(type(compact._data.get(k)))
    assert forms == {str, tuple, set, type(None)}
    assert compact.get("missing", None) is None


def test_count_map_equals_a_dict_of_counters_under_random_changes() -> None:
    rng = random.Random(11)
    compact, plain = CountMap(), dict[str, Counter[str]]()
    for _ in range(5000):
        key, member = rng.choice("abc"), rng.choice(["x", "y"])
        held = plain.get(key, Counter())
        sign = 1 if rng.random() < 0.5 or held[member] == 0 else -1
        compact.bump(key, member, sign)
        held[member] += sign
        held = +held
        if held:
            plain[key] = held
        else:
            plain.pop(key, None)
        assert set(compact) == set(plain)
        for k in "abc":
            assert set(compact.get(k)) == set(plain.get(k, ()))  # the distinct members
            assert len(compact.get(k)) == len(plain.get(k, ()))


def test_a_lone_member_is_held_without_a_container() -> None:
    compact = SetMap()
    compact.add("k", "only")
    assert compact.get("k") == ("only",)
    compact.add("k", "two")
    compact.discard("k", "two")
    assert compact.get("k") == ("only",)  # back to the lone form
