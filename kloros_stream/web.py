"""HTTP endpoints (aiohttp): ``/health``, ``/metrics``, ``/questions``; the consumer
endpoints, the stream and the live page come from :mod:`.http_consumers`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import HttpVersion10, web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from .cluster.views import on_host
from .core.store import Selection, decode_cursor, encode_cursor
from .http_consumers import add_routes as add_consumer_routes

if TYPE_CHECKING:
    from .service import Service

SERVICE_KEY: web.AppKey[Service] = web.AppKey("service")
DEFAULT_TOP = 100
MAX_TOP = 1000


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status,
                        content_type="application/json")


async def health(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    report, code = svc.health()
    return _json(report, status=code)


async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    body = generate_latest(svc.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def questions(request: web.Request) -> web.Response:
    """Ranked questions, a page at a time: ``top`` (default 100), ``status``
    (open|all|a status), ``gap_type``, ``monitor``, ``cursor`` (from ``X-Next-Cursor``)."""
    svc = request.app[SERVICE_KEY]
    query = request.query
    try:
        top = int(query.get("top", DEFAULT_TOP))
    except ValueError:
        return _json({"error": "top must be an integer"}, status=400)
    if top < 0:
        return _json({"error": "top must be 0 or more"}, status=400)
    top = min(top, MAX_TOP)  # a larger page is cut to MAX_TOP; X-Next-Cursor says there is more
    try:
        after = decode_cursor(query["cursor"]) if "cursor" in query else None
        sel = Selection(status=query.get("status", "open"), gap_type=query.get("gap_type"),
                        monitor=query.get("monitor"), after=after, limit=top + 1)
    except ValueError as err:  # CursorError included
        return _json({"error": str(err)}, status=400)
    host = query.get("host")  # distributed mode: questions seen on that host
    entries = svc.core.select(sel) if not host else on_host(svc.core, sel, host)
    page = entries[:top]
    body = b"[" + b",".join(j for j in map(svc.core.json, page) if j is not None) + b"]"
    headers = {"X-Next-Cursor": encode_cursor(page[-1])} if len(entries) > top and page else {}
    return web.Response(body=body, headers=headers, content_type="application/json")


@web.middleware
async def http_1_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """HTTP/0.9 (no version, no headers) is refused: 400, and the connection closed."""
    if request.version < HttpVersion10:
        return web.Response(status=400, text="HTTP/1.0 or later required\n",
                            headers={"Connection": "close"})
    return await handler(request)


def build_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[http_1_only])
    app[SERVICE_KEY] = service
    add_consumer_routes(app, service)  # first: /questions/stream is no question id
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/questions", questions)
    return app
