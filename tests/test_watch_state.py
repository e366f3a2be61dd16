"""A recursive watcher's bookkeeping: the known files by directory."""

from __future__ import annotations

from pathlib import Path

from kloros_stream.sources.watch_state import KnownFiles


def test_known_files_added_by_directory_report_only_the_new_ones() -> None:
    known = KnownFiles()
    top = Path("/r/pkg")
    assert known.add_in(top, []) == [] and len(known) == 0 and known.paths() == frozenset()
    assert known.add(top / "b.py")
    assert known.add_in(top, ["a.py", "b.py", "c.py"]) == ["a.py", "c.py"]
    assert known.add_in(top / "sub", ["d.py"]) == ["d.py"]
    assert len(known) == 4 and top / "sub" / "d.py" in known
    assert not known.add(top / "a.py")  # known already, by the directory's scan
    assert known.discard(top / "a.py") and top / "a.py" not in known
    assert known.pop_under(top) == [top / "b.py", top / "c.py", top / "sub" / "d.py"]
    assert len(known) == 0
