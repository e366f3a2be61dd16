"""What the ChemBus bridge already sent, per question: kept across restarts.

``STATE_DIR/chembus/questions_sent.jsonl``: one line ``{"id", "key"}`` per send, latest
line per id wins. Appended (and flushed to the OS) per send, fsynced on close; a torn or
invalid line is skipped on load. Rewritten atomically to one line per id once it holds
more than twice that many lines (plus :data:`COMPACT_SLACK`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import orjson
import structlog

from ..checkpoint import atomic_write_bytes

log = structlog.get_logger("kloros_stream.sinks.sent")

COMPACT_SLACK = 1024


class SentLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sent: dict[str, str] = {}
        self._lines = 0
        self._fd: int | None = None

    def open(self) -> None:
        """Load the ledger (skipping damaged lines) and open it for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        invalid = 0
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as fh:
            for raw in fh:
                try:
                    entry = orjson.loads(raw)
                    qid, key = entry["id"], entry["key"]
                    if not (isinstance(qid, str) and isinstance(key, str)):
                        raise TypeError("id/key not strings")
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    invalid += 1
                    continue
                self.sent[qid] = key
                self._lines += 1
        if invalid:
            log.warning("chembus_ledger_lines_skipped", path=str(self.path), lines=invalid)
        self._compact_if_due(force=invalid > 0)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def was_sent(self, qid: str, key: str) -> bool:
        return self.sent.get(qid) == key

    def mark(self, qid: str, key: str) -> None:
        self.sent[qid] = key
        if self._fd is not None:
            os.write(self._fd, orjson.dumps({"id": qid, "key": key}) + b"\n")
            self._lines += 1
            self._compact_if_due()

    def _compact_if_due(self, force: bool = False) -> None:
        if not force and self._lines <= 2 * len(self.sent) + COMPACT_SLACK:
            return
        data = b"".join(orjson.dumps({"id": q, "key": k}) + b"\n" for q, k in self.sent.items())
        if self._fd is not None:
            os.close(self._fd)
        atomic_write_bytes(self.path, data)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lines = len(self.sent)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
