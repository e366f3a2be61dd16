"""A parse process (:func:`main`, started by :mod:`.parse_processes`): loads batches of
files for the source index, one request at a time.

Frames on stdin and stdout: an 8-byte little-endian length, then a pickle. A request is
``(jobs, spec)``, the answer the list :func:`~.records.load_batch` returns. The process
ends when its input closes. Anything else that would write to stdout goes to stderr, so
the answer stream stays clean. Only the service writes to this pipe.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
from typing import BinaryIO

from .records import load_batch

HEADER = 8


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame's body; None at the end of the stream."""
    head = stream.read(HEADER)
    if len(head) < HEADER:
        return None
    size = int.from_bytes(head, "little")
    body = stream.read(size)
    return body if len(body) == size else None


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(HEADER, "little") + body


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service ends it (Ctrl-C: no traceback)
    gc.disable()  # syntax trees hold no cycles: the collector would only rescan them
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print or log line lands on stderr, not in an answer
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    while (body := read_frame(requests)) is not None:
        jobs, spec = pickle.loads(body)
        answers.write(frame(pickle.dumps(load_batch(jobs, spec, trust_stat=False), 5)))
        answers.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
