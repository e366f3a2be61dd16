"""cli.py in-process with scripted monitors: ``scan``'s exit status and its two streams."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from pathlib import Path

import pytest
import structlog

from kloros_stream import cli as cli_module
from kloros_stream import service
from kloros_stream.config import load_config
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


def test_a_stop_signal_during_start_up_ends_run_cleanly_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(cli_module, "_EARLY_STOP", threading.Event())
    cfg = write_config(tmp_path, {"monitors": {"chaos": {}}})
    try:
        cli_module._exit_quietly_on_early_signals()
        os.kill(os.getpid(), signal.SIGTERM)  # handled here, raising nothing: a flag only
        assert cli_module._EARLY_STOP.is_set()
        assert cli_module.main(["run", "--config", str(cfg)]) == 0
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert not (tmp_path / "var").exists()  # no state, no feed: nothing started


async def test_a_service_asked_to_stop_before_it_started_starts_nothing(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"monitors": {"chaos": {}}})
    svc = service.Service(load_config(cfg), stop_requested=lambda: True)
    await asyncio.wait_for(svc.run(), 10)  # the signal came after the check in cmd_run
    assert svc.port is None and not svc.supervised
    assert not (tmp_path / "var" / "feed.jsonl").exists()
