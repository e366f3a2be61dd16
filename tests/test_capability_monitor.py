"""capability_discovery on real directories with real inotify (in-process, list publisher).

The end-to-end tests at the bottom drive a real ``kloros-stream run`` and read its feed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from kloros_stream.monitors.base import MonitorUnavailable
from kloros_stream.monitors.capability_discovery import CapabilityDiscoveryMonitor
from kloros_stream.sources.files import walk_files
from kloros_stream.sources.flatwatch import FlatWatcher
from tests.support.fakes import ListPublisher, make_context, running
from tests.support.inputs import install_executable


def _config(tmp_path: Path, roots: list[str] | None = None, **section: object) -> dict:
    return {
        "monitors": {
            "integration": {"enabled": False, "roots": roots or ["src"]},
            "capability_discovery": section,
        }
    }


async def _wait_state(pub: ListPublisher, gap_type: str, names: set[str]) -> None:
    await pub.wait_for(lambda _: set(pub.open_gaps(gap_type)) == names, timeout=10)


async def test_flat_watcher_waits_for_missing_dir_and_sees_chmod(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    async with FlatWatcher([target]) as watcher:
        batches = watcher.batches()
        target.mkdir(parents=True)
        seen: list[tuple[str | None, int]] = []

        async def until(pred) -> None:
            while not pred():
                for change in await asyncio.wait_for(anext(batches), 10):
                    seen.append((change.name, int(change.mask)))

        await until(lambda: any(name is None for name, _ in seen))  # appeared: re-read it
        assert watcher.watched == [target.resolve()]
        tool = target / "tool"
        tool.write_text("x")
        tool.chmod(0o755)
        await until(lambda: sum(name == "tool" for name, _ in seen) >= 3)  # create, close, attrib
        shutil.rmtree(tmp_path / "a")
        await until(lambda: watcher.watched == [])
        target.mkdir(parents=True)
        await until(lambda: watcher.watched == [target.resolve()])


def test_walk_files_excludes_components(tmp_path: Path) -> None:
    for rel in ("a/x.py", "a/.git/y.py", "node_modules/z.py", "b/c/d.py", "b/c/e.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    found = walk_files(tmp_path, [".git", "node_modules"], lambda p: p.suffix == ".py")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/x.py", "b/c/d.py"]
    assert walk_files(tmp_path / "missing", [], lambda p: True) == []


async def test_missing_tool_follows_path_dirs(tmp_path: Path) -> None:
    bin1, bin2 = tmp_path / "bin1", tmp_path / "later" / "bin2"
    bin1.mkdir()
    ctx, pub = make_context(
        "capability_discovery",
        tmp_path,
        _config(
            tmp_path, required_executables=["kloros-fake-tool", "other-tool"], scan_imports=False
        ),
    )
    monitor = CapabilityDiscoveryMonitor(ctx, path_value=f"{bin1}{os.pathsep}{bin2}")
    async with running(monitor):
        await _wait_state(pub, "missing_tool", {"kloros-fake-tool", "other-tool"})
        gap = pub.open_gaps("missing_tool")["kloros-fake-tool"]
        assert gap.facts["searched"] == [str(bin1), str(bin2)]
        assert gap.facts["gap_category"] == "tooling"
        tool = install_executable(bin1, "kloros-fake-tool")
        await _wait_state(pub, "missing_tool", {"other-tool"})
        tool.chmod(0o644)  # no longer executable: gap again (IN_ATTRIB)
        await _wait_state(pub, "missing_tool", {"kloros-fake-tool", "other-tool"})
        tool.chmod(0o755)
        await _wait_state(pub, "missing_tool", {"other-tool"})
        install_executable(bin2, "other-tool")  # a PATH dir that did not exist at start
        await _wait_state(pub, "missing_tool", set())
        tool.unlink()
        await _wait_state(pub, "missing_tool", {"kloros-fake-tool"})
    assert monitor.ctx.status.details["path_dirs"] == [str(bin1), str(bin2)]
    # every change was announced exactly once: no repeats of an unchanged gap
    kinds = [(s.gap_name, s.resolved) for s in pub.signals if s.gap_name == "kloros-fake-tool"]
    assert kinds == [("kloros-fake-tool", False), ("kloros-fake-tool", True)] * 2 + [
        ("kloros-fake-tool", False)
    ]


async def test_required_module_follows_site_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    ctx, pub = make_context(
        "capability_discovery",
        tmp_path,
        _config(tmp_path, required_modules=["kloros_fakedist", "json"], scan_imports=False),
    )
    monitor = CapabilityDiscoveryMonitor(ctx, path_value="")
    assert site in monitor.site_dirs
    async with running(monitor):
        await _wait_state(pub, "missing_library", {"kloros_fakedist"})
        assert pub.open_gaps("missing_library")["kloros_fakedist"].facts["required"] is True
        dist = site / "kloros_fakedist-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Name: kloros-fakedist\nVersion: 1.0\n")
        pkg = site / "kloros_fakedist"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("raise SystemExit('never imported')\n")
        await _wait_state(pub, "missing_library", set())
        shutil.rmtree(pkg)
        shutil.rmtree(dist)
        await _wait_state(pub, "missing_library", {"kloros_fakedist"})
    assert "kloros_fakedist" not in sys.modules


async def test_a_module_installed_as_the_initial_scan_ends_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The site directories are watched before the scan: what changes between the
    scan's last check and the follower's first read waits in the watcher."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    ctx, pub = make_context(
        "capability_discovery", tmp_path,
        _config(tmp_path, required_modules=["kloros_latedist"], scan_imports=False),
    )
    monitor = CapabilityDiscoveryMonitor(ctx, path_value="")
    scan = monitor._scan

    async def scan_then_install(sub: Any) -> None:
        await scan(sub)
        assert "kloros_latedist" in pub.open_gaps("missing_library")
        (site / "kloros_latedist.py").write_text("VALUE = 1\n")  # before any follower runs

    monkeypatch.setattr(monitor, "_scan", scan_then_install)
    async with running(monitor):
        await _wait_state(pub, "missing_library", set())
    assert "kloros_latedist" not in sys.modules


async def test_scan_imports_of_roots(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "app").mkdir(parents=True)
    (src / "app" / "main.py").write_text(
        "import os\nimport kloros_missing_alpha\nfrom helpers import x\n"
        "try:\n    import kloros_optional_beta\nexcept ImportError:\n    pass\n"
    )
    (src / "app" / "other.py").write_text("import kloros_missing_alpha\n")
    (src / "tool.py").write_text("import kloros_missing_gamma\n")
    ctx, pub = make_context("capability_discovery", tmp_path, _config(tmp_path, ["src"]))
    monitor = CapabilityDiscoveryMonitor(ctx, path_value="")
    async with running(monitor):
        await _wait_state(
            pub, "missing_library", {"kloros_missing_alpha", "helpers", "kloros_missing_gamma"}
        )
        alpha = pub.open_gaps("missing_library")["kloros_missing_alpha"]
        assert alpha.facts["files"] == [str(src / "app" / "main.py"), str(src / "app/other.py")]
        assert alpha.facts["file_count"] == 2 and alpha.facts["required"] is False
        # the tree grows the module: resolved; an atomic rewrite drops an import
        (src / "app" / "helpers.py").write_text("x = 1\n")
        await _wait_state(pub, "missing_library", {"kloros_missing_alpha", "kloros_missing_gamma"})
        tmp = src / ".tool.py.new"
        tmp.write_text("import json\n")
        tmp.rename(src / "tool.py")
        await _wait_state(pub, "missing_library", {"kloros_missing_alpha"})
        # a file that does not parse keeps its previous imports
        (src / "app" / "other.py").write_text("import kloros_missing_alpha\ndef (:\n")
        (src / "app" / "main.py").unlink()
        await pub.wait_for(
            lambda _: (
                pub.open_gaps("missing_library")
                .get("kloros_missing_alpha", alpha)
                .facts["file_count"]
                == 1
            )
        )
        (src / "app" / "other.py").unlink()
        await _wait_state(pub, "missing_library", set())
    assert monitor.ctx.status.details["import_roots"] == [str(src)]


async def test_one_shot_scan_and_restart_reconcile(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("import kloros_missing_delta\n")
    data = _config(tmp_path, ["src"], required_executables=["kloros-nope"])
    ctx, pub = make_context("capability_discovery", tmp_path, data, one_shot=True)
    await asyncio.wait_for(CapabilityDiscoveryMonitor(ctx, path_value="").run(), 10)
    assert {(s.gap_type, s.gap_name) for s in pub.signals} == {
        ("missing_tool", "kloros-nope"),
        ("missing_library", "kloros_missing_delta"),
    }

    # a real run records its open gaps; the next run resolves those that went away
    ctx, pub = make_context("capability_discovery", tmp_path, data)
    async with running(CapabilityDiscoveryMonitor(ctx, path_value="")):
        await _wait_state(pub, "missing_library", {"kloros_missing_delta"})
    (src / "a.py").write_text("import json\n")
    ctx, pub = make_context("capability_discovery", tmp_path, data)
    monitor = CapabilityDiscoveryMonitor(ctx, path_value="")
    async with running(monitor):
        await pub.wait_for(
            lambda sigs: any(s.resolved and s.gap_name == "kloros_missing_delta" for s in sigs)
        )
        # still missing, as announced before the restart: open, not announced again
        assert monitor.ledger.is_open("missing_tool", "kloros-nope")
    assert [(s.gap_name, s.resolved) for s in pub.signals] == [("kloros_missing_delta", True)]
    assert pub.signals[0].facts["gap_category"] == "dependencies"


async def test_nothing_to_check_is_unavailable(tmp_path: Path) -> None:
    ctx, _ = make_context("capability_discovery", tmp_path, _config(tmp_path, scan_imports=False))
    with pytest.raises(MonitorUnavailable):
        await CapabilityDiscoveryMonitor(ctx).run()
