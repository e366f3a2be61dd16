"""What a tailer hands on: :class:`TailBatch`, and the lines of a file made into records.

:class:`RecordParser` turns complete lines into records (the bytes themselves, or with
``parse_json`` the JSON objects among them), counts what it skipped (over-long lines,
malformed JSON) and logs it rate-limited: the first 20 of each kind, then every 1000th.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

log = structlog.get_logger(__name__)

_LOG_FIRST = 20
_LOG_EVERY = 1000


@dataclass(slots=True)
class TailBatch:
    records: list[Any]
    """bytes lines (newline stripped) or, with ``parse_json=True``, dicts."""
    observed_at: float
    """``time.time()`` of the inotify event (or read) that produced the batch."""
    path: Path
    offset: int = 0
    """File offset just past the batch's last line."""


class RecordParser:
    """Lines of ``path`` into records; counts ``lines``, ``skipped_long`` and
    ``skipped_malformed`` in ``stats`` (shared with the tailer)."""

    def __init__(
        self, path: Path, stats: dict[str, int], *, parse_json: bool, max_line_bytes: int
    ) -> None:
        self.path = path
        self.stats = stats
        self._parse_json = parse_json
        self._max_line = max_line_bytes
        self._log_counts: dict[str, int] = {}

    def records(self, lines: list[bytes]) -> list[Any]:
        if not self._parse_json:
            self.stats["lines"] += len(lines)
            return lines
        records = []
        loads = orjson.loads
        for line in lines:
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as err:
                if line.strip():
                    self._malformed(line, str(err))
                continue
            if type(obj) is dict:
                records.append(obj)
            else:
                self._malformed(line, f"not an object: {type(obj).__name__}")
        self.stats["lines"] += len(records)
        return records

    def too_long(self, offset: int, seen: int) -> None:
        """A line longer than ``max_line_bytes`` was skipped (the splitter's callback)."""
        self.stats["skipped_long"] += 1
        self._log_limited(
            "line_too_long",
            path=str(self.path),
            offset=offset,
            bytes_seen=seen,
            max_line_bytes=self._max_line,
        )

    def _malformed(self, line: bytes, error: str) -> None:
        self.stats["skipped_malformed"] += 1
        self._log_limited(
            "malformed_json",
            path=str(self.path),
            sample=repr(line[:80]),
            length=len(line),
            error=error[:120],
        )

    def _log_limited(self, event: str, **fields: Any) -> None:
        count = self._log_counts.get(event, 0) + 1
        self._log_counts[event] = count
        if count <= _LOG_FIRST or count % _LOG_EVERY == 0:
            log.warning(event, count=count, **fields)
