"""The reason and evidence of a missing_library gap."""

from __future__ import annotations

from pathlib import Path

from kloros_stream.analysis.missing_imports import (
    find_import_lines,
    missing_facts,
    missing_reason,
)

SOURCE = """import os
import numpy as np
from numpyx import y
from numpy.linalg import norm
import json, numpy
numpy_like = 1
"""


def test_import_lines_of_a_module_and_its_submodules() -> None:
    assert find_import_lines(SOURCE, "numpy", limit=10) == [2, 4, 5]
    assert find_import_lines(SOURCE, "numpy.linalg") == [4]


def test_reasons_say_what_was_seen() -> None:
    assert "listed in required_modules" in missing_reason("yaml", [])
    assert "imported by 2 file(s) but is not installed for /v/python" in missing_reason(
        "yaml", ["a", "b"], "/v/python"
    )
    assert "does not exist in the source roots" in missing_reason("pkg.gone", ["a"])


def test_facts_carry_the_importing_lines(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(SOURCE)
    facts = missing_facts("numpy", [str(path)])
    assert facts["kind"] == "library"
    assert facts["import_lines"][0] == f"{path}:2: import numpy as np"
    assert missing_facts("x", [])["kind"] == "required"
