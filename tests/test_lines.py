"""LineSplitter: complete lines with offsets, partial lines held, over-long lines skipped
without being buffered whole, whatever the chunking."""

from __future__ import annotations

import pytest

from kloros_stream.sources.lines import LineSplitter

DATA = b"alpha\n" + b"x" * 50 + b"\nbeta\n\ngamma\n" + b"y" * 30 + b"\ndelta"


Split = tuple[list[tuple[int, bytes]], list[tuple[int, int]], "LineSplitter"]


def _split(data: bytes, size: int, limit: int = 20) -> Split:
    too_long: list[tuple[int, int]] = []
    s = LineSplitter(limit, lambda off, n: too_long.append((off, n)))
    out = []
    for i in range(0, len(data), size):
        out += s.feed(data[i:i + size])
    return out, too_long, s


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 1000])
def test_any_chunking_gives_the_same_lines_offsets_and_skips(size: int) -> None:
    lines, too_long, s = _split(DATA, size)
    assert lines == [(0, b"alpha"), (57, b"beta"), (62, b""), (63, b"gamma")]
    assert [off for off, _n in too_long] == [6, 69]  # each over-long line reported once
    assert s.offset == 100  # past the last newline
    assert s.pending and s.held == len(b"delta")  # the torn tail
    assert s.position == len(DATA)


def test_reset_and_drop_partial() -> None:
    s = LineSplitter(10, offset=5)
    assert s.feed(b"ab\ncd") == [(5, b"ab")]
    s.drop_partial()
    assert not s.pending and s.offset == 8
    s.reset(0)
    assert s.feed(b"x\n") == [(0, b"x")] and s.offset == 2
