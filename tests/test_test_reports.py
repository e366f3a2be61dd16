"""Test-report parsing on reports written by a real pytest run (JSON and JUnit XML)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from kloros_stream.analysis.test_failures import FailureBook
from kloros_stream.analysis.test_reports import (
    CaseResult,
    CollectionError,
    ParsedReport,
    ReportIncomplete,
    ReportInvalid,
    dotted_to_path,
    junit_nodeid,
    parse_junit_xml,
    parse_pytest_json,
    parse_report,
    summarize_error,
)

SAMPLE_TESTS = """
import pytest

def test_pass():
    assert True

def test_fail():
    x = 1
    assert x == 2, "x should be 2"

@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")

def test_setup_error(broken):
    pass

@pytest.fixture
def bad_teardown():
    yield 1
    raise ValueError("teardown went wrong")

def test_teardown_error(bad_teardown):
    pass

@pytest.mark.skip(reason="nope")
def test_skip():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert 0

@pytest.mark.parametrize("v", ["a.b", "c::d", 3])
def test_param(v):
    assert v != 3

class TestGroup:
    def test_in_class(self):
        assert 1

    class TestNested:
        def test_nested(self):
            raise KeyError("k")
"""

EXPECTED = {
    "tests/test_a.py::test_pass": "passed",
    "tests/test_a.py::test_fail": "failed",
    "tests/test_a.py::test_setup_error": "error",
    "tests/test_a.py::test_teardown_error": "error",
    "tests/test_a.py::test_skip": "skipped",
    "tests/test_a.py::test_xfail": "xfailed",
    "tests/test_a.py::test_param[a.b]": "passed",
    "tests/test_a.py::test_param[c::d]": "passed",
    "tests/test_a.py::test_param[3]": "failed",
    "tests/test_a.py::TestGroup::test_in_class": "passed",
    "tests/test_a.py::TestGroup::TestNested::test_nested": "failed",
}
BROKEN = "tests/sub/test_broken.py"


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Run pytest once on a sample project, writing every report format."""
    proj = tmp_path_factory.mktemp("proj")
    (proj / "tests" / "sub").mkdir(parents=True)
    (proj / "tests" / "test_a.py").write_text(SAMPLE_TESTS)
    (proj / "tests" / "sub" / "test_broken.py").write_text(
        "import nonexistent_module_xyz\n\ndef test_never():\n    pass\n"
    )
    out = proj / "out"
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", "."]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    runs = {
        "full": ["--continue-on-collection-errors", "tests"],
        "interrupted": ["tests"],
        "xunit1": ["-o", "junit_family=xunit1", "tests/test_a.py"],
    }
    for name, args in runs.items():
        cmd = [*base, f"--junitxml={out}/{name}.xml", *args]
        if name != "xunit1":
            cmd[len(base) : len(base)] = ["--json-report", f"--json-report-file={out}/{name}.json"]
        subprocess.run(cmd, cwd=proj, env=env, capture_output=True, timeout=120, check=False)
    return {p.name: p.read_bytes() for p in out.iterdir()}


def outcomes(report: ParsedReport) -> dict[str, str]:
    return {c.nodeid: c.outcome for c in report.cases}


@pytest.mark.parametrize("name", ["full.json", "full.xml"])
def test_real_report_outcomes_and_nodeids(reports: dict[str, bytes], name: str) -> None:
    report = parse_report(reports[name], name)
    assert outcomes(report) == EXPECTED
    assert report.created is not None
    assert [e.nodeid for e in report.collection_errors] == [BROKEN]
    assert "nonexistent_module_xyz" in report.collection_errors[0].error
    by_id = {c.nodeid: c for c in report.cases}
    assert "x should be 2" in (by_id["tests/test_a.py::test_fail"].error or "")
    assert "fixture exploded" in (by_id["tests/test_a.py::test_setup_error"].error or "")
    assert "teardown went wrong" in (by_id["tests/test_a.py::test_teardown_error"].error or "")
    assert by_id["tests/test_a.py::test_pass"].error is None
    assert all(c.duration is not None and c.duration >= 0 for c in report.cases)
    assert {"tests", "tests/test_a.py", "tests/test_a.py::TestGroup"} <= report.collected


def test_interrupted_run_has_collection_error_and_no_results(reports: dict[str, bytes]) -> None:
    for name in ("interrupted.json", "interrupted.xml"):
        report = parse_report(reports[name], name)
        assert report.cases == []
        assert [e.nodeid for e in report.collection_errors] == [BROKEN]
    # The JSON report lists the collectors that did collect: they are not in error.
    assert "tests/test_a.py" in parse_report(reports["interrupted.json"], "x.json").collected


