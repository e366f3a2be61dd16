"""Append-only files that survive a crash: the one torn-tail recovery (the feed, the
signal history)."""

from __future__ import annotations

import os
from pathlib import Path

CHUNK_BYTES = 65536


def cut_torn_tail(path: Path, chunk_bytes: int = CHUNK_BYTES) -> tuple[int, int]:
    """Cut a final line without its newline (a write torn by a crash), reading backwards
    ``chunk_bytes`` at a time; returns (valid end, bytes cut). A missing file is empty."""
    try:
        fh = path.open("r+b")
    except FileNotFoundError:
        return 0, 0
    with fh:
        size = fh.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - chunk_bytes)
            fh.seek(start)
            chunk = fh.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                end = start + nl + 1
                break
            end = start
        if end < size:
            fh.truncate(end)
            os.fsync(fh.fileno())
    return end, size - end
