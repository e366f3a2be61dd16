"""Consumer endpoints over a real socket: an in-process Service with a scripted monitor."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from kloros_stream.config import ConfigError, parse_config
from kloros_stream.service import Service, StartupError
from tests.support.scripted import Script, gap, running_service, service_config, wait_until
from tests.support.sse import read_events

TOKEN = "s3cret-token"


async def post(svc: Service, path: str, body: Any = None, *, token: str | None = None,
               raw: bytes | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
    async with aiohttp.ClientSession() as session, session.post(
        f"http://127.0.0.1:{svc.port}{path}", data=data, headers=headers,
        timeout=aiohttp.ClientTimeout(total=10),
    ) as resp:
        text = await resp.read()
        return resp.status, orjson.loads(text) if text else None


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Service, Script]]:
    script = Script(gaps=[gap("test_failure", "t::a"), gap("exception", "boom"),
                          gap("test_failure", "t::b")])
    async with running_service(service_config(tmp_path), {"test": script}) as svc:
        await wait_until(lambda: len(svc.core.questions) == 3)
        yield svc, script


async def test_claim_answer_round_trip(service: tuple[Service, Script]) -> None:
    svc, _ = service
    status, q = await post(svc, "/questions/claim", {"consumer": "alice", "lease_s": 60,
                                                     "gap_types": ["test_failure"]})
    assert status == 200 and q["status"] == "in_progress"
    assert q["metadata"]["claim"]["consumer"] == "alice"
    assert set(q["metadata"]["claim"]) >= {"consumer", "lease_until"}
    status, extended = await post(svc, f"/questions/{q['id']}/lease",
                                  {"consumer": "alice", "lease_s": 120})
    assert status == 200 and extended["metadata"]["claim"]["lease_until"] > \
        q["metadata"]["claim"]["lease_until"]
    assert (await post(svc, f"/questions/{q['id']}/lease", {"consumer": "bob"}))[0] == 409
    body = {"status": "answered", "note": "https://example.invalid/fix", "consumer": "alice"}
    status, answered = await post(svc, f"/questions/{q['id']}/status", body)
    assert status == 200 and answered["status"] == "answered"
    lines = svc.feed.lines_written
    assert (await post(svc, f"/questions/{q['id']}/status", body))[0] == 200  # idempotent
    assert svc.feed.lines_written == lines
    status, err = await post(svc, f"/questions/{q['id']}/status", {"status": "ready"})
    assert status == 409 and "answered" in err["error"]


async def test_claims_run_out_with_204(service: tuple[Service, Script]) -> None:
    svc, _ = service
    got = [await post(svc, "/questions/claim", {"consumer": "c"}) for _ in range(4)]
    assert [s for s, _ in got] == [200, 200, 200, 204]
    assert len({q["id"] for _, q in got[:3]}) == 3


@pytest.mark.parametrize(("path", "body", "code", "message"), [
    ("/questions/claim", {}, 400, "consumer is required"),
    ("/questions/claim", {"consumer": "x", "lease_s": -1}, 400, "lease_s"),
    ("/questions/nope/status", {"status": "ready"}, 404, "no question 'nope'"),
    ("/questions/nope/lease", {"consumer": "x"}, 404, "no question"),
])
async def test_errors_are_json_with_a_message(service: tuple[Service, Script], path: str,
                                              body: dict[str, Any], code: int, message: str
                                              ) -> None:
    status, err = await post(service[0], path, body)
    assert status == code and message in err["error"]


async def test_bad_and_oversized_bodies(service: tuple[Service, Script]) -> None:
    svc, _ = service
    status, err = await post(svc, "/questions/claim", raw=b"{not json")
    assert status == 400 and "not JSON" in err["error"]
    status, err = await post(svc, "/questions/claim", raw=b'{"consumer": "' + b"x" * 70_000
                             + b'"}')
    assert status == 413 and "larger than" in err["error"]


async def test_metrics_count_claims_and_refusals(service: tuple[Service, Script]) -> None:
    svc, _ = service
    await post(svc, "/questions/claim", {"consumer": "a"})
    await post(svc, "/questions/nope/status", {"status": "ready"})
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{svc.port}/metrics") as resp:
        text = await resp.text()
    assert "kloros_stream_claims_total 1.0" in text
    assert 'kloros_stream_consumer_requests_rejected_total{code="404"} 1.0' in text
    assert 'kloros_stream_consumer_transitions_total{status="in_progress"} 1.0' in text


async def test_the_stream_sends_each_line_and_replays_after_an_id(
        service: tuple[Service, Script]) -> None:
    svc, script = service
    url = f"http://127.0.0.1:{svc.port}/questions/stream"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            await wait_until(lambda: len(svc.stream.clients) == 1)
            script.push(gap("test_failure", "t::live"))
            (first,) = await read_events(resp, 1)
        assert first["event"] == "question" and first["id"]
        assert orjson.loads(first["data"])["metadata"]["gap_name"] == "t::live"
        await wait_until(lambda: not svc.stream.clients, what="the server noticing")
        status, claimed = await post(svc, "/questions/claim", {"consumer": "a"})
        assert status == 200
        async with session.get(url, headers={"Last-Event-ID": first["id"]}) as resp:
            (missed,) = await read_events(resp, 1)
    assert orjson.loads(missed["data"])["id"] == claimed["id"]
    assert orjson.loads(missed["data"])["status"] == "in_progress"


async def test_the_page_is_served(service: tuple[Service, Script]) -> None:
    svc, _ = service
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{svc.port}/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
    assert "/questions/stream" in page and "<script" in page
    # Nothing from elsewhere (no CDN): the only absolute URL is the SVG namespace.
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]


# -- the token -----------------------------------------------------------------------------------
async def test_mutations_need_the_token_when_one_is_set(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    cfg = service_config(tmp_path, {"http": {"token_file": "token"}})
    script = Script(gaps=[gap("test_failure", "t::a")])
    async with running_service(cfg, {"test": script}) as svc:
        await wait_until(lambda: len(svc.core.questions) == 1)
        status, err = await post(svc, "/questions/claim", {"consumer": "a"})
        assert status == 401 and "token" in err["error"]
        assert (await post(svc, "/questions/claim", {"consumer": "a"}, token="wrong"))[0] == 401
        assert (await post(svc, "/questions/claim", {"consumer": "a"}, token=TOKEN))[0] == 200
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{svc.port}/questions") as resp:
            assert resp.status == 200  # reading stays open


def test_a_public_address_without_a_token_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"http\.token_file"):
        parse_config({"http": {"host": "0.0.0.0"}}, tmp_path)
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        parse_config({"http": {"host": host}}, tmp_path)
    cfg = parse_config({"http": {"host": "0.0.0.0", "token_file": "t"}}, tmp_path)
    assert cfg.http.token_file == tmp_path.resolve() / "t"


async def test_an_unreadable_or_empty_token_file_stops_the_start(tmp_path: Path) -> None:
    for content in (None, "  \n"):
        if content is not None:
            (tmp_path / "token").write_text(content)
        cfg = service_config(tmp_path, {"http": {"token_file": "token"}})
        with pytest.raises(StartupError, match=r"http\.token_file") as err:
            await Service(cfg, factories={}).run()
        assert TOKEN not in str(err.value)


async def test_a_client_too_far_behind_is_told_and_disconnected(
        service: tuple[Service, Script]) -> None:
    svc, _ = service
    svc.stream.buffer_events = 4
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{svc.port}/questions/stream") as resp:
        await wait_until(lambda: len(svc.stream.clients) == 1)
        for q in list(svc.core.questions.values()) * 2:  # 6 lines in one write
            svc.feed.append(q)
        svc.feed.flush()
        (told,) = await read_events(resp, 1)
        assert told["event"] == "overflow" and "Last-Event-ID" in told["data"]
        assert await resp.content.read() == b""  # then the server closed the stream
    assert svc.stream.dropped == 1 and not svc.stream.clients


async def test_stopping_the_service_ends_open_streams(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        async with running_service(service_config(tmp_path), {"test": Script()}) as svc:
            resp = await session.get(f"http://127.0.0.1:{svc.port}/questions/stream")
            await wait_until(lambda: len(svc.stream.clients) == 1)
            svc.request_stop()
        assert await resp.content.read() == b""  # ended with the service, not left hanging
        resp.close()