def test_xunit1_file_attribute_gives_exact_nodeids(reports: dict[str, bytes]) -> None:
    report = parse_junit_xml(reports["xunit1.xml"])
    assert outcomes(report) == EXPECTED


@pytest.mark.parametrize("name", ["full.json", "full.xml"])
def test_every_truncation_is_incomplete(reports: dict[str, bytes], name: str) -> None:
    data = reports[name]
    for cut in range(0, len(data) - 1, 3):
        with pytest.raises(ReportIncomplete):
            parse_report(data[:cut], name)


@pytest.mark.parametrize(
    "data",
    [
        os.urandom(4096).replace(b"{", b"").replace(b"<", b""),
        b'{"hello": "world"}',
        b"[1, 2, 3]",
        b'{"tests": 5}',
        b"<html><body>no</body></html>",
        b"<testsuites></testsuite>",
        b'{"a": 1}}',
        b"\xff\xfe\x00garbage{",
    ],
)
def test_garbage_is_invalid_not_incomplete(data: bytes) -> None:
    with pytest.raises(ReportInvalid):
        parse_report(data, "report.json" if data.lstrip()[:1] != b"<" else "report.xml")


def test_content_sniffing_without_suffix(reports: dict[str, bytes]) -> None:
    assert parse_report(reports["full.json"]).format == "pytest-json"
    assert parse_report(reports["full.xml"]).format == "junit"
    with pytest.raises(ReportInvalid):
        parse_report(b"plain text")


def test_multiple_testsuites_and_single_suite_root() -> None:
    xml = textwrap.dedent("""\
        <?xml version="1.0"?>
        <testsuites>
          <testsuite name="a" timestamp="2025-01-01T10:00:00+00:00">
            <testcase classname="pkg.test_one" name="test_ok" time="0.5"/>
            <testcase classname="pkg.test_one.TestThing" name="test_bad" time="1.25">
              <failure message="boom">trace</failure>
            </testcase>
          </testsuite>
          <testsuite name="b" timestamp="2025-01-01T11:00:00+00:00">
            <testcase classname="pkg.test_two" name="test_err"><error>E   OSError: x</error>
            </testcase>
            <testcase classname="pkg.test_two" name="test_skipped"><skipped/></testcase>
          </testsuite>
        </testsuites>
    """).encode()
    report = parse_junit_xml(xml)
    assert outcomes(report) == {
        "pkg/test_one.py::test_ok": "passed",
        "pkg/test_one.py::TestThing::test_bad": "failed",
        "pkg/test_two.py::test_err": "error",
        "pkg/test_two.py::test_skipped": "skipped",
    }
    assert report.created == pytest.approx(1735729200.0)  # the latest suite start
    errors = {c.nodeid: c.error for c in report.cases}
    assert errors["pkg/test_two.py::test_err"] == "OSError: x"
    assert errors["pkg/test_one.py::TestThing::test_bad"] == "boom"
    single = parse_junit_xml(b'<testsuite><testcase classname="m" name="t"/></testsuite>')
    assert outcomes(single) == {"m.py::t": "passed"}
    assert single.created is None


def test_duplicate_nodeid_keeps_worst_outcome() -> None:
    xml = (
        b"<testsuites><testsuite><testcase classname='m' name='t'/></testsuite>"
        b"<testsuite><testcase classname='m' name='t'><failure message='f'/></testcase>"
        b"</testsuite><testsuite><testcase classname='m' name='t'/></testsuite></testsuites>"
    )
    assert outcomes(parse_junit_xml(xml)) == {"m.py::t": "failed"}


def test_json_tolerates_odd_entries() -> None:
    doc = (
        b'{"created": 5, "tests": [null, {"nodeid": "a.py::t"}, {"nodeid": "a.py::u",'
        b' "outcome": "failed", "call": {"outcome": "failed", "longrepr": "x\\nE   Boom"}}],'
        b' "collectors": [{"nodeid": "", "outcome": "failed", "longrepr": "conftest"}, 7]}'
    )
    report = parse_pytest_json(doc)
    assert [(c.nodeid, c.outcome, c.error) for c in report.cases] == [("a.py::u", "failed", "Boom")]
    assert report.created == 5.0
    assert [e.nodeid for e in report.collection_errors] == ["<session>"]


