"""The question index: a SQLite table beside the feed, one row per question id.

Each row is a :class:`QuestionEntry` (what ranking, dedup and the lifecycle need, and the
offset/length of the question's latest line in the feed). The feed stays the one durable
record: the index only ever holds what the feed says, and ``meta`` records how far into
the feed it is (``feed_end``), which file (``feed_inode``) and a CRC of the feed's bytes
just before that point, so a stale, torn or foreign index is detected and rebuilt.

WAL mode, ``synchronous=NORMAL``: a commit is a write to the WAL (no fsync); readers (the
``questions`` command) never block the service; the WAL is checkpointed from a thread.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson

from ..core.store import OPEN_STATUS_VALUES, QuestionEntry, Selection

SCHEMA_VERSION = "1"
CACHE_KIB = 16384
COLUMNS = ("id, status, priority, occurrences, created_at, updated_at, last_seen, "
           "evidence_hash, gap_type, gap_name, monitor, off, len, live")
SCHEMA = """
CREATE TABLE IF NOT EXISTS q (
  id TEXT PRIMARY KEY, status TEXT NOT NULL, priority REAL NOT NULL,
  occurrences INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
  last_seen TEXT NOT NULL, evidence_hash TEXT NOT NULL, gap_type TEXT NOT NULL,
  gap_name TEXT NOT NULL, monitor TEXT NOT NULL, off INTEGER NOT NULL,
  len INTEGER NOT NULL, live INTEGER NOT NULL, open INTEGER NOT NULL,
  updated_ts REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rank_open ON q(priority DESC, id) WHERE open = 1 AND live = 1;
CREATE INDEX IF NOT EXISTS rank_live ON q(priority DESC, id) WHERE live = 1;
CREATE INDEX IF NOT EXISTS open_by_monitor ON q(monitor) WHERE open = 1 AND live = 1;
CREATE INDEX IF NOT EXISTS by_status ON q(status, priority DESC, id) WHERE live = 1;
CREATE INDEX IF NOT EXISTS to_retire ON q(updated_ts) WHERE status = 'resolved' AND live = 1;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""
UPSERT = ("INSERT OR REPLACE INTO q (" + COLUMNS + ", open, updated_ts) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
CountKey = tuple[str, bool, bool]
"""(gap_type, is_open, live)"""


def _ts(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _row_entry(row: tuple) -> QuestionEntry:  # type: ignore[type-arg]
    return QuestionEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                         row[8], row[9], row[10], row[11], row[12], bool(row[13]))


class IndexInvalid(Exception):
    """The index cannot be used (schema, damage); it is rebuilt from the feed."""


class QuestionIndex:
    """One connection to the index (used from one thread)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        try:
            if readonly:
                self.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                          isolation_level=None)
            else:
                self.db = sqlite3.connect(path, isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.execute("PRAGMA wal_autocheckpoint=0")
                self.db.execute("PRAGMA journal_size_limit=16777216")
                # Random-key inserts (ids are hashes) touch pages all over a large index:
                # a bigger page cache keeps them from spilling mid-transaction.
                self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                self.db.executescript(SCHEMA)
            self.meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as err:
            raise IndexInvalid(f"{path}: {err}") from None
        self._in_txn = False
        self.txn_rows = 0
        """Rows written in the open transaction."""
        self.garbage = int(self.meta.get("garbage", "0"))
        """Bytes of feed lines that are no longer any question's latest live line."""
        self._counts: Counter[CountKey] = Counter()
        self._check_schema(readonly)

    def _check_schema(self, readonly: bool) -> None:
        if readonly:
            if self.meta.get("schema") != SCHEMA_VERSION or self.meta.get(
                    "open_statuses") != ",".join(sorted(OPEN_STATUS_VALUES)):
                raise IndexInvalid("schema or open statuses differ")
            return
        if not self.meta:
            self.set_meta(schema=SCHEMA_VERSION, open_statuses=",".join(sorted(OPEN_STATUS_VALUES)),
                          feed_end="0", feed_inode="0", tail_crc="0", garbage="0", counts="[]")
            self.commit()
            return
        if self.meta.get("schema") != SCHEMA_VERSION:
            raise IndexInvalid(f"schema {self.meta.get('schema')!r}, not {SCHEMA_VERSION}")
        statuses = ",".join(sorted(OPEN_STATUS_VALUES))
        if self.meta.get("open_statuses") != statuses:  # the lifecycle's open set changed
            marks = ",".join("?" * len(OPEN_STATUS_VALUES))
            self._begin()
            self.db.execute(f"UPDATE q SET open = (status IN ({marks}))",
                            tuple(OPEN_STATUS_VALUES))
            self.set_meta(open_statuses=statuses)
            self.recount()
            self.commit()
        try:
            self._counts = Counter({(g, bool(o), bool(v)): n for g, o, v, n
                                    in orjson.loads(self.meta.get("counts", "[]"))})
        except (orjson.JSONDecodeError, ValueError, TypeError) as err:
            raise IndexInvalid(f"counts: {err}") from None

    # -- transactions -------------------------------------------------------------------
    @property
    def in_txn(self) -> bool:
        return self._in_txn

    def _begin(self) -> None:
        if not self._in_txn:
            self.db.execute("BEGIN")
            self._in_txn = True

    def set_meta(self, **values: str) -> None:
        self._begin()
        self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                            values.items())
        self.meta.update(values)

    def commit(self, **meta: str) -> None:
        """Commit what was written, with the feed position it corresponds to."""
        if meta or self._in_txn:
            counts = [[g, o, v, n] for (g, o, v), n in self._counts.items() if n]
            self.set_meta(garbage=str(self.garbage), counts=orjson.dumps(counts).decode(),
                          **meta)
        if self._in_txn:
            self.db.execute("COMMIT")
            self._in_txn = False
            self.txn_rows = 0

    def close(self) -> None:
        try:
            if self._in_txn:
                self.db.execute("ROLLBACK")
        finally:
            self._in_txn = False
            self.db.close()

    # -- rows -----------------------------------------------------------------------------
    def get(self, qid: str) -> QuestionEntry | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM q WHERE id = ?", (qid,)).fetchone()
        return None if row is None else _row_entry(row)

    def upsert(self, e: QuestionEntry) -> None:
        """Make ``e`` the question's latest line; the line it supersedes becomes garbage."""
        old = self.db.execute("SELECT len, gap_type, open, live FROM q WHERE id = ?",
                              (e.id,)).fetchone()
        self._begin()
        if old is not None:
            self.garbage += old[0]
            self._counts[(old[1], bool(old[2]), bool(old[3]))] -= 1
        self.db.execute(UPSERT, (e.id, e.status, e.priority, e.occurrences, e.created_at,
                                 e.updated_at, e.last_seen, e.evidence_hash, e.gap_type,
                                 e.gap_name, e.monitor, e.offset, e.length, int(e.live),
                                 int(e.is_open), _ts(e.updated_at)))
        self._counts[(e.gap_type, e.is_open, e.live)] += 1
        self.txn_rows += 1

    def insert_new(self, entries: list[QuestionEntry]) -> None:
        """Rows for ids not yet in the index (a compaction's copy)."""
        if not entries:
            return
        self._begin()
        self.db.executemany(UPSERT, [
            (e.id, e.status, e.priority, e.occurrences, e.created_at, e.updated_at,
             e.last_seen, e.evidence_hash, e.gap_type, e.gap_name, e.monitor, e.offset,
             e.length, int(e.live), int(e.is_open), _ts(e.updated_at)) for e in entries])
        for e in entries:
            self._counts[(e.gap_type, e.is_open, e.live)] += 1

    def add_garbage(self, nbytes: int) -> None:
        """Feed bytes that never were a question (invalid or blank lines)."""
        self._begin()
        self.garbage += nbytes

    def expire(self, before_ts: float) -> int:
        """Resolved questions last updated before ``before_ts`` leave the live views (their
        lines move to the archive at the next compaction); returns how many."""
        rows = self.db.execute(
            "SELECT gap_type, count(*), sum(len) FROM q WHERE live = 1 AND status = 'resolved' "
            "AND updated_ts < ? GROUP BY gap_type", (before_ts,)).fetchall()
        if not rows:
            return 0
        self._begin()
        self.db.execute("UPDATE q SET live = 0 WHERE live = 1 AND status = 'resolved' "
                        "AND updated_ts < ?", (before_ts,))
        total = 0
        for gap_type, n, nbytes in rows:
            self._counts[(gap_type, False, True)] -= n
            self._counts[(gap_type, False, False)] += n
            self.garbage += nbytes
            total += n
        return total

    def recount(self) -> None:
        self._counts = Counter({(g, bool(o), bool(v)): n for g, o, v, n in self.db.execute(
            "SELECT gap_type, open, live, count(*) FROM q GROUP BY 1, 2, 3")})

    def counts(self) -> Counter[tuple[str, bool]]:
        out: Counter[tuple[str, bool]] = Counter()
        for (gap_type, is_open, live), n in self._counts.items():
            if live and n:
                out[(gap_type, is_open)] += n
        return out

    @property
    def live_bytes(self) -> int:
        row = self.db.execute("SELECT coalesce(sum(len), 0) FROM q WHERE live = 1").fetchone()
        return int(row[0])

    def ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM q WHERE live = 1")]

    def select(self, sel: Selection) -> list[QuestionEntry]:
        """Ranked live entries matching ``sel`` (through the partial rank indexes)."""
        where = ["live = 1"]
        args: list[object] = []
        if sel.status == "open":
            where.append("open = 1")
        elif sel.status != "all":
            where.append("status = ?")
            args.append(sel.status)
        if sel.gap_type is not None:
            where.append("gap_type = ?")
            args.append(sel.gap_type)
        if sel.monitor is not None:
            where.append("monitor = ?")
            args.append(sel.monitor)
        if sel.after is not None:
            priority, qid = sel.after
            where.append("priority <= ? AND (priority < ? OR id > ?)")
            args += [priority, priority, qid]
        # The planner has no statistics: name the index that serves this ranking.
        if sel.monitor is not None:
            index = "open_by_monitor" if sel.status == "open" else "rank_live"
        else:
            index = {"open": "rank_open", "all": "rank_live"}.get(sel.status, "by_status")
        sql = (f"SELECT {COLUMNS} FROM q INDEXED BY {index} WHERE {' AND '.join(where)} "
               "ORDER BY priority DESC, id")
        if sel.limit is not None:
            sql += " LIMIT ?"
            args.append(sel.limit)
        return [_row_entry(r) for r in self.db.execute(sql, args)]

    def all_rows(self) -> sqlite3.Cursor:
        """Every row (live or not), in id order: for compaction."""
        return self.db.execute(f"SELECT {COLUMNS} FROM q ORDER BY id")
