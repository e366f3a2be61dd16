"""deploy/kloros-stream.service: required directives, and ``systemd-analyze verify``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "kloros-stream.service"


def directives(text: str) -> dict[tuple[str, str], list[str]]:
    """``(section, key) -> values`` in order (systemd keys may repeat)."""
    out: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a KEY=VALUE line: {raw!r}"
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


def test_unit_has_the_required_directives() -> None:
    d = directives(UNIT.read_text(encoding="utf-8"))

    def one(key: str) -> str:
        values = d.get(("Service", key))
        assert values, f"[Service] {key}= missing"
        return values[-1]

    assert one("Type") == "notify"
    assert one("ExecStart") == (
        "/opt/kloros-stream/.venv/bin/kloros-stream run --config /etc/kloros-stream/config.toml"
    )
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("Restart") == "on-failure"
    assert int(one("WatchdogSec")) >= 10
    assert one("MemoryMax") == "256M"
    assert one("CPUQuota") == "50%"
    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") == "strict"
    assert "/var/lib/kloros-stream" in one("ReadWritePaths").split()
    assert one("ProtectHome") == "read-only"
    assert one("PrivateTmp") == "yes"
    assert one("User") == "kloros-stream"
    assert "systemd-journal" in one("SupplementaryGroups").split()
    assert d[("Install", "WantedBy")] == ["multi-user.target"]


def verify_problems(unit_text: str, directory: Path) -> list[str]:
    """Run ``systemd-analyze verify`` on a copy whose ExecStart exists; its complaints."""
    exe = sys.executable
    text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={exe}", unit_text)
    copy = directory / "kloros-stream.service"
    copy.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = (proc.stdout + proc.stderr).splitlines()
    problems = [line for line in output if copy.name in line]
    if proc.returncode != 0:
        problems.append(f"exit status {proc.returncode}: {proc.stderr.strip()}")
    return problems


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    problems = verify_problems(UNIT.read_text(encoding="utf-8"), tmp_path)
    assert problems == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_verify_check_catches_bad_directives(tmp_path: Path) -> None:
    broken = UNIT.read_text(encoding="utf-8").replace(
        "Restart=on-failure", "Restart=sometimes\nWatchDogSeconds=30"
    )
    problems = verify_problems(broken, tmp_path)
    assert any("WatchDogSeconds" in p for p in problems), problems
    assert any("sometimes" in p for p in problems), problems