@pytest.mark.parametrize(
    ("classname", "name", "file", "expected"),
    [
        ("tests.test_a", "test_x", None, "tests/test_a.py::test_x"),
        (
            "tests.test_a.TestK.TestN",
            "test_x[1.5]",
            None,
            "tests/test_a.py::TestK::TestN::test_x[1.5]",
        ),
        ("tests.test_a.TestK", "t", "tests/test_a.py", "tests/test_a.py::TestK::t"),
        ("tests.test_a", "t", "tests/test_a.py", "tests/test_a.py::t"),
        ("", "standalone", None, "standalone"),
        ("Top", "t", None, "Top.py::t"),
    ],
)
def test_junit_nodeid_mapping(classname: str, name: str, file: str | None, expected: str) -> None:
    assert junit_nodeid(classname, name, file) == expected


def test_summarize_error_prefers_message_then_e_lines() -> None:
    assert summarize_error("msg", "E   other") == "msg"
    assert summarize_error(None, "code\nE   ValueError: v\nE   more\n\nfile.py:3") == (
        "ValueError: v\nmore"
    )
    assert summarize_error(None, "only\nlast line") == "last line"
    assert summarize_error(None, ("p", 1, "Skipped: why")) == "Skipped: why"
    assert summarize_error(None, None) is None
    assert len(summarize_error("x" * 5000, None) or "") == 1000
    assert dotted_to_path("a.b.test_c") == "a/b/test_c.py"


def test_parse_real_report_file_from_disk(tmp_path: Path, reports: dict[str, bytes]) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(reports["full.json"])
    assert outcomes(parse_report(path.read_bytes(), path.name)) == EXPECTED


# -- FailureBook ----------------------------------------------------------------------------


def report_of(created: float | None = None, **cases: str) -> ParsedReport:
    out = ParsedReport("junit", created)
    out.cases = [
        CaseResult(n, o, "boom" if o in ("failed", "error") else None, 0.1)
        for n, o in cases.items()
    ]
    return out


def changes(book: FailureBook, report: ParsedReport, at: float) -> list[tuple[bool, str]]:
    return [(c.opened, c.nodeid) for c in book.apply(report, at, "r.xml")]


def test_book_opens_and_resolves_in_time_order() -> None:
    book = FailureBook()
    assert changes(book, report_of(a="failed", b="passed", c="error", d="skipped"), 10) == [
        (True, "a"),
        (True, "c"),
    ]
    opened = book.apply(report_of(a="failed"), 11, "r2.xml")[0]
    assert opened.facts == {
        "kind": "test",
        "outcome": "failed",
        "error": "boom",
        "duration": 0.1,
        "report": "r2.xml",
        "at": 11,
    }
    assert changes(book, report_of(a="passed", c="skipped"), 12) == [(False, "a")]
    assert list(book.open) == ["c"]
    # An older report does not reopen a, and does not resolve c with an old pass either.
    assert changes(book, report_of(a="failed", c="passed"), 11.5) == [(False, "c")]
    assert changes(book, report_of(a="failed"), 9) == []
    assert list(book.open) == []


def test_book_same_run_seen_twice_changes_nothing() -> None:
    book = FailureBook()
    rep = report_of(a="failed", b="passed")
    assert changes(book, rep, 5) == [(True, "a")]
    assert changes(book, rep, 5) == []
    assert changes(book, report_of(a="xfailed"), 6) == [(False, "a")]


def test_book_collection_errors_resolve_when_collected() -> None:
    book = FailureBook()
    rep = report_of()
    rep.collection_errors = [CollectionError("tests/t.py", "ImportError")]
    assert changes(book, rep, 1) == [(True, "tests/t.py")]
    assert book.open["tests/t.py"]["kind"] == "collection"
    assert changes(book, report_of(**{"tests/u.py::x": "passed"}), 2) == []
    fixed = report_of(**{"tests/t.py::x": "failed"})
    fixed.collected = {"tests", "tests/t.py"}
    assert changes(book, fixed, 3) == [(True, "tests/t.py::x"), (False, "tests/t.py")]


def test_book_is_bounded_and_round_trips() -> None:
    book = FailureBook(max_open=3, max_tracked=5)
    for i in range(10):
        book.apply(report_of(**{f"t{i}": "failed"}), i, "r")
    assert list(book.open) == ["t7", "t8", "t9"] and book.dropped == 7
    assert len(book._verdict_at) == 5
    data = orjson.loads(orjson.dumps(book.to_json()))
    data["open"].append(["bad", {"kind": "weird", "at": 1}])
    data["open"].append("junk")
    again = FailureBook(max_open=3)
    assert again.load_json(data) == 3
    assert changes(again, report_of(t8="failed"), 8) == []  # same run: nothing new
    assert changes(again, report_of(t8="failed"), 7) == []  # older: ignored
    assert changes(again, report_of(t8="passed"), 20) == [(False, "t8")]
    assert FailureBook().load_json({"version": 0}) == 0
