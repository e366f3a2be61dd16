"""A real pytest storm (a broken fixture under 200 tests) is one question in the feed.

The suite is written to a temp dir at test time and run by real pytest with both
``--junitxml`` and pytest-json-report; a real ``kloros-stream run`` watches the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.pytest_runs import run_pytest
from tests.support.service import ServiceProcess, questions_of, write_config

BROKEN_FIXTURE = """import pytest

@pytest.fixture
def db():
    raise ConnectionError("database at 10.0.0.5:5432 refused")
"""
GOOD_FIXTURE = """import pytest

@pytest.fixture
def db():
    return {"connected": True}
"""
STORM = """import pytest

@pytest.mark.parametrize("i", range(200))
def test_query(db, i):
    assert db["connected"]
"""
OTHERS = """def test_arithmetic():
    assert 1 + 1 == 3

def test_mapping():
    assert {"a": 1, "b": 2} == {"a": 1, "b": 3}

def test_fine():
    assert True
"""


def run_into_results(project: Path, results: Path, run: int) -> None:
    """Real pytest over the project; reports land atomically in ``results``."""
    staging = project / f".out{run}"
    run_pytest(
        project,
        f"--junitxml={staging}/junit.xml",
        "--json-report",
        f"--json-report-file={staging}/report.json",
        "tests",
    )
    target = results / f"run{run}"
    staging.rename(target)


def by_name(qs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {q["metadata"]["gap_name"]: q for q in questions_of(qs, "test_failure")}


@pytest.mark.e2e
def test_e2e_a_200_test_storm_is_one_question(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "tests" / "conftest.py").write_text(BROKEN_FIXTURE)
    (project / "tests" / "test_storm.py").write_text(STORM)
    (project / "tests" / "test_others.py").write_text(OTHERS)
    results = tmp_path / "var" / "results"
    results.mkdir(parents=True)
    config = write_config(tmp_path, {"monitors": {"test": {"results_dir": "var/results"}}})
    with ServiceProcess(config) as svc:
        run_into_results(project, results, 1)
        qs = svc.wait_feed(lambda qs: len(by_name(qs)) >= 3, timeout=30)
        named = by_name(qs)
        assert set(named) == {
            "ConnectionError at tests/conftest.py:5",
            "tests/test_others.py::test_arithmetic",
            "tests/test_others.py::test_mapping",
        }
        storm = named["ConnectionError at tests/conftest.py:5"]
        facts = storm["metadata"]["facts"]
        assert facts["count"] == 200 and len(facts["tests"]) == 200
        assert facts["tests"][0].startswith("tests/test_storm.py::test_query[")
        assert len(facts["fingerprint"]) == 32
        assert any("raise ConnectionError" in line for line in storm["evidence"])
        mapping = named["tests/test_others.py::test_mapping"]
        assert any("{'b': 2} != {'b': 3}" in line for line in mapping["evidence"])
        assert "fingerprint" not in mapping["metadata"]["facts"]
        health = svc.health()["monitors"]["test"]
        assert health["state"] == "running"

        # The fixture is fixed: the whole group resolves; the other failures stay open.
        (project / "tests" / "conftest.py").write_text(GOOD_FIXTURE)
        run_into_results(project, results, 2)
        qs = svc.wait_feed(
            lambda qs: (
                by_name(qs)["ConnectionError at tests/conftest.py:5"]["status"] == "resolved"
            ),
            timeout=30,
        )
        named = by_name(qs)
        assert named["tests/test_others.py::test_arithmetic"]["status"] == "ready"
        assert len(named) == 3
