"""Question state in the JetStream key-value bucket, and how one signal changes it (pure).

A bucket entry (key = question id) holds ``{"q": <question>, "applied": [<msg ids>]}``.
:func:`apply` runs the CuriosityCore's own rules on the entry's question, merges the
sending host into ``metadata.hosts`` and remembers the message id, so a message that is
delivered again (a core killed before its ack, an edge resending after the JetStream
de-duplication window) changes nothing. :func:`adopt` is the follower's side: a question
read from the bucket enters a core's local view, with a feed line due now when it is new or
its status or evidence changed, else deferred like any counter update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from ..core.curiosity import CuriosityCore
from ..core.identity import gap_key, iso, question_id
from ..models import CuriosityQuestion
from .wire import Incoming

APPLIED_KEEP = 128
"""Message ids remembered per question: a redelivery arrives within ack_wait, long before
128 further signals of the same question, unless that one gap floods."""


class BadRecord(ValueError):
    """A bucket entry that is not a question record."""


@dataclass(frozen=True, slots=True)
class Record:
    question: CuriosityQuestion
    applied: tuple[str, ...]


def encode_record(record: Record) -> bytes:
    return orjson.dumps({"q": record.question.model_dump(mode="json"),
                         "applied": list(record.applied)})


def decode_record(data: bytes) -> Record:
    try:
        raw: Any = orjson.loads(data)
        question = CuriosityQuestion.model_validate(raw["q"])
        applied = raw.get("applied", [])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as err:
        raise BadRecord(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    if not isinstance(applied, list) or not all(isinstance(a, str) for a in applied):
        raise BadRecord("applied is not a list of strings")
    return Record(question, tuple(applied[-APPLIED_KEEP:]))


def key_of(msg: Incoming) -> str:
    """The bucket key (the question id) a signal belongs to."""
    return question_id(msg.signal.gap_type, gap_key(msg.signal.facts))


def merge_hosts(hosts: Any, host: str, last_seen: str) -> dict[str, dict[str, Any]]:
    """``hosts`` (as stored; malformed entries dropped) with one more occurrence on ``host``."""
    out: dict[str, dict[str, Any]] = {}
    if isinstance(hosts, dict):
        for name, entry in hosts.items():
            if (isinstance(name, str) and isinstance(entry, dict)
                    and isinstance(entry.get("occurrences"), int)
                    and isinstance(entry.get("last_seen"), str)):
                out[name] = {"occurrences": entry["occurrences"],
                             "last_seen": entry["last_seen"]}
    mine = out.get(host)
    if mine is None:
        out[host] = {"occurrences": 1, "last_seen": last_seen}
    else:
        out[host] = {"occurrences": mine["occurrences"] + 1,
                     "last_seen": max(mine["last_seen"], last_seen)}
    return out


def apply(previous: Record | None, msg: Incoming, suppress: tuple[str, ...],
          now: float) -> Record | None:
    """The new record after ``msg``, or None when it changes nothing (a duplicate, a
    suppressed gap, a resolution of an unknown or already resolved question)."""
    if previous is not None and msg.msg_id in previous.applied:
        return None
    scratch = CuriosityCore(suppress)
    qid = key_of(msg)
    before = previous.question if previous is not None else None
    if before is not None:
        scratch.store.put(before)
    scratch.handle(msg.signal, now)
    after = scratch.get(qid)
    if after is None or after == before:
        return None
    if not msg.signal.resolved:
        previous_hosts = before.metadata.get("hosts") if before is not None else None
        hosts = merge_hosts(previous_hosts, msg.host, iso(msg.signal.observed_at))
        after = after.model_copy(update={"metadata": {**after.metadata, "hosts": hosts}})
    applied = (*(previous.applied if previous is not None else ()), msg.msg_id)
    return Record(after, applied[-APPLIED_KEEP:])


def adopt(core: CuriosityCore, question: CuriosityQuestion, now: float
          ) -> CuriosityQuestion | None:
    """Take a question from the bucket into ``core``'s view; returns it if a feed line is
    due now (new, status or evidence changed: in the store's buffer for its next flush),
    else the line waits for the counter flush like any counter update."""
    old = core.get(question.id)
    if old is not None and old == question:
        return None
    if old is None or old.status != question.status or (
            old.evidence_hash != question.evidence_hash):
        return core.put(question, now)
    core._pending[question.id] = question
    return None
