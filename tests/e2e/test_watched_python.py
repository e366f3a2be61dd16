"""The watched system's own interpreter decides imports and syntax (a real newer venv).

A real venv of another Python (>= 3.12) is the watched system's interpreter: a package
installed only there is no missing library, new syntax valid there is no syntax error
(named in /health instead), and installing a package into it resolves its gap.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pythons import other_python
from tests.support.service import ServiceProcess, questions_of, write_config


def names(qs: list[dict], gap_type: str, status: str = "ready") -> set[str]:
    return {q["metadata"]["gap_name"] for q in questions_of(qs, gap_type) if q["status"] == status}


@pytest.mark.e2e
def test_e2e_imports_and_syntax_judged_by_the_watched_interpreter(tmp_path: Path) -> None:
    newer = other_python((3, 12))
    if newer is None or sys.version_info >= (3, 12):
        pytest.skip("needs a Python >= 3.12 besides an older service interpreter")
    venv = tmp_path / "watched-venv"
    subprocess.run([newer, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python3.*/site-packages"))
    (site / "onlythere").mkdir()
    (site / "onlythere" / "__init__.py").write_text("")
    src = tmp_path / "src"
    (src / "app2" / "sub").mkdir(parents=True)
    (src / "app2" / "__init__.py").write_text("")
    (src / "app2" / "sub" / "__init__.py").write_text("")
    (src / "app.py").write_text(
        "import onlythere\nimport notanywhere\nfrom app2.sub.gone import thing\n"
    )
    (src / "generic.py").write_text("type Pair[T] = tuple[T, T]\n")
    (src / "broken.py").write_text("def f(:\n    pass\n")
    config = write_config(
        tmp_path,
        {
            "monitors": {
                "integration": {"roots": ["src"]},
                "capability_discovery": {"python": str(venv / "bin" / "python")},
            }
        },
    )
    with ServiceProcess(config) as svc:
        svc.wait_scanned("capability_discovery")
        qs = svc.wait_feed(
            lambda qs: (
                len(names(qs, "missing_library")) >= 2 and len(names(qs, "syntax_error")) >= 1
            ),
            timeout=30,
        )
        assert names(qs, "missing_library") == {"notanywhere", "app2.sub.gone"}
        assert names(qs, "syntax_error") == {"broken.py"}
        by_name = {q["metadata"]["gap_name"]: q for q in qs}
        lines = by_name["notanywhere"]["metadata"]["facts"]["import_lines"]
        assert lines == [f"{src / 'app.py'}:2: import notanywhere"]
        assert "source tree has no such module" in by_name["app2.sub.gone"]["question"]
        health = svc.health()["monitors"]
        details = health["integration"]["details"]
        assert details["valid_for_watched_python_files"] == ["generic.py"]
        assert health["capability_discovery"]["details"]["python"]["version"].startswith("3.1")

        # Installed into the watched venv (not the service's): the gap resolves.
        (site / "notanywhere.py").write_text("")
        svc.wait_feed(
            lambda qs: "notanywhere" in names(qs, "missing_library", "resolved"), timeout=20
        )
