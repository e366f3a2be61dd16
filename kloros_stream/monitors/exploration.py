"""exploration: the hardware inventory, device arrival and removal, idle accelerators.

* At start: CPU (model, cores, notable flags), memory, disks, GPUs (``nvidia-smi`` CSV,
  path from config) and DRM cards; shown in ``/health`` under this monitor's ``details``.
* Device arrival and removal are event-driven: inotify on ``/dev`` (notable top-level
  nodes such as ``ttyUSB0``, ``video0``, ``nvidia0``, ``sda``) and ``/dev/dri`` (cards).
  ``/sys/class/drm`` gives no inotify events (sysfs), so it is re-read at each sampling
  tick. The device set of the first start is the *baseline* (checkpoint); a device added
  to or removed from it is a ``hardware_change`` gap, resolved when the device set is back
  to the baseline for that device.
* GPU utilisation is sampled every ``interval_s``; below ``idle_threshold_pct`` for
  ``idle_window_s`` is an ``idle_accelerator`` gap, resolved when the GPU gets busy (or
  vanishes). No ``nvidia-smi``: that part is absent, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from asyncinotify import Mask

from ..analysis.capabilities import find_executable, path_dirs
from ..analysis.hardware import (
    NVIDIA_SMI_ARGS,
    GpuSample,
    IdleTracker,
    IdleTransition,
    device_changes,
    drm_cards,
    is_notable_device,
    parse_cpuinfo,
    parse_meminfo,
    parse_mounts,
    parse_nvidia_smi,
)
from ..config import ExplorationConfig
from ..sources.flatwatch import DirChange, FlatWatcher
from .base import Monitor, MonitorContext
from .ledger import GapLedger

NVIDIA_SMI_TIMEOUT_S = 20.0
_DEV_MASK = Mask.CREATE | Mask.DELETE | Mask.MOVED_FROM | Mask.MOVED_TO
"""No IN_ATTRIB on /dev: tty permission changes at every login are not hardware."""


class ExplorationMonitor(Monitor[ExplorationConfig]):
    """Hardware inventory, device changes and idle GPUs."""

    name = "exploration"
    ecosystem = "hardware"
    config_model = ExplorationConfig

    def __init__(
        self,
        ctx: MonitorContext,
        *,
        dev_dir: Path = Path("/dev"),
        drm_dir: Path = Path("/sys/class/drm"),
        proc_dir: Path = Path("/proc"),
    ) -> None:
        super().__init__(ctx)
        cfg = self.cfg
        self.dev_dir = dev_dir
        self.drm_dir = drm_dir
        self.proc_dir = proc_dir
        self.ledger = GapLedger(ctx, self.ecosystem)
        saved = ctx.checkpoints.load("idle")
        saved = saved if isinstance(saved, dict) else {}
        self.tracker = IdleTracker(cfg.idle_threshold_pct, cfg.idle_window_s, state=saved)
        self.last_sampled_at = saved.get("sampled_at")
        self._dri_real = Path(os.path.realpath(dev_dir / "dri"))
        self.baseline: set[str] | None = None
        self.devices: set[str] = set()
        self.gpus: list[GpuSample] = []
        self._smi_problem: str | None = None
        self._smi_absent = False

    # -- run ------------------------------------------------------------------------------
    async def run(self) -> None:
        started = time.monotonic()
        details = self.ctx.status.details
        details["inventory"] = await asyncio.to_thread(self.static_inventory)
        details["sources"] = {
            "dev": f"inotify on {self.dev_dir} and {self.dev_dir / 'dri'}",
            "drm": f"{self.drm_dir}: sysfs gives no inotify events; re-read every "
            f"{self.cfg.interval_s:g}s",
        }
        self.devices = self.current_devices()
        saved = self.ctx.checkpoints.load("baseline")
        if isinstance(saved, list):
            self.baseline = {str(d) for d in saved}
        else:
            self.baseline = set(self.devices)
            if not self.ctx.one_shot:
                self.ctx.checkpoints.save("baseline", sorted(self.baseline))
        self.apply_devices(self.devices)
        await self.sample_gpus(first=True)
        self.ledger.reconcile()
        details["initial_scan_s"] = round(time.monotonic() - started, 3)
        self.log.info(
            "hardware_inventory",
            devices=len(self.devices),
            gpus=len(self.gpus),
            nvidia_smi=details.get("nvidia_smi"),
        )
        if self.ctx.one_shot:
            return
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._follow_dev())
                tg.create_task(self._sample_loop())
        finally:
            self.ledger.flush()

    # -- inventory ------------------------------------------------------------------------
    def _read(self, path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            self.log.info("inventory_source_unreadable", path=str(path), error=str(err))
            return ""

    def static_inventory(self) -> dict[str, Any]:
        """CPU, memory and disks (runs in a thread: a network mount's statvfs may block)."""
        cpu = parse_cpuinfo(self._read(self.proc_dir / "cpuinfo"))
        mem = parse_meminfo(self._read(self.proc_dir / "meminfo"))
        disks = []
        for mount in parse_mounts(self._read(self.proc_dir / "mounts")):
            entry: dict[str, Any] = {
                "device": mount.device,
                "mountpoint": mount.mountpoint,
                "fstype": mount.fstype,
            }
            with contextlib.suppress(OSError):
                st = os.statvfs(mount.mountpoint)
                entry["total_bytes"] = st.f_frsize * st.f_blocks
                entry["free_bytes"] = st.f_frsize * st.f_bavail
            disks.append(entry)
        return {
            "cpu": {
                "model": cpu.model,
                "logical_cores": cpu.logical_cores,
                "physical_cores": cpu.physical_cores,
                "flags": list(cpu.flags),
            },
            "memory": {
                "total_bytes": mem.total_bytes,
                "available_bytes": mem.available_bytes,
                "swap_total_bytes": mem.swap_total_bytes,
            },
            "disks": disks,
        }

    def _listdir(self, directory: Path) -> list[str]:
        try:
            return os.listdir(directory)
        except OSError:
            return []

    def current_devices(self) -> set[str]:
        """Notable ``/dev`` nodes (as ``/dev/<name>``) and DRM cards (``cardN``)."""
        nodes = {str(self.dev_dir / n) for n in self._listdir(self.dev_dir) if is_notable_device(n)}
        cards = set(drm_cards(self._listdir(self.dev_dir / "dri")))
        cards |= set(drm_cards(self._listdir(self.drm_dir)))
        return nodes | cards

    # -- device changes -------------------------------------------------------------------
    def apply_devices(self, devices: set[str], observed_at: float | None = None) -> None:
        """Compare ``devices`` with the baseline; open and resolve ``hardware_change``."""
        assert self.baseline is not None
        self.devices = devices
        changes = {c.device: c.change for c in device_changes(self.baseline, devices)}
        for device, change in changes.items():
            self.ledger.set(
                "hardware_change",
                device,
                gap_category="hardware_inventory",
                gap_reason=f"device {device} was {change} since the hardware baseline",
                observed_at=observed_at,
                change=change,
            )
        for device in self.ledger.names("hardware_change") - set(changes):
            self.ledger.clear(
                "hardware_change",
                device,
                observed_at=observed_at,
                gap_reason=f"device {device} is back to its baseline state",
            )
        self.ledger.save()
        self.ctx.status.details["devices"] = sorted(devices)

    async def _follow_dev(self) -> None:
        targets = [self.dev_dir, self.dev_dir / "dri"]
        async with FlatWatcher(targets, mask=_DEV_MASK, on_error=self.watch_error) as w:
            self.apply_devices(self.current_devices())  # changes before the watch existed
            async for batch in w.batches():
                if any(self._relevant(c) for c in batch):
                    observed_at = min(c.observed_at for c in batch)
                    self.ctx.touch(observed_at)
                    self.apply_devices(self.current_devices(), observed_at)

    def _relevant(self, change: DirChange) -> bool:
        if change.name is None:
            return True
        if change.directory == self._dri_real:
            return bool(drm_cards([change.name]))
        return is_notable_device(change.name)


    # -- GPUs -----------------------------------------------------------------------------
    async def _sample_loop(self) -> None:
        """Every ``interval_s`` (on a fixed grid, no drift): GPUs and the DRM listing."""
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.cfg.interval_s
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += self.cfg.interval_s
            if next_at < loop.time():  # the loop was stalled: skip the missed ticks
                next_at = loop.time() + self.cfg.interval_s
            devices = self.current_devices()
            if devices != self.devices:
                self.apply_devices(devices)
            await self.sample_gpus()

    async def sample_gpus(self, *, first: bool = False) -> None:
        samples = await self.run_nvidia_smi()
        if samples is None:
            if first or self._smi_absent:  # no nvidia-smi (any more): nothing can be idle
                for t in self.tracker.observe_all([], time.time()):
                    self._idle_transition(t)
                self._save_tracker()
            return
        now = time.time()
        if first and not self._continuous(now):
            self.tracker.restart_windows(now)  # no samples while we were down: start over
        self.gpus = samples
        self.ctx.status.details["gpus"] = [g.as_json() for g in samples]
        for transition in self.tracker.observe_all(samples, now):
            self._idle_transition(transition)
        if first:  # still idle since before the restart: the ledger publishes only a change
            for sample in samples:
                if sample.device in self.tracker.idle:
                    self._idle_gap(sample, self.tracker.idle_since[sample.device])
        self.ledger.save()
        self._save_tracker()

    def _continuous(self, now: float) -> bool:
        """Whether the saved idle windows reach up to now (the last sample before a
        restart is at most two intervals old)."""
        last = self.last_sampled_at
        return isinstance(last, (int, float)) and now - last <= 2 * self.cfg.interval_s

    def _save_tracker(self) -> None:
        self.last_sampled_at = time.time()
        if not self.ctx.one_shot:
            self.ctx.checkpoints.save(
                "idle", {**self.tracker.state(), "sampled_at": self.last_sampled_at}
            )

    def _idle_transition(self, t: IdleTransition) -> None:
        if t.idle and t.sample is not None:
            self._idle_gap(t.sample, t.since)
        elif not t.idle:
            util = t.sample.utilization_pct if t.sample is not None else None
            self.ledger.clear(
                "idle_accelerator",
                t.device,
                gap_reason=(
                    f"{t.device} is busy again ({util:g}% utilisation)"
                    if util is not None
                    else f"{t.device} is gone"
                ),
                utilization_pct=util,
            )

    def _idle_gap(self, sample: GpuSample, since: float) -> None:
        thr = self.cfg.idle_threshold_pct
        minutes = self.cfg.idle_window_s / 60
        self.ledger.set(
            "idle_accelerator",
            sample.device,
            gap_category="resource_utilization",
            gap_reason=(
                f"GPU {sample.index} ({sample.name}) has been below {thr:g}% "
                f"utilisation for {minutes:g} min"
            ),
            volatile=("utilization_pct", "memory_used_mib"),
            device_name=sample.name,
            idle_minutes=minutes,
            utilization_pct=sample.utilization_pct,
            threshold_pct=thr,
            uuid=sample.uuid,
            memory_used_mib=sample.memory_used_mib,
            memory_total_mib=sample.memory_total_mib,
            idle_since=since,
        )

    async def run_nvidia_smi(self) -> list[GpuSample] | None:
        """One sample, or None when nvidia-smi is absent or failed (logged once)."""
        if not self.cfg.nvidia_smi:
            self._smi_state("absent", "nvidia_smi is not configured")
            return None
        exe = find_executable(self.cfg.nvidia_smi, path_dirs(os.environ.get("PATH", "")))
        if exe is None:
            self._smi_state("absent", f"{self.cfg.nvidia_smi} not found: no NVIDIA GPUs")
            return None
        try:
            proc = await asyncio.create_subprocess_exec(
                str(exe),
                *NVIDIA_SMI_ARGS,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as err:
            self._smi_state("failed", f"{exe}: {err}")
            return None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), NVIDIA_SMI_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            self._smi_state("failed", f"{exe} did not answer within {NVIDIA_SMI_TIMEOUT_S:g}s")
            return None
        if proc.returncode != 0:
            text = (err or out).decode("utf-8", "replace").strip().splitlines()
            self._smi_state("failed", f"{exe} exited {proc.returncode}: {text[0] if text else ''}")
            return None
        self._smi_state("ok", str(exe))
        return parse_nvidia_smi(out.decode("utf-8", "replace"))

    def _smi_state(self, state: str, message: str) -> None:
        self._smi_absent = state == "absent"
        self.ctx.status.details["nvidia_smi"] = f"{state}: {message}"
        if message != self._smi_problem:
            self._smi_problem = message
            level = self.log.warning if state == "failed" else self.log.info
            level("nvidia_smi_state", state=state, detail=message)
