"""Atomic checkpoints: whole files or nothing, and frozen stores that save nothing."""

from __future__ import annotations

from pathlib import Path

from kloros_stream.checkpoint import CheckpointStore, atomic_write_bytes, read_only_store


def test_save_and_load_round_trip_per_child(tmp_path: Path) -> None:
    root = CheckpointStore(tmp_path)
    chaos = root.child("chaos")
    chaos.save("state", {"offset": 42, "ids": [1, 2]})
    assert chaos.load("state") == {"offset": 42, "ids": [1, 2]}
    assert (tmp_path / "chaos" / "state.json").is_file()
    assert root.load("state") is None


def test_an_unreadable_checkpoint_loads_as_none(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.path("broken").write_bytes(b'{"offset": 4')  # torn by a crash elsewhere
    assert store.load("broken") is None


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.json"
    atomic_write_bytes(target, b"{}")
    atomic_write_bytes(target, b'{"x": 1}')
    assert target.read_bytes() == b'{"x": 1}'
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_a_frozen_store_and_its_children_save_nothing(tmp_path: Path) -> None:
    root = CheckpointStore(tmp_path)
    monitor = root.child("test").child("reports")
    monitor.save("state", {"offset": 1})
    root.freeze()
    monitor.save("state", {"offset": 999})  # a straggler after the drain
    root.child("other").save("state", {"offset": 5})
    assert monitor.load("state") == {"offset": 1}
    assert root.child("other").load("state") is None


def test_the_read_only_store_of_scan_loads_and_saves_nothing(tmp_path: Path) -> None:
    store = read_only_store()
    store.save("state", {"offset": 1})
    assert store.load("state") is None
