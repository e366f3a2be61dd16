"""Operations through a real ``kloros-stream run``: sd_notify, SIGHUP reload, history."""

from __future__ import annotations

import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.service import ServiceProcess, questions_of, write_config

pytestmark = pytest.mark.e2e

WAIT_S = 20.0


class FakeSystemd:
    """An abstract AF_UNIX datagram socket that records notify messages, as systemd would."""

    def __init__(self) -> None:
        self.address = f"@kloros-stream-e2e-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.address[1:].encode())
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def wait(
        self, predicate: Callable[[dict[str, str]], bool], after: int = 0, timeout: float = WAIT_S
    ) -> int:
        """Index of the first message from ``after`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(after, len(self.messages)):
                if predicate(self.messages[i]):
                    return i
            after = len(self.messages)
            if time.monotonic() > deadline:
                raise AssertionError(f"no such notify message in {timeout}s: {self.messages}")
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.split("\n")))

    def drain(self) -> int:
        """Receive everything already sent; the index the next message will have."""
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(65536).decode()
                self.messages.append(dict(line.split("=", 1) for line in data.split("\n")))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(0.1)
        return len(self.messages)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd()
    yield fake
    fake.close()


def test_notify_ready_watchdog_status_reload_stopping(tmp_path: Path, systemd: FakeSystemd) -> None:
    env = {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "1000000"}
    with ServiceProcess(write_config(tmp_path), env=env) as svc:
        ready = systemd.wait(lambda m: m.get("READY") == "1")
        assert "open questions" in systemd.messages[ready]["STATUS"]
        first = systemd.wait(lambda m: m == {"WATCHDOG": "1"}, after=ready)
        systemd.wait(lambda m: m == {"WATCHDOG": "1"}, after=first + 1)
        periodic = systemd.wait(lambda m: "STATUS" in m and "READY" not in m, after=ready)
        assert "signals/s" in systemd.messages[periodic]["STATUS"]

        before = time.monotonic_ns() // 1000
        assert svc.proc is not None
        mark = systemd.drain()
        svc.proc.send_signal(signal.SIGHUP)
        reloading = systemd.wait(lambda m: m.get("RELOADING") == "1", after=mark)
        assert int(systemd.messages[reloading]["MONOTONIC_USEC"]) >= before
        systemd.wait(lambda m: m.get("READY") == "1", after=reloading)
        svc.wait_log(lambda e: e.get("event") == "reload_applied")

        start = systemd.drain()
        assert svc.stop() == 0
        systemd.wait(lambda m: m.get("STOPPING") == "1", after=start)


def test_reload_and_stop_outside_systemd(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": "", "WATCHDOG_USEC": ""}
    with ServiceProcess(write_config(tmp_path), env=env) as svc:
        assert svc.proc is not None
        svc.proc.send_signal(signal.SIGHUP)
        applied = svc.wait_log(lambda e: e.get("event") == "reload_applied")
        assert applied["restarted"] == applied["started"] == applied["stopped"] == []
        assert svc.stop() == 0
    assert not any(e.get("event", "").startswith("sd_") for e in svc.logs)


def monitors(tool_names: list[str], *, chaos: bool, test: bool, history: Path) -> dict[str, Any]:
    data: dict[str, Any] = {
        "capability_discovery": {"required_executables": tool_names, "scan_imports": False},
        "metric_quality": {"experiments_file": "var/experiments.jsonl"},
    }
    if chaos:
        data["chaos"] = {"history_file": "var/chaos.jsonl"}
    if test:
        data["test"] = {"results_dir": "var/test-results"}
    return {"monitors": data, "history": {"path": str(history)}}


def started(svc: ServiceProcess, name: str, since: int = 0) -> int:
    return sum(
        1
        for e in svc.logs[since:]
        if e.get("event") == "monitor_started" and e.get("monitor") == name
    )


def test_sighup_reload_restarts_changed_monitors_only(tmp_path: Path, systemd: FakeSystemd) -> None:
    history = tmp_path / "var" / "history.jsonl"
    tool_a, tool_b = "kloros-e2e-missing-a", "kloros-e2e-missing-b"
    conf = write_config(tmp_path, monitors([tool_a], chaos=True, test=False, history=history))
    with ServiceProcess(conf, env={"NOTIFY_SOCKET": systemd.address}) as svc:
        assert svc.proc is not None
        svc.wait_feed(
            lambda qs: any(
                q["metadata"]["gap_name"] == tool_a for q in questions_of(qs, "missing_tool")
            ),
            WAIT_S,
        )
        for name in ("capability_discovery", "metric_quality", "chaos"):
            svc.wait_log(
                lambda e, n=name: e.get("event") == "monitor_started" and e.get("monitor") == n
            )
        assert svc.health()["monitors"]["test"]["state"] == "disabled"
        restarts_before = svc.health()["monitors"]["metric_quality"]["restarts"]
        mark = len(svc.logs)

        write_config(tmp_path, monitors([tool_a, tool_b], chaos=False, test=True, history=history))
        svc.proc.send_signal(signal.SIGHUP)
        applied = svc.wait_log(lambda e: e.get("event") == "reload_applied", WAIT_S)
        assert applied["started"] == ["test"]
        assert applied["stopped"] == ["chaos"]
        assert applied["restarted"] == ["capability_discovery"]
        assert "metric_quality" in applied["unchanged"]
        svc.wait_feed(
            lambda qs: any(
                q["metadata"]["gap_name"] == tool_b for q in questions_of(qs, "missing_tool")
            ),
            WAIT_S,
        )
        svc.wait_log(
            lambda e: e.get("event") == "monitor_started" and e.get("monitor") == "test", WAIT_S
        )
        health = svc.health()["monitors"]
        assert health["chaos"]["state"] == "disabled"
        assert health["test"]["state"] != "disabled"
        assert health["metric_quality"]["state"] == "running"
        assert health["metric_quality"]["restarts"] == restarts_before
        assert started(svc, "metric_quality", mark) == 0
        assert started(svc, "capability_discovery", mark) == 1

        mark = len(svc.logs)
        good = conf.read_text(encoding="utf-8")
        conf.write_text(
            good.replace("[monitors.chaos]", "[monitors.chaos]\nenabeld = true\n"), encoding="utf-8"
        )
        start = systemd.drain()
        svc.proc.send_signal(signal.SIGHUP)
        rejected = svc.wait_log(lambda e: e.get("event") == "reload_rejected", WAIT_S)
        assert "monitors.chaos.enabeld" in rejected["reason"]
        ready = systemd.wait(lambda m: m.get("READY") == "1", after=start)
        assert "reload rejected" in systemd.messages[ready]["STATUS"]
        assert not any(
            e.get("event") in ("monitor_started", "reload_applied") for e in svc.logs[mark:]
        )
        assert svc.health()["monitors"]["test"]["state"] != "disabled"
        assert svc.stop() == 0

    gaps = [orjson.loads(line) for line in history.read_bytes().splitlines()]
    names = {g["facts"]["gap_name"] for g in gaps if g["signal"] == "CAPABILITY_GAP"}
    assert {tool_a, tool_b} <= names
    assert all(g["monitor"] for g in gaps)
