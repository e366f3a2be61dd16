"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.journald import NamespacedJournald, journald_skip_reason


@pytest.fixture
def journald() -> Iterator[NamespacedJournald]:
    """A namespaced systemd-journald of the test's own (root and the binary needed)."""
    reason = journald_skip_reason()
    if reason:
        print(f"skipping real-journald test: {reason}")
        pytest.skip(reason)
    with NamespacedJournald() as j:
        yield j
