"""A tailed file's identity and whether a checkpoint still matches it.

A file is identified by device, inode and a fingerprint: the sha256 of its first
up-to-:data:`FINGERPRINT_BYTES` bytes (extended as the file grows). Pure apart from opening
the file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FINGERPRINT_BYTES = 256

Checkpoint = tuple[int, int, str, int, int]
"""What a tailer's checkpoint holds: device, inode, fingerprint, its length, offset."""


def fingerprint(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()


@dataclass(slots=True)
class OpenedFile:
    fd: int
    st: os.stat_result
    head: bytes
    """The first up-to-:data:`FINGERPRINT_BYTES` bytes."""


def open_regular(path: Path) -> OpenedFile | None:
    """Open ``path`` for reading and read its head; None if it does not exist.

    Raises OSError if it cannot be read or is not a regular file (no descriptor leaks).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")
        head = os.pread(fd, FINGERPRINT_BYTES, 0)
    except OSError:
        os.close(fd)
        raise
    return OpenedFile(fd, st, head)


def checkpoint_fields(path: Path, state: Checkpoint, saved_at: float) -> dict[str, Any]:
    """The checkpoint record saved for ``state``."""
    dev, ino, digest, head_len, offset = state
    return {
        "path": str(path),
        "dev": dev,
        "ino": ino,
        "fingerprint": digest,
        "fingerprint_len": head_len,
        "offset": offset,
        "saved_at": saved_at,
    }


def resume_verdict(data: dict[str, Any], st: os.stat_result, head: bytes) -> tuple[int, str]:
    """``(offset, reason)`` for resuming the just-opened file (``st``, ``head``) from a
    saved checkpoint: reason ``"resumed"`` if the checkpoint matches, else why not
    (``truncated``, ``different_file``, ``different_inode``). Raises KeyError, TypeError or
    ValueError for a malformed checkpoint.

    It matches if the fingerprint does, the file is not shorter than the offset, and either
    the inode matches or the fingerprint covers a full :data:`FINGERPRINT_BYTES` (a copy
    of the same file).
    """
    offset = int(data["offset"])
    digest = str(data["fingerprint"])
    head_len = int(data["fingerprint_len"])
    same_inode = (int(data["dev"]), int(data["ino"])) == (st.st_dev, st.st_ino)
    head = head[:head_len]
    if st.st_size < offset:
        return offset, "truncated"
    if len(head) < head_len or fingerprint(head) != digest:
        return offset, "different_file"
    if not same_inode and head_len < FINGERPRINT_BYTES:
        return offset, "different_inode"
    return offset, "resumed"
