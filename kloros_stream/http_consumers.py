"""HTTP for consumers: claim / lease / status, the Server-Sent-Events stream, the live page.

- ``POST /questions/claim``, ``POST /questions/{id}/lease``, ``POST /questions/{id}/status``
  change questions: with ``[http] token_file`` set they need ``Authorization: Bearer
  <token>`` (compared in constant time; the token is never logged). Bodies are JSON
  objects of at most :data:`MAX_BODY_BYTES`. Errors are ``{"error": message}`` with 400,
  401, 404, 409, 413, or 503 when the feed line could not be written (not acknowledged).
- ``GET /questions/stream``: ``text/event-stream`` (aiohttp-sse), one ``question`` event
  per feed line; ``Last-Event-ID`` replays what was missed (see :mod:`.stream`).
- ``GET /``: the live page (``static/index.html``; plain HTML and JavaScript, no CDN).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from .core import lifecycle
from .core.lifecycle import LifecycleError
from .models import CuriosityQuestion
from .stream import CLOSED, OVERFLOW, QuestionStream, Subscription
from .token import MAX_TOKEN_BYTES, TokenFileError, load_token  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from .service import Service

log = structlog.get_logger("kloros_stream.http")

MAX_BODY_BYTES = 65_536
STREAM_PING_S = 15.0
STREAM_SEND_TIMEOUT_S = 30.0
STATIC = Path(__file__).parent / "static"

SERVICE: web.AppKey[Service] = web.AppKey("consumers_service")
TOKEN: web.AppKey[str | None] = web.AppKey("token")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]




def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(body=orjson.dumps({"error": message}), status=status,
                        content_type="application/json", headers=headers or None)


def _question(q: CuriosityQuestion) -> web.Response:
    return web.Response(body=orjson.dumps(q.model_dump(mode="json")),
                        content_type="application/json")


def _authorized(request: web.Request) -> bool:
    token = request.app[TOKEN]
    if token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


async def _body(request: web.Request) -> object:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _Refused(413, f"body larger than {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise _Refused(413, f"body larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise _Refused(400, f"body is not JSON: {err}") from None


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def mutating(handler: Handler) -> Handler:
    """Token check, then the handler; refusals become JSON errors and are counted."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        desk = request.app[SERVICE].desk
        if not _authorized(request):
            desk.rejected[401] += 1
            return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except (LifecycleError, _Refused) as err:
            desk.rejected[err.status] += 1
            return _error(err.status, str(err))
        except OSError as err:
            desk.rejected[503] += 1
            log.error("consumer_write_failed", path=request.path, error=str(err))
            return _error(503, f"the feed could not be written ({err.strerror or err}); "
                               "the change is not acknowledged")

    return wrapped


@mutating
async def claim(request: web.Request) -> web.StreamResponse:
    req = lifecycle.parse_claim(await _body(request))
    q = request.app[SERVICE].desk.claim(req)
    return web.Response(status=204) if q is None else _question(q)


@mutating
async def lease(request: web.Request) -> web.StreamResponse:
    req = lifecycle.parse_lease(await _body(request))
    return _question(request.app[SERVICE].desk.extend(request.match_info["id"], req))


@mutating
async def status(request: web.Request) -> web.StreamResponse:
    req = lifecycle.parse_status(await _body(request))
    return _question(request.app[SERVICE].desk.set_status(request.match_info["id"], req))


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events until the client leaves, falls behind, or the service stops."""
    hub = request.app[SERVICE].stream
    sub = hub.subscribe(request.headers.get("Last-Event-ID"))
    try:
        async with sse_response(request, ping_interval=STREAM_PING_S,
                                send_timeout=STREAM_SEND_TIMEOUT_S) as resp:
            pump = asyncio.create_task(_pump(resp, sub, hub))
            gone = asyncio.create_task(resp.wait())  # ends when a ping finds the peer gone
            try:
                await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pump, gone):
                    task.cancel()
                await asyncio.gather(pump, gone, return_exceptions=True)
    finally:
        hub.unsubscribe(sub)
    return resp


async def _pump(resp: EventSourceResponse, sub: Subscription, hub: QuestionStream) -> None:
    try:
        async for ev in sub.events():
            if ev is CLOSED:
                return
            if ev is OVERFLOW:
                await resp.send("too far behind: reconnect with Last-Event-ID",
                                event="overflow")
                return
            await resp.send(ev.data, id=ev.id, event="question")
            hub.events_sent += 1
    except (ConnectionError, TimeoutError, RuntimeError):
        return  # the client went away or stalled: the handler ends


async def page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html",
                            headers={"Cache-Control": "no-cache",
                                     "Content-Type": "text/html; charset=utf-8"})


def add_routes(app: web.Application, service: Service) -> None:
    """The consumer routes (before any ``/questions/{id}`` route, so ``stream`` and
    ``claim`` are never taken for ids). Raises :class:`TokenFileError`."""
    app[SERVICE] = service
    app[TOKEN] = load_token(service.config.http.token_file)
    app.router.add_get("/", page)
    app.router.add_get("/questions/stream", stream)
    app.router.add_post("/questions/claim", claim)
    app.router.add_post("/questions/{id}/lease", lease)
    app.router.add_post("/questions/{id}/status", status)
    app.on_shutdown.append(_close_streams)


async def _close_streams(app: web.Application) -> None:
    app[SERVICE].stream.close()
