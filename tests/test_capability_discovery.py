"""capability_discovery across restarts: the import index saved at a clean stop is reused
only when no file changed, and a restart gives exactly what a cold start gives.

In-process, on real temp trees with the real source index (list publisher)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from kloros_stream.analysis import missing_imports
from kloros_stream.analysis.capabilities import ImportIndex
from kloros_stream.checkpoint import CheckpointStore
from kloros_stream.monitors.capability_discovery import CapabilityDiscoveryMonitor
from kloros_stream.sources.folds import FoldCheckpoint
from kloros_stream.sources.index_journal import IndexJournal
from tests.support.fakes import ListPublisher, make_context, running

TREE = {
    "app/__init__.py": "",
    "app/main.py": "import os\nimport kloros_gone_alpha\nfrom app.core import engine\n"
                   "from helpers import x\nimport app.plugins.gone\n",
    "app/core/__init__.py": "",
    "app/core/engine.py": "import kloros_gone_alpha, json\nimport kloros_gone_beta.sub\n",
    "app/plugins/__init__.py": "from . import known\n",
    "app/plugins/known.py": "import app.plugins.missing_too\n",
    "helpers.py": "x = 1\n",
    "tool.py": "try:\n    import kloros_optional\nexcept ImportError:\n    pass\n",
    "native/fast.pyi": "def f() -> int: ...\n",
}


def _write(src: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)


def _data(state: Path, **section: object) -> dict[str, Any]:
    return {
        "service": {"state_dir": str(state)},
        "monitors": {
            "integration": {"enabled": False, "roots": ["src"]},
            "capability_discovery": {"scan_imports": True, **section},
        },
    }


async def _start(tmp_path: Path, state: Path, **section: object) -> dict[str, Any]:
    """One start to the end of the initial scan, then a clean stop: what it published,
    what it holds open (with the facts) and what its index answers."""
    ctx, pub = make_context("capability_discovery", tmp_path, _data(state, **section))
    monitor = CapabilityDiscoveryMonitor(ctx, path_value="")
    async with running(monitor):
        while "initial_scan_s" not in ctx.status.details:
            await asyncio.sleep(0.01)
        held = {
            "missing": monitor.index.missing(),
            "modules": monitor.index.modules,
            "files": sorted(monitor.files),
        }
    # A stopped instance is never started again: its state is freed at the stop.
    assert monitor.files == {} and monitor.index.modules == set()
    return {
        "signals": [(s.gap_type, s.gap_name, s.resolved, s.facts) for s in pub.signals],
        "open": {key: facts for key, facts in monitor.ledger.published.items()},
        **held,
    }


def _fold_file(state: Path) -> Path:
    return state / "capability_discovery" / "import_index.fold"


def _events(logs: list[dict[str, Any]]) -> set[str]:
    return {entry["event"] for entry in logs}


async def test_a_restart_with_nothing_changed_reuses_the_fold_and_says_nothing_new(
    tmp_path: Path, monkeypatch: Any
) -> None:
    _write(tmp_path / "src", TREE)
    state = tmp_path / "state"
    first = await _start(tmp_path, state)
    assert set(first["missing"]) == {
        "kloros_gone_alpha", "kloros_gone_beta", "app.plugins.gone", "app.plugins.missing_too"}
    assert _fold_file(state).exists()
    read: list[str] = []
    real = missing_imports._lines_of
    monkeypatch.setattr(missing_imports, "_lines_of",
                        lambda path, data, module: read.append(path) or real(path, data, module))
    with capture_logs() as logs:
        again = await _start(tmp_path, state)
    assert "capability_fold_restored" in _events(logs)
    assert again["signals"] == []  # everything as announced: nothing published again
    assert read == []  # the evidence of unchanged files is not read again
    for name in ("open", "missing", "modules", "files"):
        assert again[name] == first[name], name


async def test_a_file_changed_while_down_gives_what_a_cold_start_gives(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src, TREE)
    await _start(tmp_path, tmp_path / "state")
    # While the service is down: one import added, one module gone, one file added.
    (src / "app" / "core" / "engine.py").write_text(
        "import kloros_gone_alpha, json\nimport kloros_gone_beta.sub\nimport kloros_new\n")
    (src / "helpers.py").unlink()
    (src / "app" / "plugins" / "missing_too.py").write_text("")
    with capture_logs() as logs:
        warm = await _start(tmp_path, tmp_path / "state")
    assert "fold_checkpoint_stale" in _events(logs)
    assert "capability_fold_restored" not in _events(logs)
    cold = await _start(tmp_path, tmp_path / "cold")
    for name in ("open", "missing", "modules", "files"):
        assert warm[name] == cold[name], name
    assert set(warm["missing"]) == {
        "kloros_gone_alpha", "kloros_gone_beta", "helpers", "app.plugins.gone", "kloros_new"}
    published = {(t, n, r) for t, n, r, _facts in warm["signals"]}
    assert published == {
        ("missing_library", "kloros_new", False), ("missing_library", "helpers", False),
        ("missing_library", "app.plugins.missing_too", True),
    }


async def test_a_damaged_or_foreign_fold_is_logged_and_folded_again(tmp_path: Path) -> None:
    _write(tmp_path / "src", TREE)
    state = tmp_path / "state"
    first = await _start(tmp_path, state)
    _fold_file(state).write_bytes(_fold_file(state).read_bytes()[:200])
    with capture_logs() as logs:
        again = await _start(tmp_path, state)
    assert "fold_checkpoint_damaged" in _events(logs)
    assert again["signals"] == [] and again["missing"] == first["missing"]
    with capture_logs() as logs:  # rewritten at that clean stop: reused now
        await _start(tmp_path, state)
    assert "capability_fold_restored" in _events(logs)

    # A state of another shape under the right key and fingerprint: not used.
    ctx, _pub = make_context("capability_discovery", tmp_path, _data(state))
    monitor = CapabilityDiscoveryMonitor(ctx, path_value="")
    records = {r.path: r for r in _records(tmp_path, state)}
    other = FoldCheckpoint(CheckpointStore(state).child("capability_discovery"),
                           "import_index", "")
    other.key = monitor.folds.key
    other.save([{"not": "an index"}], records)
    with capture_logs() as logs:
        again = await _start(tmp_path, state)
    assert "capability_fold_invalid" in _events(logs)
    assert again["signals"] == [] and again["missing"] == first["missing"]


def _records(tmp_path: Path, state: Path) -> list[Any]:
    ctx, _pub = make_context("capability_discovery", tmp_path, _data(state))
    monitor = CapabilityDiscoveryMonitor(ctx, path_value="")
    store = ctx.checkpoints
    return list(IndexJournal(store.directory / "sources", monitor.spec, store).load().values())


async def test_a_one_shot_scan_never_reads_or_writes_the_fold(tmp_path: Path) -> None:
    _write(tmp_path / "src", TREE)
    state = tmp_path / "state"
    ctx, pub = make_context("capability_discovery", tmp_path, _data(state), one_shot=True)
    await asyncio.wait_for(CapabilityDiscoveryMonitor(ctx, path_value="").run(), 30)
    assert pub.gaps("missing_library") and not _fold_file(state).exists()

    await _start(tmp_path, state)
    saved = _fold_file(state).read_bytes()
    _fold_file(state).write_bytes(b"damaged")
    with capture_logs() as logs:
        ctx, pub = make_context("capability_discovery", tmp_path, _data(state), one_shot=True,
                                publisher=ListPublisher())
        await asyncio.wait_for(CapabilityDiscoveryMonitor(ctx, path_value="").run(), 30)
    assert not {"fold_checkpoint_damaged", "capability_fold_restored"} & _events(logs)
    assert _fold_file(state).read_bytes() == b"damaged" and saved != b"damaged"


async def test_an_error_while_applying_an_event_leaves_no_fold(
    tmp_path: Path, monkeypatch: Any
) -> None:
    _write(tmp_path / "src", TREE)
    state = tmp_path / "state"
    ctx, _pub = make_context("capability_discovery", tmp_path, _data(state))
    monitor = CapabilityDiscoveryMonitor(ctx, path_value="")

    def broken(*_args: object) -> set[str]:
        raise RuntimeError("half applied")

    task = asyncio.create_task(monitor.run())
    while "initial_scan_s" not in ctx.status.details:
        await asyncio.sleep(0.01)
    later = tmp_path / "src" / "later.py"
    later.write_text("import kloros_later\n")
    while monitor.files.get(str(later)) is None:  # applied with its record
        await asyncio.sleep(0.01)
    monkeypatch.setattr(ImportIndex, "set_file", broken)
    later.write_text("import kloros_later_too\n")
    done, _ = await asyncio.wait({task}, timeout=10)
    assert done and isinstance(task.exception(), BaseException)
    assert not _fold_file(state).exists()
