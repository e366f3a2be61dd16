"""SignalHistory: append, rotation, consolidation in bounded chunks, torn tails."""

from __future__ import annotations

import contextlib
import gc
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

from kloros_stream.sinks.history import (
    Consolidation,
    SignalHistory,
    consolidate,
    iter_lines,
    truncate_torn_tail,
)


def signal(seq: int, name: str, kind: str = "CAPABILITY_GAP", pad: int = 0) -> bytes:
    return orjson.dumps(
        {
            "signal": kind,
            "ecosystem": "test",
            "facts": {
                "gap_type": "test_failure",
                "gap_name": name,
                "gap_category": "testing",
                "gap_reason": "failed" + "x" * pad,
            },
            "seq": seq,
        }
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    assert not data or data.endswith(b"\n")
    return [orjson.loads(line) for line in data.splitlines()]


def disk_usage(history: SignalHistory) -> int:
    paths = [
        history.path,
        history.archive,
        history.rotating,
        history.archive.with_name(history.archive.name + ".tmp"),
    ]
    total = 0
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size
    return total


def test_append_is_buffered_until_flush(tmp_path: Path) -> None:
    path = tmp_path / "h" / "history.jsonl"
    history = SignalHistory(path, max_bytes=1 << 20)
    history.append(signal(1, "a"))
    history.append(signal(2, "b") + b"\n")
    assert path.read_bytes() == b""
    assert history.stats["buffered"] > 0
    history.flush()
    assert [e["seq"] for e in read_lines(path)] == [1, 2]
    history.close()
    assert history.stats["appended"] == 2
    assert history.stats["bytes_written"] == path.stat().st_size


def test_buffer_flushes_itself_when_full(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    history = SignalHistory(path, max_bytes=1 << 20, buffer_bytes=1024)
    for i in range(50):
        history.append(signal(i, "a"))
    assert path.stat().st_size > 0
    assert history.stats["buffered"] < 1024
    history.close()
    assert [e["seq"] for e in read_lines(path)] == list(range(50))


def test_bad_lines_are_skipped(tmp_path: Path) -> None:
    history = SignalHistory(tmp_path / "history.jsonl", max_bytes=8192)
    history.append(b'{"a":\n1}')
    history.append(b"x" * 10_000)
    history.append(signal(1, "ok"))
    history.close()
    assert history.stats["skipped_lines"] == 2
    assert [e["seq"] for e in read_lines(history.path)] == [1]


def test_several_rotations_keep_latest_per_key_and_bound_disk(tmp_path: Path) -> None:
    max_bytes = 16_384
    history = SignalHistory(
        tmp_path / "history.jsonl", max_bytes=max_bytes, chunk_bytes=1000, buffer_bytes=2048
    )
    names = [f"tests/test_x.py::test_{k}" for k in range(20)]
    appended = []
    peak_disk = 0
    for seq in range(3000):
        kind = "CAPABILITY_GAP_RESOLVED" if seq % 7 == 0 else "CAPABILITY_GAP"
        line = signal(seq, names[seq % len(names)], kind)
        appended.append(orjson.loads(line))
        history.append(line)
        peak_disk = max(peak_disk, disk_usage(history))
    history.close()
    stats = history.stats
    assert stats["rotations"] >= 5
    assert stats["consolidations"] == stats["rotations"]
    assert peak_disk <= 3 * max_bytes + 2 * history.buffer_bytes
    assert not history.rotating.exists()

    live = read_lines(history.path)
    archive = read_lines(history.archive)
    assert live == appended[len(appended) - len(live) :]
    rotated = appended[: len(appended) - len(live)]
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in rotated:
        latest[(entry["signal"], entry["facts"]["gap_type"], entry["facts"]["gap_name"])] = entry
    expected = sorted(latest.values(), key=lambda e: e["seq"])
    assert archive == expected
    assert len(archive) == 2 * len(names)
    assert history.archive.stat().st_size <= max_bytes // 2


def test_key_cap_keeps_the_most_recent_keys(tmp_path: Path) -> None:
    history = SignalHistory(tmp_path / "history.jsonl", max_bytes=8192, max_keys=10)
    for seq in range(400):
        history.append(signal(seq, f"gap-{seq}"))
    history.close()
    assert history.stats["rotations"] >= 2
    archive = read_lines(history.archive)
    live = read_lines(history.path)
    assert len(archive) == 10
    first_live = live[0]["seq"] if live else 400
    assert [e["seq"] for e in archive] == list(range(first_live - 10, first_live))


def test_byte_cap_bounds_the_archive(tmp_path: Path) -> None:
    max_bytes = 8192
    history = SignalHistory(tmp_path / "history.jsonl", max_bytes=max_bytes)
    for seq in range(200):
        history.append(signal(seq, f"gap-{seq}", pad=300))
    history.close()
    assert history.stats["rotations"] >= 3
    assert 0 < history.archive.stat().st_size <= max_bytes // 2
    archive = read_lines(history.archive)
    seqs = [e["seq"] for e in archive]
    assert seqs == sorted(seqs)
    assert history.stats["last_consolidation"]["evicted"] > 0


def _consolidation_peak(tmp_path: Path, lines: int) -> tuple[int, Consolidation, int]:
    source = tmp_path / f"big-{lines}.jsonl"
    with open(source, "wb") as f:
        for seq in range(lines):
            f.write(signal(seq, f"gap-{seq % 5000}", pad=200) + b"\n")
    size = source.stat().st_size
    gc.collect()
    tracemalloc.start()
    try:
        result = consolidate(
            [source],
            tmp_path / f"out-{lines}.jsonl",
            max_keys=500,
            max_bytes=1 << 30,
            chunk_bytes=64 << 10,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result, size


def test_consolidation_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    small_peak, small, small_size = _consolidation_peak(tmp_path, 10_000)
    big_peak, big, big_size = _consolidation_peak(tmp_path, 60_000)
    assert big_size > 5 * small_size > 10_000_000
    assert small.kept == big.kept == 500
    assert big.lines_in == 60_000
    assert big_peak < 1_000_000
    assert big_peak < 1.5 * small_peak + 100_000


def test_history_memory_is_bounded_over_many_rotations(tmp_path: Path) -> None:
    max_bytes = 256 << 10
    gc.collect()
    tracemalloc.start()
    try:
        history = SignalHistory(
            tmp_path / "history.jsonl", max_bytes=max_bytes, max_keys=1000, chunk_bytes=32 << 10
        )
        for seq in range(40_000):
            history.append(signal(seq, f"gap-{seq % 3000}", pad=100))
        history.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    written = history.stats["bytes_written"]
    assert history.stats["rotations"] >= 10
    assert written > 40 * max_bytes
    assert peak < min(written // 16, 1 << 20)
    archive = read_lines(history.archive)
    assert 0 < len(archive) <= 1000
    assert len({e["facts"]["gap_name"] for e in archive}) == len(archive)
    assert history.archive.stat().st_size <= max_bytes // 2


def test_torn_last_line_is_cut_and_the_log_continues(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_bytes(signal(1, "a") + b"\n" + signal(2, "b")[:25])
    history = SignalHistory(path, max_bytes=1 << 20)
    assert history.stats["torn_bytes_truncated"] == 25
    history.append(signal(3, "c"))
    history.close()
    assert [e["seq"] for e in read_lines(path)] == [1, 3]


def test_truncate_torn_tail_scans_back_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one\n" + b"y" * 100)
    assert truncate_torn_tail(path, chunk_bytes=8) == 100
    assert path.read_bytes() == b"one\n"
    assert truncate_torn_tail(path, chunk_bytes=8) == 0
    path.write_bytes(b"z" * 50)
    assert truncate_torn_tail(path, chunk_bytes=8) == 50
    assert path.read_bytes() == b""
    assert truncate_torn_tail(tmp_path / "absent") == 0


def test_interrupted_consolidation_is_finished_on_start(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    archive = tmp_path / "history.jsonl.1"
    rotating = tmp_path / "history.jsonl.1.rotating"
    tmp = tmp_path / "history.jsonl.1.tmp"
    archive.write_bytes(signal(1, "a") + b"\n" + signal(2, "b") + b"\n")
    rotating.write_bytes(
        b"".join(signal(s, n) + b"\n" for s, n in [(3, "a"), (4, "c")])
        + b"not json\n"
        + signal(5, "d")[:10]
    )
    tmp.write_bytes(b"half written")
    history = SignalHistory(path, max_bytes=1 << 20)
    assert history.wait_consolidated(timeout=30)
    history.close()
    assert not rotating.exists()
    assert not tmp.exists()
    assert [e["seq"] for e in read_lines(archive)] == [2, 3, 4]
    last = history.stats["last_consolidation"]
    assert (last["invalid"], last["torn"], last["superseded"]) == (1, 1, 1)


def test_iter_lines_across_chunk_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "f"
    lines = [b"a" * n for n in (1, 5, 13, 2, 40, 3)]
    path.write_bytes(b"".join(line + b"\n" for line in lines) + b"tail")
    result = Consolidation()
    got = list(iter_lines(path, chunk_bytes=7, max_line_bytes=20, result=result))
    assert [line for _, line in got] == [b"a", b"a" * 5, b"a" * 13, b"aa", b"aaa"]
    data = path.read_bytes()
    assert all(data[off : off + len(line)] == line for off, line in got)
    assert (result.oversize, result.torn) == (1, 1)
