"""HTTP endpoints (aiohttp): ``/health``, ``/metrics``, ``/questions``; the consumer
endpoints, the stream and the live page come from :mod:`.http_consumers`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from .http_consumers import add_routes as add_consumer_routes

if TYPE_CHECKING:
    from .service import Service

SERVICE_KEY: web.AppKey[Service] = web.AppKey("service")


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
    svc = request.app[SERVICE_KEY]
    status = request.query.get("status", "open")
    if status not in ("open", "all"):
        return _json({"error": "status must be 'open' or 'all'"}, status=400)
    try:
        top = int(request.query["top"]) if "top" in request.query else None
    except ValueError:
        return _json({"error": "top must be an integer"}, status=400)
    ranked = svc.core.ranked(include_resolved=status == "all")
    if top is not None:
        ranked = ranked[: max(top, 0)]
    return _json([q.model_dump(mode="json") for q in ranked])


def build_app(service: Service) -> web.Application:
    app = web.Application()
    app[SERVICE_KEY] = service
    add_consumer_routes(app, service)  # first: /questions/stream is no question id
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/questions", questions)
    return app
