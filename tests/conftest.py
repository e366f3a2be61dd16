"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kloros_stream.sources.index import PARSE_WORKER
from tests.support.journald import NamespacedJournald, journald_skip_reason


@pytest.fixture(autouse=True)
def _parse_worker_idle() -> Iterator[None]:
    """After each test, wait for the source parse worker to be idle: a parse still running
    from a cancelled monitor must not overlap pytest's own ``ast.parse`` (CPython 3.11
    cannot run two at once)."""
    yield
    PARSE_WORKER.submit(lambda: None).result(timeout=60)


@pytest.fixture
def journald() -> Iterator[NamespacedJournald]:
    """A namespaced systemd-journald of the test's own (root and the binary needed)."""
    reason = journald_skip_reason()
    if reason:
        print(f"skipping real-journald test: {reason}")
        pytest.skip(reason)
    with NamespacedJournald() as j:
        yield j
