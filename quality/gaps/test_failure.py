"""test_failure: one question per cause of failing tests, from real pytest runs.

The corpus is built at run time (``kind = "none"``): a test project written here is run by
real pytest (the harness's own interpreter, with ``--junitxml`` and pytest-json-report), and
both reports go through the test monitor's own path: :func:`parse_report`,
:class:`FailureBook`, :class:`GapPlan` with the default ``group_threshold``. Its failures
have known causes: a broken fixture under a 200-test parametrised storm, a shared helper
that raises for 30 tests in three modules, a missing module imported by 12 test modules
(collection errors), a parametrised test failing at one line for 4 inputs, and six
independent assertion failures (each its own cause). Items are nodeids, ``group`` the
cause; passing tests are labelled false (no question may hold them).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from kloros_stream.analysis.test_failures import FailureBook
from kloros_stream.analysis.test_reports import parse_report
from kloros_stream.analysis.test_storms import GapPlan
from kloros_stream.config import TestMonitorConfig
from tests.support.pytest_runs import run_pytest

from ..corpora import Corpus, CorpusError
from ..scoring import Outcome

GAP_TYPE = "test_failure"

FILES = {
    "conftest.py": """
import pytest

@pytest.fixture
def db():
    raise ConnectionError("database at 10.0.0.5:5432 refused")

@pytest.fixture
def cache():
    return {}
""",
    "helpers.py": """
def load_user(store, uid):
    return store["users"][uid]
""",
    "test_storm.py": """
import pytest

@pytest.mark.parametrize("i", range(200))
def test_query(db, i):
    assert db.execute(i)
""",
    "test_independent.py": """
def test_sum():
    assert sum([1, 2]) == 4

def test_title():
    assert "kloros".title() == "KLoROS"

def test_sorted():
    assert sorted([3, 1]) == [3, 1]

def test_dict():
    assert {"a": 1} == {"a": 2}

def test_len():
    assert len("abc") == 4

def test_upper():
    assert "x".upper() == "x"

def test_fine(cache):
    assert cache == {}
""",
    "test_params.py": """
import pytest

@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_even(n):
    assert n > 10

@pytest.mark.parametrize("n", [5, 6])
def test_positive(n):
    assert n > 0
""",
}
for _m in range(3):
    FILES[f"test_users_{_m}.py"] = "from helpers import load_user\n\n" + "".join(
        f"def test_user_{_m}_{i}():\n    assert load_user({{'users': {{}}}}, {i})\n\n"
        for i in range(10)
    )
PLUGIN_TEST = "import kloros_quality_missing_plugin\n\ndef test_x():\n    pass\n"
for _m in range(12):
    FILES[f"test_plugin_{_m}.py"] = PLUGIN_TEST


def causes() -> dict[str, str | None]:
    """nodeid -> cause id (None: passes) of every test and collector the project holds."""
    out: dict[str, str | None] = {}
    out.update({f"tests/test_storm.py::test_query[{i}]": "broken_db_fixture" for i in range(200)})
    for name in ("sum", "title", "sorted", "dict", "len", "upper"):
        out[f"tests/test_independent.py::test_{name}"] = f"assert_{name}"
    out["tests/test_independent.py::test_fine"] = None
    out.update({f"tests/test_params.py::test_even[{n}]": "one_line_4_inputs" for n in (1, 2, 3, 4)})
    out.update({f"tests/test_params.py::test_positive[{n}]": None for n in (5, 6)})
    for m in range(3):
        out.update(
            {f"tests/test_users_{m}.py::test_user_{m}_{i}": "load_user_helper" for i in range(10)}
        )
    out.update({f"tests/test_plugin_{m}.py": "missing_plugin" for m in range(12)})
    return out


def _run(project: Path, fmt: str) -> bytes:
    report = project / f"report.{'xml' if fmt == 'junit' else 'json'}"
    args = (
        [f"--junitxml={report}"]
        if fmt == "junit"
        else ["--json-report", f"--json-report-file={report}"]
    )
    run_pytest(
        project,
        "--continue-on-collection-errors",
        "-o",
        "pythonpath=tests",
        *args,
        "tests",
        timeout=600,
    )
    if not report.exists():
        raise CorpusError(f"pytest wrote no {fmt} report")
    return report.read_bytes()


def evaluate(corpus: Corpus, tree: Path | None) -> Outcome:
    project = Path(tempfile.mkdtemp(prefix="kloros-quality-tests-"))
    try:
        (project / "tests").mkdir()
        (project / "pytest.ini").write_text("[pytest]\n")
        for name, text in FILES.items():
            (project / "tests" / name).write_text(text.lstrip("\n"))
        reports = {fmt: _run(project, fmt) for fmt in ("junit", "json")}
    finally:
        shutil.rmtree(project, ignore_errors=True)
    # Both reports of the run land in one results directory: one book, as in the monitor.
    book, plan = FailureBook(), GapPlan(TestMonitorConfig().group_threshold)
    for at, (fmt, data) in enumerate(reports.items(), 1):
        changes = book.apply(parse_report(data, f"report.{fmt}"), float(at), fmt)
        plan.update(book.open, {c.nodeid for c in changes if c.opened})
    groups = {gap.key: frozenset(gap.tests) for gap in plan.published.values()}
    reported = {nodeid for tests in groups.values() for nodeid in tests}
    size = {
        "tests": sum(1 for c in causes() if "::" in c),
        "collectors": 12,
        "failing": sum(1 for c in causes().values() if c),
        "questions": len(groups),
    }
    return Outcome(reported=frozenset(reported), size=size, groups=groups)
