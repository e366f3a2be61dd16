"""Hardware inventory parsers and the idle-accelerator rule (pure: no I/O, no clock).

Inputs are the texts the kernel and drivers print: ``nvidia-smi --query-gpu=index,uuid,
name,utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits``,
``/proc/cpuinfo``, ``/proc/meminfo``, ``/proc/mounts`` and directory listings of ``/dev``
and ``/sys/class/drm``. Malformed lines are logged and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)

NVIDIA_SMI_QUERY = "index,uuid,name,utilization.gpu,memory.used,memory.total"
NVIDIA_SMI_ARGS: tuple[str, ...] = (
    f"--query-gpu={NVIDIA_SMI_QUERY}",
    "--format=csv,noheader,nounits",
)

NOTABLE_CPU_FLAGS: tuple[str, ...] = (
    # x86: vector and matrix units, crypto, virtualisation
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "aes",
    "sha_ni",
    "vmx",
    "svm",
    "hypervisor",
    # arm64 (the "Features" line)
    "asimd",
    "asimdhp",
    "fphp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
    "sha2",
    "sha3",
)

_DRM_CARD = re.compile(r"card\d+")
_DEVICE_NAME = re.compile(
    r"(ttyUSB\d+|ttyACM\d+|video\d+|media\d+|nvidia\d+|nvidiactl|kfd|accel\d+|hidraw\d+"
    r"|sd[a-z]+|nvme\d+n\d+|mmcblk\d+|sr\d+|fb\d+|accel)"
)
"""Top-level ``/dev`` names that are hardware worth asking about (not ttys, ptys, loops;
DRM cards are reported as ``cardN`` from ``/dev/dri`` and ``/sys/class/drm``)."""

_PSEUDO_FS = frozenset(
    {
        "proc",
        "sysfs",
        "tmpfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "mqueue",
        "debugfs",
        "tracefs",
        "securityfs",
        "pstore",
        "bpf",
        "autofs",
        "configfs",
        "fusectl",
        "hugetlbfs",
        "binfmt_misc",
        "nsfs",
        "rpc_pipefs",
        "ramfs",
        "efivarfs",
        "squashfs",
        "overlay",
    }
)
_NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "zfs", "fuse.sshfs", "9p", "virtiofs"})


# -- GPUs ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GpuSample:
    """One line of ``nvidia-smi`` output; numbers are None where it printed ``[N/A]``."""

    index: int
    uuid: str
    name: str
    utilization_pct: float | None
    memory_used_mib: float | None
    memory_total_mib: float | None

    @property
    def device(self) -> str:
        """The gap name of this accelerator: ``gpu<index>``."""
        return f"gpu{self.index}"

    def as_json(self) -> dict[str, Any]:
        return {"device": self.device, **asdict(self)}


def _number(text: str) -> float | None:
    text = text.strip()
    if not text or text.startswith("["):  # [N/A], [Not Supported], [Unknown Error]
        return None
    return float(text)


def parse_nvidia_smi(text: str) -> list[GpuSample]:
    """GPUs from the CSV of :data:`NVIDIA_SMI_ARGS` (one per line; the name may hold commas)."""
    gpus: list[GpuSample] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            if len(parts) < 6:
                raise ValueError(f"expected 6 fields, got {len(parts)}")
            gpus.append(
                GpuSample(
                    index=int(parts[0]),
                    uuid=parts[1],
                    name=", ".join(parts[2:-3]),
                    utilization_pct=_number(parts[-3]),
                    memory_used_mib=_number(parts[-2]),
                    memory_total_mib=_number(parts[-1]),
                )
            )
        except ValueError as err:
            log.warning("nvidia_smi_line_skipped", line=lineno, text=line[:200], error=str(err))
    return gpus


# -- CPU, memory, disks --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CpuInfo:
    model: str
    logical_cores: int
    physical_cores: int
    flags: tuple[str, ...] = field(default=())
    """The :data:`NOTABLE_CPU_FLAGS` this CPU has, in that order."""


def parse_cpuinfo(text: str) -> CpuInfo:
    """Model, core counts and notable flags from ``/proc/cpuinfo`` (x86 and arm64)."""
    model = ""
    logical = 0
    cores: set[tuple[str, str]] = set()
    flags: set[str] = set()
    physical_id = core_id = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "processor" and value.isdigit():
            logical += 1
        elif key in ("model name", "model", "hardware", "cpu model") and not model:
            if key != "model" or not value.isdigit():  # x86 "model : 17" is a number
                model = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
            cores.add((physical_id, core_id))
    notable = tuple(f for f in NOTABLE_CPU_FLAGS if f in flags)
    return CpuInfo(
        model=model or "unknown",
        logical_cores=logical,
        physical_cores=len(cores) or logical,
        flags=notable,
    )


@dataclass(frozen=True, slots=True)
class MemInfo:
    total_bytes: int
    available_bytes: int | None
    swap_total_bytes: int | None


def parse_meminfo(text: str) -> MemInfo:
    """Total, available and swap memory from ``/proc/meminfo`` (values in kB)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        fields = rest.split()
        if sep and fields and fields[0].isdigit():
            scale = 1024 if len(fields) > 1 and fields[1].lower() == "kb" else 1
            values[key.strip()] = int(fields[0]) * scale
    return MemInfo(
        total_bytes=values.get("MemTotal", 0),
        available_bytes=values.get("MemAvailable"),
        swap_total_bytes=values.get("SwapTotal"),
    )


