"""Test storms: many failing tests with one cause are one gap. Pure: no I/O, no clock.

A failing test's *cause* is read from pytest's failure text (``longrepr``, the same text in
pytest-json-report and in JUnit XML), whatever ``--tb`` style wrote it:

* the exception type: the ``E   Type: message`` line, else the type after the last
  location line (``tests/conftest.py:5: ConnectionError``);
* the crash location: the deepest location line (``path:line``) that is in-app (not under
  site-packages or the standard library), else the deepest one. pytest writes paths
  relative to its rootdir, so the same suite checked out elsewhere gives the same cause.

The cause's fingerprint is the type plus that location: a broken fixture, a failing shared
helper, one bad line hit by every parametrisation. A missing import (``ImportError``,
``ModuleNotFoundError``) is keyed by the missing name instead, so every test module that
imports it shares one cause. Without a location the normalised message stands in (not
for an ``AssertionError``, whose message is the comparison and says nothing of where it
failed: no cause, no grouping).

:func:`plan_gaps` turns the open failures into the gaps to hold open: a cause with at
least ``threshold`` failing tests (or already published as a group: a group lives until
all its tests pass) is one gap with the tests in its facts; every other failure keeps its
nodeid as gap name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from .fingerprint import is_in_app, normalize_message

MAX_GROUP_TESTS = 1000
"""Nodeids listed in a group's facts (``count`` has the full number)."""
IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError"})

_LOCATION = re.compile(
    r"^(?P<path>[^\s:][^:]*?\.py):(?P<line>\d+):(?: in (?P<func>\S+)| (?P<rest>\S.*))?\s*$"
)
_E_LINE = re.compile(r"^E\s+(?P<text>.*)$")
_EXC = re.compile(
    r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|"
    r"Failed|Iteration|Group))(?::\s*(?P<msg>.*))?$"
)
_STATEMENT = re.compile(r"^>\s+(?P<code>\S.*)$")
_TYPE_ONLY = re.compile(r"^[A-Za-z_][\w.]*$")


@dataclass(frozen=True, slots=True)
class Cause:
    fingerprint: str
    exc_type: str
    location: str
    """``path:line`` of the crash, or "" when the text names none."""
    title: str
    """What the group gap is called: ``Type at path:line`` or ``Type: message``."""


@dataclass(frozen=True, slots=True)
class FailureDetail:
    """What a consumer needs to act on a test failure: the failing statement and the diff."""

    statement: str | None
    """The source line pytest marked with ``>`` (the assertion, or the call that raised)."""
    explanation: str | None
    """The ``E`` lines: the assertion's rewritten comparison and its diff."""


def failure_cause(longrepr: str | None, message: str | None = None) -> Cause | None:
    """The cause of one failure, from pytest's failure text (and the crash message)."""
    text = longrepr or ""
    locations: list[tuple[str, str, str]] = []  # path, line, trailing type or ""
    e_lines: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        m = _LOCATION.match(line)
        if m:
            rest = (m.group("rest") or "").strip()
            locations.append((m.group("path"), m.group("line"), rest))
            continue
        e = _E_LINE.match(line)
        if e:
            e_lines.append(e.group("text").strip())
    exc_type, exc_msg = _exception(e_lines, locations, message)
    if not exc_type:
        return None
    if exc_type.rsplit(".", 1)[-1] in IMPORT_ERRORS and exc_msg:
        key = normalize_message(exc_msg)
        return Cause(_digest("import", exc_type, key), exc_type, "", f"{exc_type}: {exc_msg}")
    if locations:
        in_app = [loc for loc in locations if is_in_app(loc[0])]
        path, line, _ = (in_app or locations)[-1]
        location = f"{path}:{line}"
        return Cause(
            _digest("loc", exc_type, location), exc_type, location, f"{exc_type} at {location}"
        )
    if exc_msg and exc_type != "AssertionError":  # an assert's text says nothing of where
        key = normalize_message(exc_msg)
        return Cause(_digest("msg", exc_type, key), exc_type, "", f"{exc_type}: {exc_msg}")
    return None


def _exception(
    e_lines: list[str], locations: list[tuple[str, str, str]], message: str | None
) -> tuple[str, str]:
    """(type, first line of message) from the E lines, the last location or the message."""
    for text in e_lines:
        m = _EXC.match(text)
        if m:
            return m.group("type"), (m.group("msg") or "").strip()
        if text.startswith("assert ") or text == "assert":
            return "AssertionError", text
    if locations:
        head, _, msg = locations[-1][2].partition(":")
        if _TYPE_ONLY.match(head.strip()):
            return head.strip(), msg.strip()
    first = (message or "").strip().split("\n", 1)[0]
    if first:
        m = _EXC.match(first)
        if m:
            return m.group("type"), (m.group("msg") or "").strip()
        if first.startswith("assert"):
            return "AssertionError", first
    return "", ""


