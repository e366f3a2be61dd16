"""Parse test reports into outcomes: pytest-json-report JSON and JUnit XML (pytest --junitxml).

Pure: bytes in, :class:`ParsedReport` out; no I/O, no clock.

* A truncated or half-written report (empty file, JSON or XML ending early) raises
  :class:`ReportIncomplete`: the writer is not done yet, parse again on its next write.
* Anything else that is not a usable report (binary garbage, other JSON, malformed XML)
  raises :class:`ReportInvalid`. Both derive from :class:`ReportError`.

JUnit names are mapped to pytest-like nodeids (``path/to/test_mod.py::Class::test[p]``):

* pytest writes ``classname`` = the nodeid's path with ``/`` as ``.`` and without ``.py``,
  followed by the class names; ``name`` = the function name with its parameters.
* With a ``file`` attribute (``junit_family=xunit1``) the module path is exact: the
  remainder of ``classname`` after the module's dotted path are the classes.
* Without it (pytest's default ``xunit2``) the trailing ``classname`` parts that start with
  an upper-case letter are taken as classes (pytest collects ``Test*`` classes), the rest
  is the module path. A dotted directory name or a lower-case class name makes this
  mapping differ from pytest's own nodeid; it stays stable across reports, which is what
  gap identity needs.
* A collection error is a ``testcase`` with an empty ``classname`` whose ``error`` says
  ``collection failure``: its ``name`` is the collector's dotted path, mapped back to
  ``path.py``. Any other case with an empty ``classname`` keeps ``name`` as its nodeid.

A nodeid that occurs more than once in one report keeps its worst outcome
(``error``/``failed`` before the others).

:class:`~kloros_stream.analysis.test_failures.FailureBook` folds parsed reports into the
set of open failures.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

from .test_storms import Cause, FailureDetail, failure_cause, failure_detail

FAILING = frozenset({"failed", "error"})
"""Outcomes that open a ``test_failure`` gap."""
PASSING = frozenset({"passed", "xfailed", "xpassed"})
"""Outcomes that resolve one (an expected failure is intended). ``skipped`` does neither."""

MAX_ERROR_CHARS = 1000
_E_LINE = re.compile(r"^E\s+(.*)$", re.MULTILINE)
# expat error codes that mean "the document stopped early" rather than "it is wrong":
# 3 no element found, 5 unclosed token, 6 partial character, 20 unclosed CDATA section.
_XML_TRUNCATED = frozenset({3, 5, 6, 20})
_SEVERITY = {"error": 3, "failed": 2, "xpassed": 1, "passed": 1, "xfailed": 1, "skipped": 0}


class ReportError(ValueError):
    """The bytes are not a usable test report."""


class ReportIncomplete(ReportError):
    """The report is truncated or still being written: retry on its next write."""


class ReportInvalid(ReportError):
    """The file is complete but not a pytest-json-report or JUnit XML report."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One test's outcome in a report."""

    nodeid: str
    outcome: str
    """passed, failed, error, skipped, xfailed or xpassed."""
    error: str | None = None
    """Short error summary (crash message or the ``E`` lines), for failing outcomes."""
    duration: float | None = None
    """Seconds, setup + call + teardown."""
    cause: Cause | None = None
    """What made it fail (see :mod:`.test_storms`), for failing outcomes."""
    detail: FailureDetail | None = None

    @property
    def failing(self) -> bool:
        return self.outcome in FAILING

    @property
    def passing(self) -> bool:
        return self.outcome in PASSING


@dataclass(frozen=True, slots=True)
class CollectionError:
    """A collector (module, package, directory) that failed to collect."""

    nodeid: str
    error: str
    cause: Cause | None = None
    detail: FailureDetail | None = None


@dataclass(slots=True)
class ParsedReport:
    format: Literal["pytest-json", "junit"]
    created: float | None
    """Epoch seconds the report (or its run) was made, if the report says so."""
    cases: list[CaseResult] = field(default_factory=list)
    collection_errors: list[CollectionError] = field(default_factory=list)
    collected: set[str] = field(default_factory=set)
    """Collector nodeids known to have collected fine (resolve their collection errors)."""


