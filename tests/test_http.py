"""HTTP over a real socket: an in-process Service with scripted monitors on a free port."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kloros_stream.config import MONITOR_NAMES
from kloros_stream.service import Service
from tests.support.scripted import (
    Script,
    gap,
    resolution,
    running_service,
    service_config,
    wait_until,
)

MONITOR_FIELDS = {"state", "restarts", "last_error", "last_event_at"}
STATES = {"starting", "running", "restarting", "failed", "unavailable", "disabled"}


async def get(svc: Service, path: str) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{svc.port}{path}", timeout=aiohttp.ClientTimeout(total=10)
    ) as resp:
        text = await resp.text()
        body = await resp.json(content_type=None) if resp.content_type.endswith("json") else None
        return resp.status, resp.headers.get("Content-Type", ""), body if body is not None \
            else text


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Service, dict[str, Script]]]:
    """Scripted monitors (one unavailable, one disabled: its script never runs)."""
    cfg = service_config(tmp_path, {})
    for name in ("integration", "module_discovery", "knowledge_discovery", "metric_quality",
                 "capability_discovery"):
        getattr(cfg.monitors, name).enabled = False
    scripts = {
        "test": Script(gaps=[gap("test_failure", "t::a"), gap("test_failure", "t::b")]),
        "integration": Script(gaps=[gap("syntax_error", "x.py")]),
        "chaos": Script(gaps=[gap("healing_failure", "gpu_oom")]),
        "exception": Script(),
        "exploration": Script(unavailable="nvidia-smi not found"),
    }
    async with running_service(cfg, scripts) as svc:
        await wait_until(lambda: svc.core.handled == 3 and
                         svc.statuses["exploration"].state == "unavailable")
        yield svc, scripts


async def test_health_has_the_contract_shape(
    service: tuple[Service, dict[str, Script]]
) -> None:
    svc, scripts = service
    status, ctype, body = await get(svc, "/health")
    assert scripts["integration"].runs == 0  # disabled: never started
    assert status == 200
    assert ctype.startswith("application/json")
    assert body["status"] == "ok"
    assert isinstance(body["uptime_s"], (int, float)) and body["uptime_s"] >= 0
    assert body["bus"] == {"depth": 0, "maxsize": 10_000, "published": 3, "dropped": 0}
    assert set(body["monitors"]) == {"test", "integration", "chaos", "exception",
                                     "exploration"}
    for name, mon in body["monitors"].items():
        assert set(mon) >= MONITOR_FIELDS, name
        assert mon["state"] in STATES
    assert body["monitors"]["test"]["state"] == "running"
    assert body["monitors"]["test"]["restarts"] == 0
    assert body["monitors"]["test"]["last_error"] is None
    assert isinstance(body["monitors"]["test"]["last_event_at"], float)
    assert body["monitors"]["exception"]["last_event_at"] is None
    assert body["monitors"]["integration"]["state"] == "disabled"
    assert body["monitors"]["exploration"]["state"] == "unavailable"
    assert body["monitors"]["exploration"]["last_error"] == "nvidia-smi not found"


async def test_health_503_when_a_monitor_failed(tmp_path: Path) -> None:
    cfg = service_config(tmp_path)
    scripts = {"test": Script(), "chaos": Script(crash_forever=True)}
    async with running_service(cfg, scripts) as svc:
        await wait_until(lambda: svc.statuses["chaos"].state == "failed")
        status, _, body = await get(svc, "/health")
        assert status == 503
        assert body["status"] == "degraded"
        assert body["monitors"]["chaos"]["state"] == "failed"
        assert body["monitors"]["chaos"]["restarts"] == 3
        assert "RuntimeError: scripted crash" in body["monitors"]["chaos"]["last_error"]
        assert body["reason"].startswith("chaos: 4 crashes within 60s")
        assert body["monitors"]["test"]["state"] == "running"


async def test_health_503_when_the_consumer_is_down(
    service: tuple[Service, dict[str, Script]]
) -> None:
    svc, _ = service
    assert svc._consumer is not None
    svc._consumer.cancel()
    await wait_until(lambda: not svc.consumer_running)
    status, _, body = await get(svc, "/health")
    assert status == 503
    assert body["reason"] == "consumer down"


async def test_every_service_monitor_is_reported(tmp_path: Path) -> None:
    """With the built-in factory table every contract monitor appears in /health."""
    cfg = service_config(tmp_path)
    for name in MONITOR_NAMES:
        getattr(cfg.monitors, name).enabled = False
    svc = Service(cfg)
    report, code = svc.health()
    assert set(report["monitors"]) == set(MONITOR_NAMES)
    assert code == 503  # nothing runs yet: the consumer is down


async def test_metrics_are_prometheus_text_with_the_contract_names(
    service: tuple[Service, dict[str, Script]]
) -> None:
    svc, _ = service
    status, ctype, text = await get(svc, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}

    assert samples[("kloros_stream_signals_total", (("monitor", "test"),))] == 2
    assert samples[("kloros_stream_signals_total", (("monitor", "chaos"),))] == 1
    assert samples[("kloros_stream_bus_dropped_total", ())] == 0
    assert samples[("kloros_stream_bus_depth", ())] == 0
    assert samples[("kloros_stream_questions_total", (("gap_type", "test_failure"),))] == 2
    assert samples[("kloros_stream_questions_total", (("gap_type", "healing_failure"),))] == 1
    assert samples[("kloros_stream_monitor_restarts_total", (("monitor", "test"),))] == 0
    assert families["kloros_stream_gap_latency_seconds"].type == "histogram"
    assert samples[("kloros_stream_gap_latency_seconds_count", ())] == 3
    assert ("kloros_stream_gap_latency_seconds_bucket", (("le", "+Inf"),)) in samples
    assert ("kloros_stream_gap_latency_seconds_sum", ()) in samples
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_virtual_memory_bytes", "process_start_time_seconds",
                 "process_open_fds"):
        assert (name, ()) in samples, name
    assert families["kloros_stream_signals"].type == "counter"
    assert families["kloros_stream_bus_depth"].type == "gauge"
    for line in text.splitlines():
        assert line.startswith("#") or line.startswith(("kloros_stream_", "process_")), line


async def test_metrics_count_restarts_and_drops(tmp_path: Path) -> None:
    cfg = service_config(tmp_path, {"bus": {"maxsize": 2}})
    flood = Script(gaps=[gap("test_failure", f"t::{i}") for i in range(50)])
    scripts = {"test": flood, "chaos": Script(crash_times=2)}
    async with running_service(cfg, scripts) as svc:
        await wait_until(lambda: svc.statuses["chaos"].state == "running" and
                         svc.bus.total_published == 50 and svc.bus.depth == 0)
        _, _, text = await get(svc, "/metrics")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("kloros_stream_monitor_restarts_total", (("monitor", "chaos"),))] == 2
    dropped = samples[("kloros_stream_bus_dropped_total", ())]
    delivered = samples[("kloros_stream_signals_delivered_total", (("monitor", "test"),))]
    assert dropped >= 48  # all 50 published in one go onto a bus of 2
    assert dropped + delivered == 50


async def test_questions_are_ranked_and_filtered(
    service: tuple[Service, dict[str, Script]]
) -> None:
    svc, scripts = service
    scripts["test"].push(resolution("test_failure", "t::b"))
    await wait_until(lambda: svc.core.handled == 4)

    status, ctype, open_qs = await get(svc, "/questions")
    assert status == 200 and ctype.startswith("application/json")
    assert [q["metadata"]["gap_name"] for q in open_qs] == ["t::a", "gpu_oom"]
    priorities = [q["priority"] for q in open_qs]
    assert priorities == sorted(priorities, reverse=True)

    _, _, all_qs = await get(svc, "/questions?status=all")
    assert len(all_qs) == 3
    assert [q["priority"] for q in all_qs] == sorted((q["priority"] for q in all_qs),
                                                     reverse=True)
    assert {q["status"] for q in all_qs} == {"ready", "resolved"}

    _, _, top = await get(svc, "/questions?top=1&status=all")
    assert top == all_qs[:1]
    _, _, open_explicit = await get(svc, "/questions?status=open&top=5")
    assert open_explicit == open_qs
    _, _, none = await get(svc, "/questions?top=0")
    assert none == []


@pytest.mark.parametrize("query", ["status=closed", "top=many", "top=-1",
                                   "cursor=%25%25", "cursor=WzEsMl0"])
async def test_questions_rejects_bad_parameters(
    service: tuple[Service, dict[str, Script]], query: str
) -> None:
    svc, _ = service
    status, _, body = await get(svc, f"/questions?{query}")
    assert status == 400
    assert "error" in body


async def test_a_page_larger_than_the_cap_is_cut_not_refused(
    service: tuple[Service, dict[str, Script]]
) -> None:
    """The contract sets no maximum ``top``: past 1000 the page is cut (and
    ``X-Next-Cursor`` says when more remain)."""
    svc, _ = service
    status, _, body = await get(svc, "/questions?top=5000&status=all")
    assert status == 200 and len(body) == 3


async def test_counters_are_live_in_questions_before_the_feed(tmp_path: Path) -> None:
    cfg = service_config(tmp_path)  # counter_flush_s = 60: no counter line during the test
    script = Script()
    async with running_service(cfg, {"test": script}) as svc:
        for _ in range(3):
            script.push(gap("test_failure", "t::flaky"))
        await wait_until(lambda: svc.core.handled == 3)
        _, _, qs = await get(svc, "/questions")
        assert [q["metadata"]["occurrences"] for q in qs] == [3]
        assert svc.feed.lines_written == 1


HTTP_DOC = Path(__file__).resolve().parents[1] / "docs" / "http.md"


def documented_health_fields() -> dict[str, bool]:
    """The /health table of docs/http.md: dotted path -> optional."""
    text = HTTP_DOC.read_text()
    section = text.split("<!-- health-fields -->")[1].split("<!-- /health-fields -->")[0]
    rows = re.findall(r"^\| `([^`]+)` \|(.*)\|$", section, re.MULTILINE)
    return {path: "*(optional" in meaning for path, meaning in rows}


def reported_fields(report: dict[str, Any], documented: set[str], prefix: str = "") -> set[str]:
    """Dotted paths of a report, descending only where the table documents sub-fields
    (monitor names collapse to ``<name>``)."""
    paths: set[str] = set()
    for key, value in report.items():
        wildcard = f"{prefix}<name>"
        path = wildcard if any(d.startswith(wildcard + ".") for d in documented) \
            else f"{prefix}{key}"
        if isinstance(value, dict) and any(d.startswith(path + ".") for d in documented):
            paths |= reported_fields(value, documented, path + ".")
        else:
            paths.add(path)
    return paths


async def test_health_matches_the_documented_fields_exactly(
    service: tuple[Service, dict[str, Script]]
) -> None:
    svc, _ = service
    documented = documented_health_fields()
    assert documented, "docs/http.md lost its /health table"
    status, _, body = await get(svc, "/health")
    assert status == 200
    reported = reported_fields(body, set(documented))
    assert reported <= set(documented), f"undocumented: {reported - set(documented)}"
    required = {path for path, optional in documented.items() if not optional}
    assert required <= reported, f"documented but missing: {required - reported}"
    for name, mon in body["monitors"].items():
        assert isinstance(mon["counters"], dict) and isinstance(mon["details"], dict), name


async def test_last_event_at_follows_the_signals_a_monitor_sent(
    service: tuple[Service, dict[str, Script]]
) -> None:
    svc, _ = service
    _, _, body = await get(svc, "/health")
    for name, mon in body["monitors"].items():
        if mon["signals"]:
            assert isinstance(mon["last_event_at"], float), name


async def test_questions_come_in_pages_with_a_cursor_and_filters(tmp_path: Path) -> None:
    cfg = service_config(tmp_path)
    script = Script(gaps=[gap("test_failure", f"t::{i}") for i in range(7)]
                    + [gap("syntax_error", f"m{i}.py") for i in range(3)])
    async with running_service(cfg, {"test": script}) as svc, aiohttp.ClientSession() as s:
        await wait_until(lambda: svc.core.handled == 10)
        base = f"http://127.0.0.1:{svc.port}/questions"
        _, _, everything = await get(svc, "/questions")  # default page size 100: all 10
        assert len(everything) == 10
        seen, url = [], f"{base}?top=4"
        while True:
            async with s.get(url) as resp:
                assert resp.status == 200
                page = await resp.json()
                seen += page
                cursor = resp.headers.get("X-Next-Cursor")
            if cursor is None:
                break
            url = f"{base}?top=4&cursor={cursor}"
        assert [len(seen)] == [10] and seen == everything
        _, _, syntax = await get(svc, "/questions?gap_type=syntax_error&monitor=test")
        assert sorted(q["metadata"]["gap_name"] for q in syntax) == ["m0.py", "m1.py", "m2.py"]
        _, _, none = await get(svc, "/questions?monitor=chaos")
        assert none == []
        _, _, ready = await get(svc, "/questions?status=ready&top=3")
        assert ready == everything[:3]


async def test_questions_filter_by_host(service: tuple[Service, dict[str, Script]]) -> None:
    svc, _ = service
    a = next(q for q in svc.core.questions.values() if q.metadata["gap_name"] == "t::a")
    svc.core.put(a.model_copy(update={"metadata": {
        **a.metadata, "hosts": {"n1": {"occurrences": 2, "last_seen": "2026-01-01"}}}}),
        time.time())
    svc._write()
    _, _, on_n1 = await get(svc, "/questions?status=all&host=n1")
    assert [q["metadata"]["gap_name"] for q in on_n1] == ["t::a"]
    _, _, on_n2 = await get(svc, "/questions?host=n2")
    assert on_n2 == []
