"""cli.py in-process with scripted monitors: ``scan``'s exit status and its two streams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from kloros_stream import cli as cli_module
from kloros_stream import service
from tests.support.scripted import Script, gap
from tests.support.service import write_config


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    """``main`` configures structlog on capsys's stream: put the old set-up back after."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_scan_exits_non_zero_when_a_monitor_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scripts = {"chaos": Script(crash_forever=True),
               "test": Script(gaps=[gap("test_failure", "t::a")]),
               "exploration": Script(unavailable="nvidia-smi not found")}
    monkeypatch.setattr(service, "default_factory", lambda name: scripts[name].factory()
                        if name in scripts else Script().factory())
    cfg = write_config(tmp_path, {"monitors": {"test": {}, "chaos": {}, "exploration": {}}})
    assert cli_module.main(["scan", "--config", str(cfg), "--json"]) == 1
    out, err = capsys.readouterr()
    gaps = [json.loads(line) for line in out.splitlines()]
    assert [g["facts"]["gap_name"] for g in gaps] == ["t::a"]
    assert "chaos: failed: RuntimeError" in err
    assert "exploration: unavailable" in err

    scripts["chaos"] = Script()
    assert cli_module.main(["scan", "--config", str(cfg)]) == 0  # unavailable is no failure
