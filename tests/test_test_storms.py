"""Failure causes from pytest's failure text, and the gaps planned for open failures."""

from __future__ import annotations

from kloros_stream.analysis.test_storms import (
    GapPlan,
    failure_cause,
    failure_detail,
    plan_gaps,
)

FIXTURE_LONG = """fixturedef = <FixtureDef argname='db'>

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(fixturedef, request):
>               return (yield)

/home/u/venv/lib/python3.11/site-packages/pytest_asyncio/plugin.py:934:
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _

    @pytest.fixture
    def db():
>       raise ConnectionError("database at 10.0.0.5:5432 refused")
E       ConnectionError: database at 10.0.0.5:5432 refused

tests/conftest.py:5: ConnectionError"""

FIXTURE_SHORT = """/srv/o/venv/lib/python3.12/site-packages/pytest_asyncio/plugin.py:934: in setup
    return (yield)
tests/conftest.py:5: in db
    raise ConnectionError("database at 10.0.0.9:5432 refused")
E   ConnectionError: database at 10.0.0.9:5432 refused"""

ASSERT_LONG = """def test_dict():
>       assert {"a": 1, "b": 2} == {"a": 1, "b": 3}
E       AssertionError: assert {'a': 1, 'b': 2} == {'a': 1, 'b': 3}
E
E         Differing items:
E         {'b': 2} != {'b': 3}

tests/test_a.py:11: AssertionError"""

IMPORT_A = """ImportError while importing test module '/x/tests/test_b.py'.
Traceback:
/usr/lib/python3.11/importlib/__init__.py:126: in import_module
    return _bootstrap._gcd_import(name[level:], package, level)
tests/test_b.py:1: in <module>
    import nonexistent_mod
E   ModuleNotFoundError: No module named 'nonexistent_mod'"""


def test_long_and_short_styles_of_one_broken_fixture_share_a_cause() -> None:
    long, short = failure_cause(FIXTURE_LONG), failure_cause(FIXTURE_SHORT)
    assert long is not None and short is not None
    assert long.fingerprint == short.fingerprint
    assert long.title == "ConnectionError at tests/conftest.py:5"


def test_different_crash_lines_are_different_causes() -> None:
    other = ASSERT_LONG.replace("tests/test_a.py:11", "tests/test_a.py:20")
    a, b = failure_cause(ASSERT_LONG), failure_cause(other)
    assert a is not None and b is not None and a.fingerprint != b.fingerprint
    assert a.exc_type == "AssertionError"


def test_a_missing_import_is_one_cause_for_every_module() -> None:
    other = IMPORT_A.replace("test_b.py", "test_c.py")
    a, b = failure_cause(IMPORT_A), failure_cause(other)
    assert a is not None and b is not None and a.fingerprint == b.fingerprint
    assert a.title == "ModuleNotFoundError: No module named 'nonexistent_mod'"


def test_a_bare_assert_message_without_location_is_no_cause() -> None:
    assert failure_cause(None, "assert False") is None
    assert failure_cause("", "AssertionError: x broke") is None
    cause = failure_cause(None, "ValueError: bad id 42")
    other = failure_cause(None, "ValueError: bad id 7")
    assert cause is not None and other is not None and cause.fingerprint == other.fingerprint


def test_detail_is_the_statement_and_the_diff() -> None:
    detail = failure_detail(ASSERT_LONG)
    assert detail.statement == 'assert {"a": 1, "b": 2} == {"a": 1, "b": 3}'
    assert detail.explanation is not None and "{'b': 2} != {'b': 3}" in detail.explanation


def entries(**causes: str | None) -> dict[str, dict[str, object]]:
    return {n: {"cause": c, "cause_title": f"T{c}"} for n, c in causes.items()}


def test_plan_groups_at_the_threshold_and_keeps_singles_by_nodeid() -> None:
    open_ = entries(a="X", b="X", c="X", d="Y", e=None)
    planned = plan_gaps(open_, 3)
    assert {g.name for g in planned.values()} == {"TX", "d", "e"}
    group = next(g for g in planned.values() if g.fingerprint)
    assert group.tests == ("a", "b", "c")
    assert {g.name for g in plan_gaps(open_, 0).values()} == {"a", "b", "c", "d", "e"}


def test_a_group_lives_until_all_its_tests_pass() -> None:
    plan = GapPlan(3)
    publish, resolve = plan.update(entries(a="X", b="X", c="X"), {"a", "b", "c"})
    assert [g.name for g in publish] == ["TX"] and resolve == []
    publish, resolve = plan.update(entries(a="X"), set())
    assert [g.tests for g in publish] == [("a",)] and resolve == []
    publish, resolve = plan.update({}, set())
    assert publish == [] and [g.name for g in resolve] == ["TX"]


def test_singles_that_become_a_storm_are_resolved_into_the_group() -> None:
    plan = GapPlan(3)
    publish, _ = plan.update(entries(a="X"), {"a"})
    assert [g.name for g in publish] == ["a"]
    publish, resolve = plan.update(entries(a="X", b="X", c="X"), {"a", "b", "c"})
    assert [g.name for g in publish] == ["TX"] and [g.name for g in resolve] == ["a"]
    saved = plan.to_json()
    restored = GapPlan(3)
    restored.load_json(saved, entries(a="X", b="X", c="X"))
    assert restored.published == plan.published
