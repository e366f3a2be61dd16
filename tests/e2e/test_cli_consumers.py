"""The consumer commands against a real service: claim, answer, block, release, tail, the
token and the exit statuses; a public address without a token refuses to start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.consumers import free_port
from tests.support.service import ServiceProcess, append_chaos, failure, write_config

pytestmark = pytest.mark.e2e

TOKEN = "cli-token-123"


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kloros_stream", *args, "--config",
                           str(config)], capture_output=True, text=True, timeout=30,
                          check=False)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def test_claim_answer_block_release_and_tail(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    cfg = write_config(tmp_path, {"http": {"port": free_port(), "token_file": "token"},
                                  "monitors": {"chaos": {"history_file":
                                                         "var/chaos_history.jsonl"}}})
    append_chaos(tmp_path, failure("a"), failure("b"))
    with ServiceProcess(cfg) as proc:
        proc.wait_feed(lambda qs: len(qs) == 2)
        tail = subprocess.Popen([sys.executable, "-m", "kloros_stream", "tail", "--json",
                                 "--config", str(cfg)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: b"kloros_stream_stream_clients 1.0" in proc.get("/metrics")[1],
                     "tail connected")
            readable = cli(cfg, "claim", "--consumer", "me", "--lease", "60")
            assert readable.returncode == 0, readable.stderr
            assert readable.stdout.startswith("claimed ") and "Self-healing" in readable.stdout
            first = readable.stdout.split()[1]
            second = json.loads(cli(cfg, "claim", "--consumer", "me", "--json").stdout)["id"]
            nothing = cli(cfg, "claim", "--consumer", "me")
            assert (nothing.returncode, nothing.stdout.strip()) == (0, "no ready question to claim")

            answered = cli(cfg, "answer", first, "fixed: restart order", "--json")
            assert answered.returncode == 0 and json.loads(answered.stdout)["status"] == "answered"
            foreign = cli(cfg, "block", second, "needs root", "--consumer", "someone-else")
            assert foreign.returncode == 1 and "409" in foreign.stderr and "held by 'me'" \
                in foreign.stderr
            assert cli(cfg, "block", second, "needs root", "--consumer", "me").returncode == 0
            released = cli(cfg, "release", second)
            assert released.returncode == 0 and " ready " in released.stdout
            missing = cli(cfg, "release", "no-such-id")
            assert missing.returncode == 1 and "404" in missing.stderr
            stale = cli(cfg, "release", first)
            assert stale.returncode == 1 and "409" in stale.stderr

            assert tail.stdout is not None
            seen = [json.loads(tail.stdout.readline()) for _ in range(5)]
            assert [(q["id"], q["status"]) for q in seen] == [
                (first, "in_progress"), (second, "in_progress"), (first, "answered"),
                (second, "blocked"), (second, "ready")]
            (tmp_path / "token").write_text("not-the-token")
            refused = cli(cfg, "claim")
            assert refused.returncode == 1 and "401" in refused.stderr
        finally:
            tail.terminate()
            tail.wait(timeout=10)
    assert TOKEN not in "\n".join(proc.raw_output)  # never logged


def test_nothing_listening_and_bad_configs(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"http": {"port": free_port()}})
    down = cli(cfg, "claim")
    assert down.returncode == 1 and "cannot reach the service" in down.stderr
    any_port = write_config(tmp_path)  # port 0
    assert cli(any_port, "tail").returncode == 1


def test_a_public_address_without_a_token_exits_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"http": {"host": "0.0.0.0"}})
    done = subprocess.run([sys.executable, "-m", "kloros_stream", "run", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ})
    assert done.returncode == 2
    assert "http.token_file" in done.stderr and "0.0.0.0" in done.stderr
