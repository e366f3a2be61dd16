"""The reason and evidence of a missing_library gap."""

from __future__ import annotations

import hashlib
from pathlib import Path

from kloros_stream.analysis.missing_imports import (
    ImportLines,
    find_import_lines,
    import_lines,
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


def test_import_lines_are_read_once_per_content(tmp_path: Path) -> None:
    path = tmp_path / "a.py"
    path.write_bytes(b"import os\nimport numpy\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    known = ImportLines()
    first = import_lines([str(path)], "numpy", known, lambda p: digest)
    assert first == [f"{path}:2: import numpy"]
    path.unlink()  # the same content is not read again
    assert import_lines([str(path)], "numpy", known, lambda p: digest) == first
    assert import_lines([str(path)], "numpy", known, lambda p: "other") == []  # read: gone
    assert missing_facts("numpy", [str(path)], known, lambda p: digest)["import_lines"] == first
    path.write_bytes(b"import numpy\n")  # content that is not the one the index knows
    other = ImportLines()
    assert import_lines([str(path)], "numpy", other, lambda p: digest) == [
        f"{path}:1: import numpy"]
    path.unlink()
    assert import_lines([str(path)], "numpy", other, lambda p: digest) == []  # not kept
    known.keep(lambda p, module, d: module != "numpy")
    assert import_lines([str(path)], "numpy", known, lambda p: digest) == []
