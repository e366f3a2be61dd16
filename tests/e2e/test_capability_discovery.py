"""The capability discovery monitor through a real ``kloros-stream run``: a tool missing from
PATH and a library missing from site-packages, each resolved when it appears and
reopened when it goes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.inputs import install_executable
from tests.support.service import ServiceProcess, write_config


def _q(qs: list[dict], gap_type: str, gap_name: str) -> dict | None:
    return next(
        (
            q
            for q in qs
            if q["metadata"]["gap_type"] == gap_type and q["metadata"]["gap_name"] == gap_name
        ),
        None,
    )


def _status(gap_type: str, gap_name: str, resolved: bool):
    def check(qs: list[dict]) -> bool:
        q = _q(qs, gap_type, gap_name)
        return q is not None and (q["status"] == "resolved") is resolved

    return check


@pytest.mark.e2e
def test_e2e_path_tool_and_site_dist_info(tmp_path: Path) -> None:
    bin_dir, site = tmp_path / "bin", tmp_path / "site"
    bin_dir.mkdir()
    site.mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "job.py").write_text(
        "import kloros_e2e_dist\ntry:\n    import kloros_e2e_optional\nexcept ImportError:\n"
        "    kloros_e2e_optional = None\n"
    )
    cfg = write_config(
        tmp_path,
        {
            "monitors": {
                "integration": {"enabled": False, "roots": ["src"]},
                "capability_discovery": {"required_executables": ["kloros-e2e-tool"]},
            }
        },
    )
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": pythonpath}
    with ServiceProcess(cfg, env=env) as svc:
        qs = svc.wait_feed(
            lambda qs: (
                _status("missing_tool", "kloros-e2e-tool", False)(qs)
                and _status("missing_library", "kloros_e2e_dist", False)(qs)
            )
        )
        lib = _q(qs, "missing_library", "kloros_e2e_dist")
        assert lib is not None and str(tmp_path / "src" / "job.py") in " ".join(lib["evidence"])
        assert lib["metadata"]["monitor"] == "capability_discovery"
        assert _q(qs, "missing_library", "kloros_e2e_optional") is None  # guarded import
        svc.wait_scanned("capability_discovery")
        details = svc.health()["monitors"]["capability_discovery"]["details"]
        assert str(bin_dir) in details["watched_dirs"] and str(site) in details["watched_dirs"]

        tool = install_executable(bin_dir, "kloros-e2e-tool")
        svc.wait_feed(_status("missing_tool", "kloros-e2e-tool", True))
        dist = site / "kloros_e2e_dist-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: kloros-e2e-dist\nVersion: 0.1\n"
        )
        (site / "kloros_e2e_dist.py").write_text("VALUE = 1\n")
        svc.wait_feed(_status("missing_library", "kloros_e2e_dist", True))

        tool.unlink()
        svc.wait_feed(_status("missing_tool", "kloros-e2e-tool", False))
        shutil.rmtree(dist)
        (site / "kloros_e2e_dist.py").unlink()
        svc.wait_feed(_status("missing_library", "kloros_e2e_dist", False))