def failure_detail(longrepr: str | None, limit: int = 12) -> FailureDetail:
    """The failing statement (the last ``>`` line) and up to ``limit`` ``E`` lines."""
    statement = None
    explanation: list[str] = []
    for raw in (longrepr or "").splitlines():
        s = _STATEMENT.match(raw.rstrip())
        if s:
            statement = s.group("code").strip()
            explanation = []
            continue
        e = _E_LINE.match(raw.rstrip())
        if e:
            explanation.append(raw.rstrip()[1:].strip() if raw.strip() != "E" else "")
    kept = [line for line in explanation if line][:limit]
    return FailureDetail(statement, "\n".join(kept) or None)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(("test", *parts)).encode()).hexdigest()[:32]


# -- which gaps to hold open ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedGap:
    """One gap to hold open: a single test (``fingerprint`` None) or a group."""

    name: str
    tests: tuple[str, ...]
    fingerprint: str | None
    """The cause's fingerprint for a group; None for a single test (named by nodeid)."""

    @property
    def key(self) -> str:
        return f"group:{self.fingerprint}" if self.fingerprint else f"test:{self.name}"


def plan_gaps(
    open_failures: dict[str, dict[str, Any]],
    threshold: int,
    published_groups: frozenset[str] = frozenset(),
) -> dict[str, PlannedGap]:
    """Gaps for the open failures (``nodeid -> entry`` with ``cause`` and ``cause_title``).

    ``threshold`` 0 never groups. ``published_groups`` are fingerprints already held open
    as groups: they stay groups while any of their tests fails.
    """
    by_cause: dict[str, list[str]] = {}
    titles: dict[str, str] = {}
    singles: list[str] = []
    for nodeid, entry in open_failures.items():
        cause = entry.get("cause")
        if threshold <= 0 or not isinstance(cause, str) or not cause:
            singles.append(nodeid)
            continue
        by_cause.setdefault(cause, []).append(nodeid)
        titles.setdefault(cause, str(entry.get("cause_title") or cause))
    out: dict[str, PlannedGap] = {}
    for cause, nodeids in by_cause.items():
        if len(nodeids) >= threshold or cause in published_groups:
            gap = PlannedGap(titles[cause], tuple(sorted(nodeids)), cause)
            out[gap.key] = gap
        else:
            singles.extend(nodeids)
    for nodeid in singles:
        gap = PlannedGap(nodeid, (nodeid,), None)
        out[gap.key] = gap
    return out


class GapPlan:
    """The gaps held open for the test failures, and what changed from one report to the next.

    :meth:`update` takes the open failures after a report and the nodeids that report
    (re)opened, and returns the gaps to publish (new ones, groups whose tests changed,
    gaps with a fresh failure) and the gaps to resolve (all their tests pass now, or
    their tests moved into a group).
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.published: dict[str, PlannedGap] = {}

    def update(
        self, open_failures: dict[str, dict[str, Any]], touched: set[str]
    ) -> tuple[list[PlannedGap], list[PlannedGap]]:
        groups = frozenset(g.fingerprint for g in self.published.values() if g.fingerprint)
        wanted = plan_gaps(open_failures, self.threshold, groups)
        publish = [
            gap
            for key, gap in wanted.items()
            if (old := self.published.get(key)) is None
            or old.tests != gap.tests
            or not touched.isdisjoint(gap.tests)
        ]
        resolve = [gap for key, gap in self.published.items() if key not in wanted]
        self.published = wanted
        return publish, resolve

    def to_json(self) -> list[list[Any]]:
        return [[g.name, g.fingerprint] for g in self.published.values()]

    def load_json(self, rows: Any, open_failures: dict[str, dict[str, Any]]) -> None:
        """Restore what was published; without saved rows every open failure stands alone
        (what an older version published)."""
        if not isinstance(rows, list):
            self.published = {f"test:{n}": PlannedGap(n, (n,), None) for n in open_failures}
            return
        members: dict[str, list[str]] = {}
        for nodeid, entry in open_failures.items():
            members.setdefault(str(entry.get("cause") or ""), []).append(nodeid)
        for row in rows:
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)):
                continue
            name, fingerprint = row
            if isinstance(fingerprint, str) and fingerprint:
                gap = PlannedGap(name, tuple(sorted(members.get(fingerprint, ()))), fingerprint)
            else:
                gap = PlannedGap(name, (name,), None)
            self.published[gap.key] = gap
