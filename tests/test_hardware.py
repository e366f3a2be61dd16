"""Hardware parsers and the idle rule, on real-format text."""

from __future__ import annotations

from kloros_stream.analysis.hardware import (
    GpuSample,
    IdleTracker,
    device_changes,
    drm_cards,
    is_notable_device,
    parse_cpuinfo,
    parse_meminfo,
    parse_mounts,
    parse_nvidia_smi,
)

# Captured from `nvidia-smi --query-gpu=index,uuid,name,utilization.gpu,memory.used,
# memory.total --format=csv,noheader,nounits` on a two-GPU host (second GPU in MIG mode).
NVIDIA_SMI = """\
0, GPU-5a1c0b3e-8f0e-4b8e-9c7c-2d6c1f0e9a11, NVIDIA GeForce RTX 3090, 3, 1024, 24576
1, GPU-0d2f9b77-1e51-43c2-b0a5-7f3d7f6b2c42, NVIDIA A100-SXM4-40GB, [N/A], 0, 40960
"""

CPUINFO_X86 = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model\t\t: 17
model name\t: AMD EPYC 7B13
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu vme sse4_2 avx avx2 fma aes avx512f hypervisor
processor\t: 1
model name\t: AMD EPYC 7B13
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu vme sse4_2 avx avx2 fma aes avx512f hypervisor
processor\t: 2
model name\t: AMD EPYC 7B13
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu vme sse4_2 avx avx2 fma aes avx512f hypervisor
"""

CPUINFO_ARM = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve
CPU implementer\t: 0x41
processor\t: 1
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

MEMINFO = """\
MemTotal:       24684084 kB
MemFree:        24448072 kB
MemAvailable:   24397628 kB
SwapTotal:             0 kB
HugePages_Total:       0
"""

MOUNTS = """\
proc /proc proc rw,relatime 0 0
sysfs /sys sysfs rw,relatime 0 0
overlay / overlay rw,relatime,lowerdir=/a 0 0
/dev/vda / ext4 rw,relatime 0 0
/dev/vda /etc/hosts ext4 rw,relatime 0 0
/dev/loop3 /snap/core/1 squashfs ro 0 0
/dev/loop4 /mnt/img ext4 ro 0 0
/dev/nvme0n1p2 /mnt/my\\040data btrfs rw 0 0
server:/export /mnt/nfs nfs4 rw 0 0
tmpfs /run tmpfs rw 0 0
"""


def test_nvidia_smi_csv_with_not_available_fields() -> None:
    gpus = parse_nvidia_smi(NVIDIA_SMI)
    assert [g.device for g in gpus] == ["gpu0", "gpu1"]
    assert gpus[0].name == "NVIDIA GeForce RTX 3090"
    assert gpus[0].utilization_pct == 3.0
    assert gpus[0].memory_used_mib == 1024.0 and gpus[0].memory_total_mib == 24576.0
    assert gpus[1].utilization_pct is None
    assert gpus[1].uuid.startswith("GPU-0d2f")


def test_nvidia_smi_name_with_commas_and_bad_lines() -> None:
    text = (
        "0, GPU-1, Tesla, Rev B, 55, 10, 100\n"
        "garbage\n"
        "x, GPU-2, Foo, 1, 2, 3\n"
        "\n"
        "2, GPU-3, Bar, [Not Supported], [N/A], [N/A]\n"
    )
    gpus = parse_nvidia_smi(text)
    assert [(g.index, g.name) for g in gpus] == [(0, "Tesla, Rev B"), (2, "Bar")]
    assert gpus[1].memory_total_mib is None
    assert gpus[0].as_json()["device"] == "gpu0"


def test_cpuinfo_x86() -> None:
    cpu = parse_cpuinfo(CPUINFO_X86)
    assert cpu.model == "AMD EPYC 7B13"
    assert cpu.logical_cores == 3
    assert cpu.physical_cores == 2
    assert cpu.flags == ("sse4_2", "avx", "avx2", "fma", "avx512f", "aes", "hypervisor")


def test_cpuinfo_arm() -> None:
    cpu = parse_cpuinfo(CPUINFO_ARM)
    assert cpu.model == "BCM2835"
    assert cpu.logical_cores == 2 and cpu.physical_cores == 2
    assert "sve" in cpu.flags and "asimd" in cpu.flags and "avx" not in cpu.flags


def test_cpuinfo_empty() -> None:
    cpu = parse_cpuinfo("")
    assert cpu.model == "unknown" and cpu.logical_cores == 0


def test_meminfo() -> None:
    mem = parse_meminfo(MEMINFO)
    assert mem.total_bytes == 24684084 * 1024
    assert mem.available_bytes == 24397628 * 1024
    assert mem.swap_total_bytes == 0
    assert parse_meminfo("nonsense\n").total_bytes == 0


def test_mounts_keep_disks_once_per_device() -> None:
    disks = parse_mounts(MOUNTS)
    assert [(d.device, d.mountpoint, d.fstype) for d in disks] == [
        ("/dev/vda", "/", "ext4"),
        ("/dev/nvme0n1p2", "/mnt/my data", "btrfs"),
        ("server:/export", "/mnt/nfs", "nfs4"),
    ]


def test_drm_cards_and_notable_devices() -> None:
    names = ["card1", "card0-DP-1", "renderD128", "card0", "version", "card10", "card2"]
    assert drm_cards(names) == ["card0", "card1", "card2", "card10"]
    assert all(
        is_notable_device(n)
        for n in ("ttyUSB0", "ttyACM1", "video0", "nvidia0", "sda", "nvme0n1", "kfd", "hidraw3")
    )
    assert not any(
        is_notable_device(n)
        for n in ("tty1", "pts", "loop0", "null", "sda1", "nvme0n1p1", "shm", "dri")
    )


def test_device_changes_against_baseline() -> None:
    changes = device_changes(["/dev/sda", "card0"], ["/dev/sda", "/dev/ttyUSB0"])
    assert [(c.device, c.change) for c in changes] == [
        ("/dev/ttyUSB0", "added"),
        ("card0", "removed"),
    ]
    assert device_changes(["a"], ["a"]) == []


def _gpu(util: float | None, index: int = 0) -> GpuSample:
    return GpuSample(index, f"GPU-{index}", "Test GPU", util, 10.0, 100.0)


def test_idle_after_window_then_busy() -> None:
    tracker = IdleTracker(threshold_pct=10, window_s=60)
    assert tracker.observe(_gpu(5), 1000) is None
    assert tracker.observe(_gpu(9.9), 1030) is None
    went_idle = tracker.observe(_gpu(0), 1060)
    assert went_idle is not None and went_idle.idle and went_idle.since == 1000
    assert tracker.observe(_gpu(0), 1200) is None  # reported once
    busy = tracker.observe(_gpu(10), 1300)
    assert busy is not None and not busy.idle and busy.device == "gpu0"
    assert tracker.observe(_gpu(90), 1400) is None


def test_busy_sample_restarts_window_and_na_changes_nothing() -> None:
    tracker = IdleTracker(threshold_pct=10, window_s=60)
    tracker.observe(_gpu(1), 0)
    assert tracker.observe(_gpu(50), 30) is None  # busy before the window: no transition
    assert tracker.observe(_gpu(1), 40) is None
    assert tracker.observe(_gpu(None), 200) is None  # [N/A]: no evidence either way
    t = tracker.observe(_gpu(1), 100)
    assert t is not None and t.idle and t.since == 40


def test_state_roundtrip_and_vanished_device() -> None:
    tracker = IdleTracker(threshold_pct=10, window_s=60)
    tracker.observe_all([_gpu(0, 0), _gpu(0, 1)], 0)
    assert {t.device for t in tracker.observe_all([_gpu(0, 0), _gpu(0, 1)], 60)} == {"gpu0", "gpu1"}
    restored = IdleTracker(10, 60, state=tracker.state())
    assert restored.idle == {"gpu0", "gpu1"}
    gone = restored.observe_all([_gpu(0, 0)], 120)
    assert [(t.device, t.idle) for t in gone] == [("gpu1", False)]
    assert IdleTracker(10, 60, state={"idle_since": "bad", "idle": 3}).idle == set()
