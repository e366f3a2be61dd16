"""The cluster core: the stream's signals into questions in the shared bucket, and every
bucket change into this core's own feed.

Work: a durable pull consumer (``kloros-core``, shared by every core) hands out batches;
each message is validated (a bad one is counted and terminated, never retried), applied to
its question's bucket entry with a revision check (a conflict re-reads and retries, so two
cores never lose an update), and the resulting question enters the local view; the feed is
flushed once per batch and only then are the batch's messages acknowledged. A core killed
before its acks leaves them to be redelivered after ``ack_wait_s``; the entry's
applied-ids list makes that redelivery change nothing a second time.

Following: a KV watch on the whole bucket feeds every change, whoever made it, into the
local view, so each core's feed and /questions hold every question. The watch restarts
after a reconnect (it replays the latest value per key; unchanged ones write nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import nats
import structlog
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from ..config import ClusterConfig
from ..core.curiosity import CuriosityCore
from ..models import CuriosityQuestion
from .connect import (
    CONSUMER,
    REQUEST_TIMEOUT_S,
    RETRY_S,
    connect_forever,
    consumer_config,
    ensure_bucket,
    ensure_stream,
)
from .merge import BadRecord, Record, adopt, apply, decode_record, encode_record, key_of
from .wire import SUBJECT_PREFIX, Incoming, Rejected, decode

log = structlog.get_logger("kloros_stream.cluster.core")

FETCH_BATCH = 256
FOLLOW_FLUSH = 256
MORE_WAIT_S = 0.05
CAS_ATTEMPTS = 50


class Core:
    """``view`` is the service's CuriosityCore; ``write`` flushes the lines the view put
    into its store (raises OSError when it cannot); ``pending`` wakes the housekeeping."""

    def __init__(self, cfg: ClusterConfig, host: str, view: CuriosityCore,
                 write: Callable[[], None], pending: Callable[[], None]) -> None:
        self.cfg = cfg
        self.host = host
        self.view = view
        self.write = write
        self.pending = pending
        self.nc: Client | None = None
        self.kv: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._rewatch = asyncio.Event()
        self.revisions: dict[str, int] = {}
        self.rejected: Counter[str] = Counter()
        self.applied = 0
        self.duplicates = 0
        self.conflicts = 0
        self.followed = 0
        self.bad_records = 0
        self.errors = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="cluster-core")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def _on_reconnect(self) -> None:
        self._rewatch.set()

    async def _run(self) -> None:
        self.nc = await connect_forever(self.cfg, f"kloros-core-{self.host}",
                                        on_reconnect=self._on_reconnect)
        js = self.nc.jetstream(timeout=REQUEST_TIMEOUT_S)
        while True:
            try:
                await ensure_stream(js, self.cfg)
                self.kv = await ensure_bucket(js, self.cfg)
                sub = await js.pull_subscribe(f"{SUBJECT_PREFIX}.>", durable=CONSUMER,
                                              stream=self.cfg.stream,
                                              config=consumer_config(self.cfg))
                break
            except (nats.errors.Error, OSError) as err:
                log.warning("core_setup_failed", error=f"{type(err).__name__}: {err}")
                await asyncio.sleep(RETRY_S)
        log.info("core_connected", host=self.host, stream=self.cfg.stream,
                 bucket=self.cfg.bucket)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow(self.kv))
            tg.create_task(self._consume(sub, self.kv))

    # -- work: stream -> bucket ------------------------------------------------------------------
    async def _consume(self, sub: Any, kv: KeyValue) -> None:
        while True:
            try:
                msgs = await self._fetch(sub)
            except TimeoutError:  # nats-py's TimeoutError is one too
                continue
            except Exception as err:  # a lost connection, a server restart
                log.warning("core_fetch_failed", error=f"{type(err).__name__}: {err}")
                await asyncio.sleep(RETRY_S)
                continue
            try:
                await self.handle_batch(msgs, kv)
            except Exception as err:  # the consumer outlives any batch; unacked: redelivered
                self.errors += 1
                log.warning("core_batch_failed", messages=len(msgs),
                            error=f"{type(err).__name__}: {err}")
                await asyncio.sleep(RETRY_S)

    @staticmethod
    async def _fetch(sub: Any) -> list[Any]:
        """Wait for one message, then take what is already pending (up to a batch).

        nats-py's ``fetch(n)`` holds the first message of a long poll until ``n`` arrived
        or the timeout passed; asking for the pending count only returns at once.
        """
        msgs = await sub.fetch(1, timeout=1.0)
        pending = msgs[-1].metadata.num_pending if msgs else 0
        if pending:
            with contextlib.suppress(TimeoutError):
                msgs += await sub.fetch(min(pending, FETCH_BATCH - 1), timeout=MORE_WAIT_S)
        return msgs

    async def handle_batch(self, msgs: list[Any], kv: KeyValue) -> None:
        """Validate, apply per question (questions in parallel, each in order), flush the
        feed, then acknowledge."""
        groups: dict[str, list[Incoming]] = defaultdict(list)
        valid = []
        for msg in msgs:
            try:
                incoming = decode(msg.subject, msg.data, msg.headers)
            except Rejected as err:
                self.rejected[err.reason] += 1
                log.error("core_message_rejected", reason=err.reason, error=str(err),
                          subject=msg.subject[:200])
                await msg.term()
                continue
            valid.append(msg)
            groups[key_of(incoming)].append(incoming)
        results = await asyncio.gather(*(self._apply_all(kv, key, items)
                                         for key, items in groups.items()))
        if any(results):
            self.write()
        for msg in valid:
            await msg.ack()

    async def _apply_all(self, kv: KeyValue, key: str, items: list[Incoming]) -> bool:
        """Apply one question's messages in order; True if a feed line is due."""
        due = False
        for incoming in items:
            due |= await self._apply_one(kv, key, incoming) is not None
        return due

    async def _apply_one(self, kv: KeyValue, key: str, incoming: Incoming
                         ) -> CuriosityQuestion | None:
        for _ in range(CAS_ATTEMPTS):
            previous, revision = await self._read(kv, key)
            record = apply(previous, incoming, tuple(self.view.suppress), time.time())
            if record is None:
                self.duplicates += previous is not None and incoming.msg_id in previous.applied
                return None
            try:
                revision = await kv.update(key, encode_record(record), last=revision)
            except KeyWrongLastSequenceError:
                self.conflicts += 1
                continue
            self.applied += 1
            return self._take(key, revision, record.question)
        raise nats.errors.Error(f"question {key}: {CAS_ATTEMPTS} revision conflicts in a row")

    async def _read(self, kv: KeyValue, key: str) -> tuple[Record | None, int]:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError as err:
            # A deleted key keeps a revision: the next write must name it.
            entry_rev = getattr(getattr(err, "entry", None), "revision", None)
            return None, entry_rev or 0
        try:
            return decode_record(entry.value or b""), entry.revision or 0
        except BadRecord as err:
            self.bad_records += 1
            log.error("core_bucket_record_invalid", key=key, error=str(err))
            return None, entry.revision or 0

    def _take(self, key: str, revision: int, question: CuriosityQuestion
              ) -> CuriosityQuestion | None:
        """A bucket revision into the local view (once per revision)."""
        if self.revisions.get(key, 0) >= revision:
            return None
        self.revisions[key] = revision
        line = adopt(self.view, question, time.time())
        if line is None and self.view.pending_count:
            self.pending()
        return line

    # -- following: bucket -> local view ---------------------------------------------------------
    async def _follow(self, kv: KeyValue) -> None:
        while True:
            self._rewatch.clear()
            try:
                watcher = await kv.watchall()
            except Exception as err:  # a lost connection, a server restart
                log.warning("core_watch_failed", error=f"{type(err).__name__}: {err}")
                await asyncio.sleep(RETRY_S)
                continue
            unflushed = 0
            try:
                while not self._rewatch.is_set():
                    try:
                        entry = await watcher.updates(timeout=0.05 if unflushed else 1.0)
                    except TimeoutError:  # nats-py's TimeoutError is one too
                        entry = None
                    except Exception as err:
                        log.warning("core_watch_lost", error=f"{type(err).__name__}: {err}")
                        await asyncio.sleep(RETRY_S)
                        break
                    if entry is not None:
                        unflushed += self._follow_entry(entry)
                    if unflushed and (entry is None or unflushed >= FOLLOW_FLUSH):
                        self._flush_followed()
                        unflushed = 0
            finally:
                if unflushed:
                    self._flush_followed()
                with contextlib.suppress(Exception):
                    await watcher.stop()

    def _flush_followed(self) -> None:
        try:
            self.write()
        except OSError:
            log.exception("core_feed_write_failed")

    def _follow_entry(self, entry: Any) -> bool:
        """One watched bucket entry into the view; True if a feed line is due."""
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            return False
        try:
            record = decode_record(entry.value)
        except BadRecord as err:
            self.bad_records += 1
            log.error("core_bucket_record_invalid", key=entry.key, error=str(err))
            return False
        if record.question.id != entry.key:
            self.bad_records += 1
            log.error("core_bucket_record_foreign", key=entry.key, id=record.question.id)
            return False
        self.followed += 1
        return self._take(entry.key, entry.revision or 0, record.question) is not None

    def health(self) -> dict[str, Any]:
        return {"connected": bool(self.nc and self.nc.is_connected), "consumer": CONSUMER,
                "applied": self.applied, "duplicates": self.duplicates,
                "conflicts": self.conflicts, "followed": self.followed,
                "rejected": dict(self.rejected), "bad_records": self.bad_records,
                "batch_errors": self.errors}
