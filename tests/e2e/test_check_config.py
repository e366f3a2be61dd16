"""``kloros-stream check-config`` as a real subprocess: exit code 2 naming the bad keys, the
config found through the environment variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kloros_stream.config import ENV_VAR


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_check_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "config.toml", "[bus]\nmaxsize = -5\n[feed]\nbogus = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kloros_stream", "check-config", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "bus.maxsize" in proc.stderr
    assert "feed.bogus" in proc.stderr
    assert proc.stdout == ""


def test_check_config_uses_the_environment_variable(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "env.toml", "[monitors.chaos]\nenabled = false\nextra = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kloros_stream", "check-config"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**_base_env(), ENV_VAR: str(cfg)},
    )
    assert proc.returncode == 2
    assert "monitors.chaos.extra" in proc.stderr


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != ENV_VAR}
