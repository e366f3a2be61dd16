"""The service's start-up steps: state directory, feed recovery, HTTP, the cluster node.

The first three raise :class:`StartupError` with a message that names the config key at
fault (``service.state_dir``, ``feed.path``, ``http.port``, a token file); the CLI prints it
and exits with the configuration error code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from .config import Config
from .http_consumers import TokenFileError
from .web import build_app

if TYPE_CHECKING:
    from .core.curiosity import CuriosityCore
    from .service import Service
    from .store import FeedStore

log = structlog.get_logger("kloros_stream.service")


class StartupError(Exception):
    """The service cannot start with this configuration; the message names the key."""


def open_cluster(
    config: Config, core: CuriosityCore, write: Callable[[], None], wake: Callable[[], None]
) -> Any:
    """The ``[cluster]`` node (see docs/distributed.md), or None in the embedded default.

    ``write`` writes what the core put into the store; ``wake`` wakes housekeeping.
    """
    if not config.cluster.role:
        return None
    from .cluster.node import ClusterNode  # nats-py is imported only in distributed mode

    def write_and_wake() -> None:
        write()
        wake()

    return ClusterNode(config.cluster, config.service.state_dir, core, write_and_wake, wake)


def prepare_state_dir(config: Config) -> None:
    try:
        config.service.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StartupError(
            f"service.state_dir: cannot create {config.service.state_dir}: {err}"
        ) from None


def recover_feed(store: FeedStore, core: CuriosityCore) -> None:
    """Open the question store (feed + index) and hand the recovered questions to the core."""
    try:
        got = store.open(time.time())
    except OSError as err:
        raise StartupError(f"feed.path: cannot open {store.feed.path}: {err}") from None
    core.recovered(time.time())
    log.info(
        "feed_recovered",
        path=str(store.feed.path),
        lines=got.lines_read,
        questions=got.questions,
        invalid_lines=got.invalid_lines,
        torn_bytes=got.torn_bytes,
        index_rebuilt=got.rebuilt,
        retired=got.expired,
        seconds=round(got.seconds, 3),
    )


async def start_http(svc: Service) -> tuple[web.AppRunner, int]:
    """Listen on ``[http]``; returns the runner and the port bound (``port = 0``: a free one)."""
    config = svc.config.http
    try:
        app = build_app(svc)
    except TokenFileError as err:
        raise StartupError(str(err)) from None
    # A client that goes away cancels its handler: a stream subscriber leaves at once.
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, keepalive_timeout=config.idle_timeout_s
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise StartupError(
            f"http.port: cannot listen on {config.host}:{config.port}: {err}"
        ) from None
    addresses = runner.addresses
    port = addresses[0][1] if addresses else config.port
    log.info("http_listening", host=config.host, port=port)
    return runner, port
