"""What crosses the network: subjects, message ids and the validated envelope (pure).

An edge publishes one JSON envelope per signal, ``{"v": 1, "host", "seq", "signal"}``, on
``kloros.gap.<host token>.<monitor>`` with the header ``Nats-Msg-Id``: a digest of the host
and the signal's canonical JSON, so a resend of the same signal is dropped by JetStream's
de-duplication window (and by the core's applied-ids memory after it). ``seq`` is the
edge's own send order (its disk buffer's sequence), carried for ordering checks.

A core trusts nothing it receives: :func:`decode` checks the subject, the size, the JSON,
the signal schema, that the subject's host token matches the envelope's host and that the
message id is the one the content derives; anything else is a :class:`Rejected` with a
reason the core counts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from ..models import Signal

SUBJECT_PREFIX = "kloros.gap"
ENVELOPE_VERSION = 1
MAX_MESSAGE_BYTES = 1_048_576
MSG_ID_HEADER = "Nats-Msg-Id"
HOST_SPECIFIC_GAPS = frozenset({"idle_accelerator", "hardware_change", "missing_tool"})
"""Gap types that describe one machine: their gap name carries the host (``host:name``)."""

_TOKEN_BAD = re.compile(r"[^A-Za-z0-9_-]")
_MAX_TOKEN = 64


class Rejected(ValueError):
    """A network message that is malformed or not ours; ``reason`` is a short label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def token(name: str) -> str:
    """A name as one subject token: letters, digits, ``_`` and ``-`` only, at most 64."""
    cleaned = _TOKEN_BAD.sub("_", name)[:_MAX_TOKEN]
    return cleaned or "_"


def subject(host: str, monitor: str) -> str:
    return f"{SUBJECT_PREFIX}.{token(host)}.{token(monitor or 'unknown')}"


def localise(sig: Signal, host: str) -> Signal:
    """A host-specific gap with the host in its name (and ``facts.host``); others as is.

    The same bug on five hosts stays one question; an idle GPU on node 7 stays node 7's.
    """
    if sig.facts.get("gap_type") not in HOST_SPECIFIC_GAPS:
        return sig
    name = sig.facts["gap_name"]
    if name.startswith(f"{host}:"):
        return sig
    facts = {**sig.facts, "gap_name": f"{host}:{name}", "host": host}
    return sig.model_copy(update={"facts": facts})


def signal_json(sig: Signal) -> bytes:
    """The signal's canonical JSON (sorted keys): the same signal, the same bytes."""
    return orjson.dumps(sig.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def message_id(host: str, canonical_signal: bytes) -> str:
    """``Nats-Msg-Id``: 32 hex digits of SHA-256 over the host and the canonical signal."""
    digest = hashlib.sha256(host.encode() + b"\x00" + canonical_signal).hexdigest()
    return digest[:32]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One edge message ready to publish."""

    subject: str
    msg_id: str
    payload: bytes


def encode(host: str, seq: int, sig: Signal) -> Outgoing:
    canonical = signal_json(sig)
    payload = (b'{"v":1,"host":' + orjson.dumps(host) + b',"seq":' + str(seq).encode()
               + b',"signal":' + canonical + b"}")
    return Outgoing(subject(host, sig.monitor), message_id(host, canonical), payload)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A validated message from an edge."""

    host: str
    seq: int
    msg_id: str
    signal: Signal


def decode(subj: str, payload: bytes, headers: dict[str, str] | None) -> Incoming:
    """Validate one stream message; raises :class:`Rejected`."""
    parts = subj.split(".")
    if len(parts) != 4 or ".".join(parts[:2]) != SUBJECT_PREFIX:
        raise Rejected("foreign_subject", subj[:200])
    if len(payload) > MAX_MESSAGE_BYTES:
        raise Rejected("too_large", f"{len(payload)} bytes")
    try:
        data: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise Rejected("not_json", str(err)) from None
    if not isinstance(data, dict) or data.get("v") != ENVELOPE_VERSION:
        raise Rejected("bad_envelope", "not a version-1 envelope")
    host, seq, raw = data.get("host"), data.get("seq"), data.get("signal")
    if not isinstance(host, str) or not host or len(host) > 255:
        raise Rejected("bad_envelope", "host")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise Rejected("bad_envelope", "seq")
    if not isinstance(raw, dict):
        raise Rejected("bad_envelope", "signal")
    if parts[2] != token(host):
        raise Rejected("host_mismatch", f"subject {parts[2]!r} vs host {host!r}")
    try:
        sig = Signal.model_validate(raw)
    except ValidationError as err:
        raise Rejected("bad_signal", str(err).splitlines()[0]) from None
    msg_id = (headers or {}).get(MSG_ID_HEADER, "")
    if msg_id != message_id(host, signal_json(sig)):
        raise Rejected("bad_msg_id", msg_id[:64])
    return Incoming(host, seq, msg_id, sig)