@dataclass(frozen=True, slots=True)
class Mount:
    device: str
    mountpoint: str
    fstype: str


def _unescape(field_text: str) -> str:
    """``/proc/mounts`` writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def parse_mounts(text: str) -> list[Mount]:
    """Disk-backed and network filesystems from ``/proc/mounts``, one per device (the first
    mount of a device wins: bind mounts of it are skipped)."""
    disks: list[Mount] = []
    seen: set[str] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mountpoint, fstype = (_unescape(f) for f in fields[:3])
        if fstype in _PSEUDO_FS or device in seen:
            continue
        on_block = device.startswith("/dev/") and not device.startswith("/dev/loop")
        if on_block or fstype in _NETWORK_FS:
            seen.add(device)
            disks.append(Mount(device, mountpoint, fstype))
    return disks


# -- device nodes --------------------------------------------------------------------------
def drm_cards(names: Iterable[str]) -> list[str]:
    """The ``cardN`` entries of a ``/sys/class/drm`` or ``/dev/dri`` listing (not the
    connectors like ``card0-DP-1``, not ``renderD128``)."""
    return sorted({n for n in names if _DRM_CARD.fullmatch(n)}, key=_natural)


def is_notable_device(name: str) -> bool:
    """Whether a top-level ``/dev`` entry is hardware worth a question."""
    return _DEVICE_NAME.fullmatch(name) is not None


def _natural(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.*?)(\d+)", text)
    return (m.group(1), int(m.group(2))) if m else (text, -1)


@dataclass(frozen=True, slots=True)
class DeviceChange:
    device: str
    change: str
    """``added`` (present now, absent from the baseline) or ``removed`` (the reverse)."""


def device_changes(baseline: Iterable[str], current: Iterable[str]) -> list[DeviceChange]:
    """How ``current`` differs from ``baseline``: each difference is one open change."""
    before, now = set(baseline), set(current)
    added = [DeviceChange(d, "added") for d in sorted(now - before)]
    removed = [DeviceChange(d, "removed") for d in sorted(before - now)]
    return added + removed


# -- the idle rule -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IdleTransition:
    device: str
    idle: bool
    """True: idle for the whole window (open the gap). False: busy again (resolve it)."""
    since: float
    sample: GpuSample | None = None


class IdleTracker:
    """Per-device idle windows from utilisation samples.

    A sample below ``threshold_pct`` starts (or continues) an idle period; once the
    period spans ``window_s`` the device is *idle* (one transition). A sample at or above
    the threshold ends the period, and if the device was idle, reports it busy again. A
    sample without a utilisation figure (``[N/A]``) changes nothing. Times are the
    caller's wall-clock seconds, so the state survives a restart via :meth:`state`.
    """

    def __init__(
        self, threshold_pct: float, window_s: float, state: dict[str, Any] | None = None
    ) -> None:
        self.threshold_pct = threshold_pct
        self.window_s = window_s
        self.idle_since: dict[str, float] = {}
        self.idle: set[str] = set()
        if state:
            self._load(state)

    def _load(self, state: dict[str, Any]) -> None:
        since = state.get("idle_since")
        if isinstance(since, dict):
            self.idle_since = {
                str(k): float(v) for k, v in since.items() if isinstance(v, (int, float))
            }
        idle = state.get("idle")
        if isinstance(idle, list):
            self.idle = {str(d) for d in idle if d in self.idle_since}

    def state(self) -> dict[str, Any]:
        """JSON-able state for a checkpoint."""
        return {"idle_since": dict(self.idle_since), "idle": sorted(self.idle)}

    def observe(self, sample: GpuSample, now: float) -> IdleTransition | None:
        device, util = sample.device, sample.utilization_pct
        if util is None:
            return None
        if util < self.threshold_pct:
            since = self.idle_since.setdefault(device, now)
            if device not in self.idle and now - since >= self.window_s:
                self.idle.add(device)
                return IdleTransition(device, True, since, sample)
            return None
        since = self.idle_since.pop(device, now)
        if device in self.idle:
            self.idle.discard(device)
            return IdleTransition(device, False, since, sample)
        return None

    def restart_windows(self, now: float) -> None:
        """Samples are missing (e.g. the service was down): idle periods of devices not
        yet idle start again at ``now``."""
        for device in self.idle_since:
            if device not in self.idle:
                self.idle_since[device] = now

    def forget(self, device: str, now: float) -> IdleTransition | None:
        """The device is gone: an open idle gap resolves."""
        since = self.idle_since.pop(device, now)
        if device in self.idle:
            self.idle.discard(device)
            return IdleTransition(device, False, since)
        return None

    def observe_all(self, samples: Iterable[GpuSample], now: float) -> list[IdleTransition]:
        """Observe one sampling round; devices missing from it are forgotten."""
        out: list[IdleTransition] = []
        present = set()
        for sample in samples:
            present.add(sample.device)
            if (t := self.observe(sample, now)) is not None:
                out.append(t)
        for device in sorted(set(self.idle_since) - present):
            if (t := self.forget(device, now)) is not None:
                out.append(t)
        return out
