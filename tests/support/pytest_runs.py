"""Real pytest runs over a throw-away project, for the tests and the quality harness that
judge what pytest reports (JUnit XML, pytest-json-report)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_pytest(
    project: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[bytes]:
    """``python -m pytest -q ARGS`` in ``project`` with this interpreter: no cache, rootdir
    ``project``, and none of an outer pytest's ``PYTEST_*`` variables. Its exit status is
    the caller's business (the run under test is expected to fail)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", ".", *args],
        cwd=project,
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
