"""exception_files: log-file lines with the offset just past each."""

from __future__ import annotations

from pathlib import Path

from kloros_stream.monitors.exception_files import batch_lines, record_ends
from kloros_stream.sources.tailer import TailBatch


def test_record_ends_count_back_from_the_batch_end() -> None:
    # "ab\nc\n\nxyz\n" read from offset 100: the batch ends at 110
    assert record_ends([b"ab", b"c", b"", b"xyz"], 110) == [103, 105, 106, 110]
    assert record_ends([], 7) == []


def test_batch_lines_decode_leniently_and_strip_cr() -> None:
    batch = TailBatch(
        records=[b"one\r", b"\xff two"], observed_at=1.0, path=Path("/var/log/app.log"), offset=12
    )
    assert list(batch_lines(batch)) == [("one", 6), ("\ufffd two", 12)]
