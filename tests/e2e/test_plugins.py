"""A third-party monitor as a plugin: the example package ``examples/todo_monitor`` is
installed with pip (entry point group ``kloros_stream.monitors``) and a real
``kloros-stream run`` supervises it, validates its section and exports it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.service import ServiceProcess, questions_of, write_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "todo_monitor"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The example plugin installed by pip into a directory of its own, on PYTHONPATH."""
    site = tmp_path_factory.mktemp("plugin") / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(site), str(EXAMPLE)],
        check=True, timeout=300, capture_output=True,
    )
    assert list(site.glob("*.dist-info/entry_points.txt"))
    yield {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kloros_stream", *args], cwd=cwd,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)


def _todo(qs: list[dict[str, Any]], path: Path, status: str | None = None) -> bool:
    return any(q["metadata"]["gap_name"] == str(path)
               and (status is None or (q["status"] == "resolved") == (status == "resolved"))
               for q in questions_of(qs, "todo_marker"))


@pytest.mark.e2e
def test_plugin_monitor_is_supervised_exported_and_resolves(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    note = notes / "plan.md"
    note.write_text("# Plan\nTODO: write the docs\n")
    cfg = write_config(tmp_path, {"monitors": {"todo": {"paths": ["notes"]}}})
    with ServiceProcess(cfg, env=plugin_env) as svc:
        qs = svc.wait_feed(lambda qs: _todo(qs, note, "open"))
        q = next(q for q in questions_of(qs, "todo_marker"))
        assert q["metadata"]["monitor"] == "todo"
        health = svc.health()["monitors"]["todo"]
        assert health["state"] == "running"
        metrics = svc.get("/metrics")[1].decode()
        assert 'kloros_stream_signals_total{monitor="todo"} 1.0' in metrics
        assert 'kloros_stream_monitor_state{monitor="todo",state="running"} 1.0' in metrics
        assert 'event="files_read",monitor="todo"' in metrics

        note.write_text("# Plan\nDone.\n")
        svc.wait_feed(lambda qs: _todo(qs, note, "resolved"))
        assert svc.stop() == 0
    with ServiceProcess(cfg, env=plugin_env) as svc:  # a restart re-announces nothing
        svc.wait_scanned("todo")
        (notes / "later.txt").write_text("TODO: later\n")
        qs = svc.wait_feed(lambda qs: _todo(qs, notes / "later.txt"))
    assert sum(1 for q in questions_of(qs, "todo_marker")) == 2


@pytest.mark.e2e
def test_plugin_section_is_validated_by_its_own_model(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    good = write_config(tmp_path, {"monitors": {"todo": {"paths": ["notes"]}}})
    checked = _cli("check-config", "--config", str(good), cwd=tmp_path, env=plugin_env)
    assert checked.returncode == 0, checked.stderr
    assert '"marker": "TODO"' in checked.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text('[monitors.todo]\nmarker = ""\nbogus = 1\n')
    proc = _cli("check-config", "--config", str(bad), cwd=tmp_path, env=plugin_env)
    assert proc.returncode == 2
    assert "monitors.todo.marker" in proc.stderr and "monitors.todo.bogus" in proc.stderr

    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[monitors.nope]\nenabled = true\n")
    proc = _cli("check-config", "--config", str(unknown), cwd=tmp_path, env=plugin_env)
    assert proc.returncode == 2 and "monitors.nope: unknown key (no such monitor" in proc.stderr


@pytest.mark.e2e
def test_scan_runs_the_plugin_too(tmp_path: Path, plugin_env: dict[str, str]) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("TODO: one\nTODO: two\n")
    cfg = write_config(tmp_path, {"monitors": {"todo": {"paths": ["notes"]}}})
    proc = _cli("scan", "--config", str(cfg), cwd=tmp_path, env=plugin_env)
    assert proc.returncode == 0, proc.stderr
    assert "todo_marker" in proc.stdout and "a.txt" in proc.stdout
