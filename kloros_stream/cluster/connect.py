"""Connecting to NATS and declaring what we use: the stream, the durable consumer, the bucket.

Credentials and TLS files from ``[cluster]`` go to nats-py as they are. The client
reconnects forever on its own; the first connection is retried by :func:`connect_forever`
so a process started while NATS is down keeps running (an edge buffers meanwhile).
Declarations are idempotent: whichever process comes first creates, the others find.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from ..config import ClusterConfig
from .wire import MAX_MESSAGE_BYTES, SUBJECT_PREFIX

log = structlog.get_logger("kloros_stream.cluster")

CONSUMER = "kloros-core"
RETRY_S = 0.5
REQUEST_TIMEOUT_S = 5.0


def host_name(cfg: ClusterConfig) -> str:
    return cfg.host or socket.gethostname() or "localhost"


def tls_context(cfg: ClusterConfig) -> ssl.SSLContext | None:
    """A client TLS context when ``tls_ca`` or a client certificate is configured."""
    if cfg.tls_ca is None and cfg.tls_cert is None:
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.tls_ca) if cfg.tls_ca else None)
    if cfg.tls_cert is not None:
        ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key) if cfg.tls_key else None)
    return ctx


async def connect(cfg: ClusterConfig, name: str,
                  on_reconnect: Callable[[], Awaitable[None]] | None = None) -> Client:
    """One connection attempt (raises on failure); later losses reconnect by themselves."""

    async def error_cb(err: Exception) -> None:
        log.warning("nats_error", error=f"{type(err).__name__}: {err}")

    async def disconnected_cb() -> None:
        log.warning("nats_disconnected", url=cfg.nats_url)

    async def reconnected_cb() -> None:
        log.info("nats_reconnected", url=cfg.nats_url)
        if on_reconnect is not None:
            await on_reconnect()

    return await nats.connect(
        servers=[cfg.nats_url],
        name=name,
        user_credentials=str(cfg.credentials) if cfg.credentials else None,
        tls=tls_context(cfg),
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=RETRY_S,
        connect_timeout=2,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
    )


async def connect_forever(cfg: ClusterConfig, name: str,
                          on_reconnect: Callable[[], Awaitable[None]] | None = None) -> Client:
    """Retry the first connection until it succeeds (cancel to give up)."""
    attempts = 0
    while True:
        try:
            return await connect(cfg, name, on_reconnect)
        except (OSError, TimeoutError, nats.errors.Error) as err:
            attempts += 1
            if attempts == 1 or attempts % 20 == 0:
                log.warning("nats_unreachable", url=cfg.nats_url, attempts=attempts,
                            error=f"{type(err).__name__}: {err}")
            await asyncio.sleep(RETRY_S)


async def ensure_stream(js: JetStreamContext, cfg: ClusterConfig) -> None:
    try:
        await js.stream_info(cfg.stream)
        return
    except NotFoundError:
        pass
    try:
        await js.add_stream(_stream_config(cfg))
    except BadRequestError:  # another process created it meanwhile
        await js.stream_info(cfg.stream)
        return
    log.info("nats_stream_created", stream=cfg.stream)


def _stream_config(cfg: ClusterConfig) -> js_api.StreamConfig:
    return js_api.StreamConfig(
        name=cfg.stream,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        storage=js_api.StorageType.FILE,
        retention=js_api.RetentionPolicy.LIMITS,
        duplicate_window=cfg.duplicate_window_s,
        max_age=cfg.max_age_days * 86400,
        max_msg_size=MAX_MESSAGE_BYTES + 4096,
    )


def consumer_config(cfg: ClusterConfig) -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        durable_name=CONSUMER,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=cfg.ack_wait_s,
        deliver_policy=js_api.DeliverPolicy.ALL,
        max_ack_pending=20_000,
    )


async def ensure_bucket(js: JetStreamContext, cfg: ClusterConfig) -> KeyValue:
    try:
        return await js.key_value(cfg.bucket)
    except BucketNotFoundError:
        pass
    try:
        kv = await js.create_key_value(js_api.KeyValueConfig(
            bucket=cfg.bucket, history=1, storage=js_api.StorageType.FILE,
            max_value_size=4 * MAX_MESSAGE_BYTES))
    except BadRequestError:  # another process created it meanwhile
        return await js.key_value(cfg.bucket)
    log.info("nats_bucket_created", bucket=cfg.bucket)
    return kv
