"""deploy/grafana and deploy/prometheus: valid files over the metrics the service exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.scripted import Script, gap, running_service, service_config, wait_until

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "kloros-stream.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
METRIC = re.compile(r"\b((?:kloros_stream|process)_[a-z_]+)")


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


async def exported_sample_names(tmp_path: Path) -> set[str]:
    """Sample names of a real service's /metrics with some traffic behind them."""
    cfg = service_config(tmp_path, {})
    scripts = {"chaos": Script(gaps=[gap("healing_failure", "gpu_oom")])}
    async with running_service(cfg, scripts) as svc:
        await wait_until(lambda: svc.core.handled == 1)
        svc.statuses["chaos"].count("lines_read")  # a monitor's own counter, as real ones do
        text = generate_latest(svc.registry).decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_every_metric_on_the_dashboard_and_in_the_alerts_is_exported(
    tmp_path: Path
) -> None:
    exported = await exported_sample_names(tmp_path)
    used = {m for expr in dashboard_exprs() + alert_exprs() for m in METRIC.findall(expr)}
    assert used, "no metric referenced"
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_dashboard_is_importable_as_is() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("open questions by gap type", "signals/s by monitor", "bus depth",
                  "latency", "monitor states", "restarts", "rss", "cpu"):
        assert topic in titles, topic
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])


def test_alerts_cover_the_operators_failure_modes() -> None:
    names = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"]
             for r in g["rules"]}
    assert {"KlorosStreamMonitorFailed", "KlorosStreamMonitorRestarting",
            "KlorosStreamBusDropping", "KlorosStreamConsumerDown",
            "KlorosStreamFeedWriteErrors", "KlorosStreamGapLatencyHigh"} <= names


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian package 'prometheus')")
@pytest.mark.parametrize("args", [("check", "rules", str(ALERTS)),
                                  ("test", "rules", str(ALERT_TESTS))])
def test_promtool_accepts_the_rules(args: tuple[str, ...]) -> None:
    proc = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
