"""SIGHUP reload: the plan (pure) and a real in-process Service applying it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from kloros_stream.config import load_config, parse_config
from kloros_stream.reload import plan_reload
from tests.support.scripted import TINY_SUPERVISOR, Script, gap, running_service, wait_until
from tests.support.service import to_toml


def cfg(tmp_path: Path, data: dict[str, Any]) -> Any:
    return parse_config(data, tmp_path)


def test_plan_starts_stops_and_restarts_only_what_changed(tmp_path: Path) -> None:
    old = cfg(
        tmp_path,
        {
            "monitors": {
                "chaos": {"enabled": True},
                "metric_quality": {"enabled": True},
                "capability_discovery": {"required_executables": ["a"]},
                "test": {"enabled": False},
                "exception": {"enabled": False},
            }
        },
    )
    new = cfg(
        tmp_path,
        {
            "monitors": {
                "chaos": {"enabled": False},
                "metric_quality": {"enabled": True},
                "capability_discovery": {"required_executables": ["a", "b"]},
                "test": {"enabled": True},
                "exception": {"enabled": False, "units": ["other-*"]},
            },
            "curiosity": {"suppress": ["x*"]},
        },
    )
    plan = plan_reload(old, new)
    assert plan.start == ("test",)
    assert plan.stop == ("chaos",)
    assert plan.restart == ("capability_discovery",)
    assert "metric_quality" in plan.unchanged and "exception" in plan.unchanged
    assert set(plan.changed) == {
        "monitors.chaos.enabled",
        "monitors.test.enabled",
        "monitors.exception.units",
        "monitors.capability_discovery.required_executables",
        "curiosity.suppress",
    }
    assert plan.needs_restart == ()
    assert plan.config.curiosity.suppress == ["x*"]


def test_plan_follows_what_a_monitor_reads_besides_its_section(tmp_path: Path) -> None:
    old = cfg(tmp_path, {})
    roots = cfg(tmp_path, {"monitors": {"integration": {"roots": ["lib"]}}})
    plan = plan_reload(old, roots)
    assert set(plan.restart) == {"integration", "capability_discovery", "knowledge_discovery"}
    parsing = cfg(tmp_path, {"monitors": {"integration": {"emit_calls": ["send"]}}})
    assert "module_discovery" in plan_reload(old, parsing).restart  # its index parses so
    lines = cfg(tmp_path, {"service": {"max_line_bytes": 4096}})
    assert set(plan_reload(old, lines).restart) == set(plan.unchanged) | set(plan.restart)


def test_plan_keeps_restart_only_settings(tmp_path: Path) -> None:
    old = cfg(tmp_path, {"http": {"port": 8765}, "feed": {"path": "a.jsonl"}})
    new = cfg(
        tmp_path,
        {
            "http": {"port": 9000},
            "feed": {"path": "b.jsonl"},
            "service": {"state_dir": "elsewhere", "log_level": "debug"},
            "bus": {"maxsize": 5},
        },
    )
    plan = plan_reload(old, new)
    assert set(plan.needs_restart) == {"http.port", "feed.path", "service.state_dir"}
    assert set(plan.changed) == {"service.log_level", "bus.maxsize"}
    assert plan.config.http.port == 8765
    assert plan.config.feed.path == old.feed.path
    assert plan.config.service.state_dir == old.service.state_dir
    assert plan.config.service.log_level == "debug"
    assert plan.config.bus.maxsize == 5
    assert plan.restart == plan.start == plan.stop == ()


def write(path: Path, data: dict[str, Any]) -> Path:
    base: dict[str, Any] = {
        "http": {"port": 0},
        "feed": {"path": "var/feed.jsonl"},
        "service": {"state_dir": "var/state"},
        "supervisor": dict(TINY_SUPERVISOR),
    }
    for key, value in data.items():
        base[key] = {**base.get(key, {}), **value}
    path.write_text(to_toml(base), encoding="utf-8")
    return path


async def test_service_reload_in_process(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    history = tmp_path / "var" / "history.jsonl"
    write(
        conf,
        {
            "monitors": {
                "chaos": {"enabled": True},
                "metric_quality": {"enabled": True},
                "capability_discovery": {"enabled": True, "required_executables": ["a"]},
                "test": {"enabled": False},
            }
        },
    )
    scripts = {
        name: Script() for name in ("chaos", "metric_quality", "capability_discovery", "test")
    }
    scripts["metric_quality"].gaps = [gap("suspicious_metrics", "identical_metrics")]
    async with running_service(load_config(conf), scripts) as svc:
        await wait_until(lambda: svc.core.handled == 1, what="first gap")
        assert svc.sinks.get("history") is None
        write(
            conf,
            {
                "monitors": {
                    "chaos": {"enabled": False},
                    "metric_quality": {"enabled": True},
                    "capability_discovery": {"enabled": True, "required_executables": ["a", "b"]},
                    "test": {"enabled": True},
                },
                "curiosity": {"suppress": ["ignore*"]},
                "history": {"path": str(history)},
            },
        )
        assert await svc.reload()
        await wait_until(lambda: scripts["test"].running == 1, what="test monitor started")
        await wait_until(
            lambda: scripts["capability_discovery"].running == 1,
            what="capability_discovery restarted",
        )
        assert scripts["metric_quality"].runs == 1
        assert scripts["capability_discovery"].runs == 2
        assert scripts["chaos"].running == 0
        assert svc.statuses["chaos"].state == "disabled"
        assert svc.core.suppress == ("ignore*",)
        assert svc.sinks.get("history") is not None

        scripts["test"].push(gap("test_failure", "tests/t.py::test_a"))
        scripts["test"].push(gap("tick", "ignored"))
        await wait_until(lambda: svc.core.handled == 3, what="signals after reload")
        assert [
            q.metadata["gap_name"]
            for q in svc.core.ranked(include_resolved=True)
            if q.metadata["gap_type"] != "suspicious_metrics"
        ] == ["tests/t.py::test_a"]
        lines = [orjson.loads(x) for x in history.read_bytes().splitlines()]
        assert [e["facts"]["gap_name"] for e in lines] == ["tests/t.py::test_a", "ignored"]

        conf.write_text("[monitors.chaos]\nenabeld = true\n", encoding="utf-8")
        assert not await svc.reload()
        assert svc.config.monitors.test.enabled
        assert scripts["test"].runs == 1
        assert svc.sinks.get("history") is not None