def parse_report(data: bytes, name: str = "") -> ParsedReport:
    """Parse a report, choosing the format by ``name``'s suffix or else by the content."""
    lowered = name.lower()
    if lowered.endswith(".xml"):
        return parse_junit_xml(data)
    if lowered.endswith(".json"):
        return parse_pytest_json(data)
    head = data.lstrip()[:1]
    if head == b"<":
        return parse_junit_xml(data)
    if head in (b"{", b""):
        return parse_pytest_json(data)
    raise ReportInvalid("neither JSON nor XML")


# -- pytest-json-report ---------------------------------------------------------------------


def parse_pytest_json(data: bytes) -> ParsedReport:
    """Parse a pytest-json-report document."""
    doc = _load_json(data)
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("tests", []), list)
        or ("tests" not in doc and "collectors" not in doc)
    ):
        raise ReportInvalid("JSON is not a pytest-json-report (no tests or collectors)")
    created = doc.get("created")
    report = ParsedReport(
        format="pytest-json",
        created=float(created) if isinstance(created, (int, float)) else None,
    )
    for raw in doc.get("collectors") or []:
        if not isinstance(raw, dict) or not isinstance(raw.get("nodeid"), str):
            continue
        nodeid = raw["nodeid"] or "<session>"
        if raw.get("outcome") == "failed":
            longrepr = raw.get("longrepr")
            text = longrepr if isinstance(longrepr, str) else None
            report.collection_errors.append(
                CollectionError(
                    nodeid,
                    summarize_error(None, longrepr) or "",
                    failure_cause(text),
                    failure_detail(text),
                )
            )
        else:
            report.collected.add(nodeid)
    cases = [c for c in map(_json_case, doc.get("tests") or []) if c is not None]
    report.cases = _worst_per_nodeid(cases)
    report.collected |= _ancestors(c.nodeid for c in report.cases)
    return report


