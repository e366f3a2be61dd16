"""exploration with a fake /dev, a fake /sys/class/drm and a fake nvidia-smi script that
prints real nvidia-smi CSV (in-process, list publisher, real inotify and subprocesses)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kloros_stream.monitors.exploration import ExplorationMonitor
from tests.support.fakes import ListPublisher, make_context, make_monitor, running
from tests.support.inputs import GPU_BUSY, GPU_IDLE, GPU_NA, fake_nvidia_smi, set_gpus


def _monitor(
    tmp_path: Path, pub: ListPublisher | None = None, **section: object
) -> tuple[ExplorationMonitor, ListPublisher]:
    dev, drm = tmp_path / "dev", tmp_path / "drm"
    dev.mkdir(exist_ok=True)
    drm.mkdir(exist_ok=True)
    data = {"monitors": {"exploration": section}}
    return make_monitor(ExplorationMonitor, tmp_path, data, publisher=pub, dev_dir=dev, drm_dir=drm)


async def test_inventory_in_details_without_nvidia_smi(tmp_path: Path) -> None:
    monitor, pub = _monitor(tmp_path, nvidia_smi=str(tmp_path / "absent-nvidia-smi"))
    (tmp_path / "dev" / "sda").touch()
    (tmp_path / "dev" / "tty3").touch()
    (tmp_path / "drm" / "card0").mkdir()
    (tmp_path / "drm" / "card0-DP-1").mkdir()
    async with running(monitor):
        await pub.wait_for(
            lambda _: (
                "devices" in monitor.ctx.status.details
                and "nvidia_smi" in monitor.ctx.status.details
            )
        )
    details = monitor.ctx.status.details
    inventory = details["inventory"]
    assert inventory["cpu"]["logical_cores"] >= 1 and inventory["cpu"]["model"]
    assert inventory["memory"]["total_bytes"] > 0
    assert any(d["mountpoint"] == "/" and d["total_bytes"] > 0 for d in inventory["disks"])
    assert details["devices"] == [f"{tmp_path}/dev/sda", "card0"]
    assert details["nvidia_smi"].startswith("absent")
    assert "sysfs" in details["sources"]["drm"]
    assert pub.signals == []  # the first start is the baseline: nothing changed


async def test_device_arrival_and_removal(tmp_path: Path) -> None:
    monitor, pub = _monitor(tmp_path, nvidia_smi="", interval_s=0.05)
    dev = tmp_path / "dev"
    async with running(monitor):
        await pub.wait_for(lambda _: "devices" in monitor.ctx.status.details)
        (dev / "ttyUSB0").touch()
        (dev / "tty7").touch()  # not hardware worth a question
        await pub.wait_for(lambda _: set(pub.open_gaps("hardware_change")) == {f"{dev}/ttyUSB0"})
        assert pub.open_gaps("hardware_change")[f"{dev}/ttyUSB0"].facts["change"] == "added"
        (dev / "dri").mkdir()  # appears after start: watched from then on
        (dev / "dri" / "card1").touch()
        (dev / "dri" / "renderD128").touch()
        await pub.wait_for(
            lambda _: set(pub.open_gaps("hardware_change")) == {f"{dev}/ttyUSB0", "card1"}
        )
        (tmp_path / "drm" / "card2").mkdir()  # sysfs: seen at the next sampling tick
        await pub.wait_for(lambda _: "card2" in pub.open_gaps("hardware_change"))
        (dev / "ttyUSB0").unlink()
        await pub.wait_for(lambda _: f"{dev}/ttyUSB0" not in pub.open_gaps("hardware_change"))
    assert not any(s.gap_name.endswith("tty7") or s.gap_name == "renderD128" for s in pub.signals)

    # restart: the baseline persists, a baseline device that vanished is "removed"
    (dev / "sdb").touch()
    monitor, pub = _monitor(tmp_path, nvidia_smi="")
    async with running(monitor):
        await pub.wait_for(lambda _: "sdb" in str(list(pub.open_gaps("hardware_change"))))
    assert pub.open_gaps("hardware_change")[f"{dev}/sdb"].facts["change"] == "added"
    # card1 is still added, as announced before the restart: open, not announced again
    assert monitor.ledger.is_open("hardware_change", "card1")
    assert "card1" not in {s.gap_name for s in pub.signals}


async def test_idle_accelerator_then_busy(tmp_path: Path) -> None:
    script, state = fake_nvidia_smi(tmp_path)
    monitor, pub = _monitor(
        tmp_path, nvidia_smi=str(script), interval_s=0.05, idle_window_s=0.3, idle_threshold_pct=10
    )
    async with running(monitor):
        await pub.wait_for(lambda _: "gpu0" in pub.open_gaps("idle_accelerator"))
        gap = pub.open_gaps("idle_accelerator")["gpu0"]
        assert gap.facts["device_name"] == "NVIDIA GeForce RTX 3090"
        assert gap.facts["utilization_pct"] == 2.0 and gap.facts["threshold_pct"] == 10
        assert gap.facts["gap_category"] == "resource_utilization"
        assert monitor.ctx.status.details["gpus"][0]["memory_total_mib"] == 24576.0
        assert monitor.ctx.status.details["nvidia_smi"].startswith("ok")
        set_gpus(state, GPU_NA)  # no figure: the gap stays
        set_gpus(state, GPU_BUSY)
        await pub.wait_for(lambda _: not pub.open_gaps("idle_accelerator"))
        resolved = pub.resolutions("idle_accelerator")
        assert len(resolved) == 1 and resolved[0].facts["utilization_pct"] == 97.0
        set_gpus(state, GPU_IDLE)
        await pub.wait_for(lambda _: "gpu0" in pub.open_gaps("idle_accelerator"))
    assert len(pub.gaps("idle_accelerator")) == 2  # each idle period announced once


async def test_restarts_reannounce_neither_an_idle_gpu_nor_a_hardware_change(
    tmp_path: Path,
) -> None:
    script, state = fake_nvidia_smi(tmp_path)
    section = {
        "nvidia_smi": str(script),
        "interval_s": 0.05,
        "idle_window_s": 0.3,
        "idle_threshold_pct": 10,
    }
    monitor, pub = _monitor(tmp_path, **section)
    async with running(monitor):
        await pub.wait_for(lambda _: "initial_scan_s" in monitor.ctx.status.details)
        (tmp_path / "drm" / "card1").mkdir()  # after the baseline: a hardware change
        await pub.wait_for(
            lambda _: "gpu0" in pub.open_gaps("idle_accelerator")
            and "card1" in pub.open_gaps("hardware_change")
        )
    # still idle, with other readings of the moment (utilisation, memory)
    set_gpus(state, GPU_IDLE.replace(", 2, 512,", ", 5, 600,"))
    for _restart in range(2):
        monitor, pub = _monitor(tmp_path, **section)
        async with running(monitor):
            await pub.wait_for(lambda _, m=monitor: "initial_scan_s" in m.ctx.status.details)
            assert monitor.ctx.status.details["gpus"][0]["utilization_pct"] == 5.0
            assert monitor.ledger.is_open("idle_accelerator", "gpu0")
        assert pub.signals == []


async def test_failing_nvidia_smi_is_not_a_crash(tmp_path: Path) -> None:
    script, _ = fake_nvidia_smi(tmp_path, exit_code=9)
    monitor, pub = _monitor(tmp_path, nvidia_smi=str(script), interval_s=0.05)
    async with running(monitor):
        await pub.wait_for(
            lambda _: monitor.ctx.status.details.get("nvidia_smi", "").startswith("failed")
        )
    assert "exited 9" in monitor.ctx.status.details["nvidia_smi"]
    assert pub.gaps("idle_accelerator") == []


async def test_one_shot_returns(tmp_path: Path) -> None:
    script, _ = fake_nvidia_smi(tmp_path)
    ctx, pub = make_context(
        "exploration",
        tmp_path,
        {"monitors": {"exploration": {"nvidia_smi": str(script)}}},
        one_shot=True,
    )
    monitor = ExplorationMonitor(ctx, dev_dir=tmp_path, drm_dir=tmp_path)
    await asyncio.wait_for(monitor.run(), 20)
    assert ctx.status.details["gpus"][0]["device"] == "gpu0"
    assert pub.signals == []

