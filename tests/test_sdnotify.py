"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kloros_stream.sdnotify import Notifier, socket_address, watchdog_loop


class FakeSystemd:
    """A bound datagram socket that collects notify messages as dicts."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(socket_address(address))
        self.sock.settimeout(10)

    def receive(self) -> dict[str, str]:
        data = self.sock.recv(65536).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def pending(self) -> list[dict[str, str]]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(65536).decode()
                out.append(dict(line.split("=", 1) for line in data.split("\n")))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(10)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(tmp_path / "notify.sock"))
    yield fake
    fake.close()


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd(f"@kloros-stream-test-{uuid.uuid4().hex}")
    yield fake
    fake.close()


def test_ready_status_stopping_over_a_path_socket(path_systemd: FakeSystemd) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path_systemd.address})
    assert notifier.enabled
    assert notifier.ready(status="starting\nup")
    assert path_systemd.receive() == {"READY": "1", "STATUS": "starting up"}
    assert notifier.status("questions=3  signals/s=1.5 dropped=0")
    assert path_systemd.receive() == {"STATUS": "questions=3 signals/s=1.5 dropped=0"}
    assert notifier.stopping()
    assert path_systemd.receive() == {"STOPPING": "1"}
    assert notifier.sent == 3
    notifier.close()


def test_abstract_socket_and_reloading(abstract_systemd: FakeSystemd) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": abstract_systemd.address})
    before = time.monotonic_ns() // 1000
    assert notifier.reloading()
    message = abstract_systemd.receive()
    after = time.monotonic_ns() // 1000
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after
    assert notifier.notify("READY=1\nSTATUS=reloaded", EXTRA="x")
    assert abstract_systemd.receive() == {"READY": "1", "STATUS": "reloaded", "EXTRA": "x"}
    notifier.close()


def test_nothing_sent_without_notify_socket(path_systemd: FakeSystemd) -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "2000000"})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert not notifier.notify(STATUS="x")
    assert notifier.sent == 0
    assert path_systemd.pending() == []


def test_unsupported_address_and_missing_receiver(tmp_path: Path) -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": "relative/sock"}).enabled
    gone = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    assert gone.enabled
    assert not gone.ready()
    assert gone.errors == 1


def test_watchdog_interval_from_env() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_timeout == 30.0
    assert Notifier.from_env(env).watchdog_interval == 15.0
    mine = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(mine).watchdog_interval == 15.0
    other = {**env, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(other).watchdog_interval is None
    assert Notifier.from_env({**env, "WATCHDOG_USEC": "soon"}).watchdog_interval is None
    assert Notifier.from_env({"NOTIFY_SOCKET": "/run/x"}).watchdog_interval is None


def test_from_env_can_hide_the_socket_from_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@kloros-hidden")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    notifier = Notifier.from_env(unset_environment=True)
    assert notifier.address == "@kloros-hidden"
    assert notifier.watchdog_interval == 0.5
    assert "NOTIFY_SOCKET" not in os.environ
    assert "WATCHDOG_USEC" not in os.environ


async def _receive_async(fake: FakeSystemd, count: int) -> list[dict[str, str]]:
    return await asyncio.to_thread(lambda: [fake.receive() for _ in range(count)])


async def test_watchdog_pings_arrive(abstract_systemd: FakeSystemd) -> None:
    env = {
        "NOTIFY_SOCKET": abstract_systemd.address,
        "WATCHDOG_USEC": "100000",
        "WATCHDOG_PID": str(os.getpid()),
    }
    notifier = Notifier.from_env(env)
    assert notifier.watchdog_interval == 0.05
    task = asyncio.create_task(watchdog_loop(notifier))
    try:
        pings = await asyncio.wait_for(_receive_async(abstract_systemd, 3), timeout=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert pings == [{"WATCHDOG": "1"}] * 3


async def test_a_stalled_loop_sends_no_pings(path_systemd: FakeSystemd) -> None:
    notifier = Notifier(path_systemd.address, watchdog_timeout=0.02)
    task = asyncio.create_task(watchdog_loop(notifier))
    await asyncio.to_thread(path_systemd.receive)
    time.sleep(0.3)  # the event loop itself is blocked: the watchdog task cannot run
    sent_while_blocked = notifier.sent
    path_systemd.pending()
    time.sleep(0.1)
    assert notifier.sent == sent_while_blocked
    assert path_systemd.pending() == []
    await asyncio.to_thread(path_systemd.receive)  # the loop runs again: pings resume
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_watchdog_withheld_while_unhealthy(path_systemd: FakeSystemd) -> None:
    notifier = Notifier(path_systemd.address, watchdog_timeout=0.02)
    state = {"healthy": False, "checks": 0}

    def healthy() -> bool:
        state["checks"] += 1
        return state["healthy"]

    task = asyncio.create_task(watchdog_loop(notifier, healthy=healthy))
    deadline = time.monotonic() + 10
    while state["checks"] < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert state["checks"] >= 3
    assert notifier.sent == 0
    state["healthy"] = True
    assert await asyncio.wait_for(_receive_async(path_systemd, 1), 10) == [{"WATCHDOG": "1"}]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_watchdog_loop_returns_without_watchdog(path_systemd: FakeSystemd) -> None:
    await asyncio.wait_for(watchdog_loop(Notifier(path_systemd.address)), timeout=5)
    await asyncio.wait_for(watchdog_loop(Notifier(None, watchdog_timeout=1.0)), timeout=5)
    assert path_systemd.pending() == []