def _load_json(data: bytes) -> Any:
    if not data.strip():
        raise ReportIncomplete("empty file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data":
            raise ReportIncomplete("ends inside a UTF-8 character") from None
        raise ReportInvalid(f"not UTF-8: {err.reason}") from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as err:
        if err.pos >= len(text.rstrip()):
            raise ReportIncomplete(f"JSON ends early: {err.msg}") from None
        raise ReportInvalid(f"invalid JSON: {err}") from None


def _json_case(raw: Any) -> CaseResult | None:
    if not isinstance(raw, dict):
        return None
    nodeid, outcome = raw.get("nodeid"), raw.get("outcome")
    if not isinstance(nodeid, str) or not nodeid or not isinstance(outcome, str):
        return None
    stages = [raw.get(s) for s in ("setup", "call", "teardown")]
    stages = [s for s in stages if isinstance(s, dict)]
    durations = [s["duration"] for s in stages if isinstance(s.get("duration"), (int, float))]
    error = cause = detail = None
    if outcome in FAILING:
        failed = next((s for s in stages if s.get("outcome") == "failed"), {})
        crash = failed.get("crash")
        message = crash.get("message") if isinstance(crash, dict) else None
        longrepr = failed.get("longrepr")
        error = summarize_error(message, longrepr) or outcome
        text = longrepr if isinstance(longrepr, str) else None
        cause = failure_cause(text, message if isinstance(message, str) else None)
        detail = failure_detail(text)
    duration = round(sum(durations), 6) if durations else None
    return CaseResult(nodeid, outcome, error, duration, cause, detail)


# -- JUnit XML ------------------------------------------------------------------------------


def parse_junit_xml(data: bytes) -> ParsedReport:
    """Parse JUnit XML: a ``testsuites`` root with any number of suites, or one ``testsuite``."""
    if not data.strip():
        raise ReportIncomplete("empty file")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        if err.code in _XML_TRUNCATED:
            raise ReportIncomplete(f"XML ends early: {err}") from None
        raise ReportInvalid(f"invalid XML: {err}") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise ReportInvalid(f"XML root <{root.tag}> is not testsuites/testsuite")
    suites = [root] if root.tag == "testsuite" else []
    suites += list(root.iter("testsuite")) if root.tag == "testsuites" else []
    stamps = [t for t in (_iso_ts(s.get("timestamp")) for s in suites) if t is not None]
    report = ParsedReport(format="junit", created=max(stamps) if stamps else None)
    cases: list[CaseResult] = []
    for case in root.iter("testcase"):
        _junit_case(case, report, cases)
    report.cases = _worst_per_nodeid(cases)
    report.collected |= _ancestors(c.nodeid for c in report.cases)
    return report


def _junit_case(case: ET.Element, report: ParsedReport, cases: list[CaseResult]) -> None:
    classname, name = case.get("classname", ""), case.get("name", "")
    if not name:
        return
    failure, error, skipped = case.find("failure"), case.find("error"), case.find("skipped")
    if not classname and error is not None and error.get("message") == "collection failure":
        nodeid = dotted_to_path(name)
        summary = summarize_error(None, error.text) or "collection failure"
        report.collection_errors.append(
            CollectionError(nodeid, summary, failure_cause(error.text), failure_detail(error.text))
        )
        return
    nodeid = junit_nodeid(classname, name, case.get("file"))
    if failure is not None:
        outcome, problem = "failed", failure
    elif error is not None:
        outcome, problem = "error", error
    elif skipped is not None:
        outcome = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
        problem = None
    else:
        outcome, problem = "passed", None
    summary = cause = detail = None
    if problem is not None:
        summary = summarize_error(problem.get("message"), problem.text) or outcome
        cause = failure_cause(problem.text, _junit_message(problem.get("message")))
        detail = failure_detail(problem.text)
    cases.append(CaseResult(nodeid, outcome, summary, _float(case.get("time")), cause, detail))


def _junit_message(message: str | None) -> str | None:
    """pytest's ``failed on setup with "X: y"`` wrapper removed."""
    if message and (m := re.match(r'^failed on \w+ with "(.*)"$', message, re.DOTALL)):
        return m.group(1)
    return message


def junit_nodeid(classname: str, name: str, file: str | None = None) -> str:
    """A pytest-like nodeid for a JUnit ``testcase`` (see the module docstring)."""
    if not classname:
        return name
    parts = classname.split(".")
    if file:
        module_dotted = re.sub(r"\.py$", "", file).replace("/", ".")
        if classname == module_dotted:
            return f"{file}::{name}"
        if classname.startswith(module_dotted + "."):
            classes = classname[len(module_dotted) + 1 :].split(".")
            return "::".join([file, *classes, name])
    split = len(parts)
    while split > 1 and parts[split - 1][:1].isupper():
        split -= 1
    module = "/".join(parts[:split]) + ".py"
    return "::".join([module, *parts[split:], name])


def dotted_to_path(dotted: str) -> str:
    """``tests.sub.test_x`` -> ``tests/sub/test_x.py`` (pytest's junit collector names)."""
    return dotted.replace(".", "/") + ".py"


# -- helpers --------------------------------------------------------------------------------


def summarize_error(message: Any, longrepr: Any) -> str | None:
    """A short error text: the crash message, else the ``E`` lines, else the last line."""
    if isinstance(message, str) and message.strip():
        return _clip(message.strip())
    if isinstance(longrepr, (list, tuple)):  # skipped-style (path, line, reason)
        longrepr = str(longrepr[-1]) if longrepr else ""
    if not isinstance(longrepr, str) or not longrepr.strip():
        return None
    e_lines = _E_LINE.findall(longrepr)
    if e_lines:
        return _clip("\n".join(line.rstrip() for line in e_lines))
    return _clip(longrepr.strip().splitlines()[-1])


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _worst_per_nodeid(cases: list[CaseResult]) -> list[CaseResult]:
    best: dict[str, CaseResult] = {}
    for case in cases:
        seen = best.get(case.nodeid)
        if seen is None or _SEVERITY.get(case.outcome, 0) > _SEVERITY.get(seen.outcome, 0):
            best[case.nodeid] = case
    return list(best.values())


def _ancestors(nodeids: Any) -> set[str]:
    """Every collector above these test nodeids: directories, module, classes."""
    out: set[str] = set()
    for nodeid in nodeids:
        path, _, rest = nodeid.partition("::")
        segments = path.split("/")
        out.update("/".join(segments[:i]) for i in range(1, len(segments) + 1))
        classes = rest.partition("[")[0].split("::")[:-1] if rest else []
        out.update("::".join([path, *classes[:i]]) for i in range(1, len(classes) + 1))
    return out


def _iso_ts(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
