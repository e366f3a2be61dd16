"""The exception monitor's log-file side: each ``log_files`` entry followed by a
checkpointing :class:`~kloros_stream.sources.tailer.FileTailer`, its lines handed on with
the file offset just past each (the identity of an occurrence in a file)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..sources.tailer import FileTailer, TailBatch
from .base import MonitorContext


@dataclass(slots=True)
class FileMeta:
    """What the assembler keeps of a log-file line of a traceback."""

    path: str
    offset: int
    """Just past the line."""
    wall: float


async def follow_log_file(
    path: Path,
    ctx: MonitorContext,
    on_batch: Callable[[TailBatch], None],
    *,
    max_line_bytes: int,
) -> None:
    """Tail ``path`` (from its checkpoint; from its start and to its end in one-shot),
    hand each batch to ``on_batch`` and count the tailer's skips in the monitor status."""
    tailer = FileTailer(
        path,
        ctx.checkpoints,
        name=f"file-{path}",
        max_line_bytes=max_line_bytes,
        parse_json=False,
    )
    files = ctx.status.details.setdefault("log_files", {})
    files[str(path)] = "following" if not ctx.one_shot else "scan"
    seen = dict.fromkeys(tailer.stats, 0)
    async with contextlib.aclosing(tailer.batches(follow=not ctx.one_shot)) as it:
        async for batch in it:
            on_batch(batch)
            for name, value in tailer.stats.items():
                if value != seen[name]:
                    ctx.status.count(f"file_{name}", value - seen[name])
                    seen[name] = value


def batch_lines(batch: TailBatch) -> Iterator[tuple[str, int]]:
    """Each line of the batch (decoded leniently, ``\\r`` stripped) with the file offset just
    past it, newline included."""
    ends = record_ends(batch.records, batch.offset)
    for raw, end in zip(batch.records, ends, strict=True):
        yield raw.decode("utf-8", "replace").rstrip("\r"), end


def record_ends(records: list[bytes], end: int) -> list[int]:
    """File offset just past each record (newline included), from the batch's end."""
    ends = [0] * len(records)
    for i in range(len(records) - 1, -1, -1):
        ends[i] = end
        end -= len(records[i]) + 1
    return ends
