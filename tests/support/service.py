"""Drive a real ``kloros-stream run`` subprocess from end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from kloros_stream.config import MONITOR_NAMES
from kloros_stream.feed import read_feed

ALL_DISABLED: dict[str, dict[str, Any]] = {name: {"enabled": False} for name in MONITOR_NAMES}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for test configs (tables of scalars and lists)."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines = [f"[{prefix}]"] if prefix and scalars else []
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    out = "\n".join(lines) + ("\n\n" if lines else "")
    for key, table in tables.items():
        out += to_toml(table, f"{prefix}.{key}" if prefix else key)
    return out


def write_config(directory: Path, data: dict[str, Any] | None = None) -> Path:
    """Write ``config.toml`` in ``directory``: every monitor disabled unless ``data`` enables
    it, HTTP on a free port, state and feed under ``directory/var``."""
    data = dict(data or {})
    monitors = {name: dict(v) for name, v in ALL_DISABLED.items()}
    for name, section in data.pop("monitors", {}).items():
        monitors[name] = {"enabled": True, **section}
    merged: dict[str, Any] = {
        "service": {"state_dir": "var/state", "log_level": "debug"},
        "feed": {"path": "var/feed.jsonl"},
        "http": {"host": "127.0.0.1", "port": 0},
    }
    for section, values in data.items():
        merged[section] = {**merged.get(section, {}), **values}
    merged["monitors"] = monitors
    path = directory / "config.toml"
    path.write_text(to_toml(merged), encoding="utf-8")
    return path


class ServiceProcess:
    """``kloros-stream run --config PATH`` in a subprocess, with its JSON log captured."""

    def __init__(self, config_path: Path, *, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.directory = config_path.parent
        self.feed_path = self.directory / "var" / "feed.jsonl"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[dict[str, Any]] = []
        self.raw_output: list[str] = []
        self.port: int | None = None
        self._reader: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> ServiceProcess:
        self.logs.clear()
        self.port = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kloros_stream", "run", "--config", str(self.config_path)],
            cwd=self.directory,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self.wait_log(lambda e: e.get("event") == "service_ready", timeout=timeout)
        return self

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.raw_output.append(line)
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                if entry.get("event") == "http_listening":
                    self.port = int(entry["port"])
                self.logs.append(entry)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        """kill -9: no chance to flush or checkpoint."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    # -- observation ---------------------------------------------------------------------
    def wait_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
                 ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for entry in self.logs[seen:]:
                if predicate(entry):
                    return entry
            seen = len(self.logs)
            if self.proc is not None and self.proc.poll() is not None and seen == len(self.logs):
                break
            time.sleep(0.02)
        tail = "\n".join(self.raw_output[-40:])
        raise AssertionError(f"log condition not met within {timeout}s; output:\n{tail}")

    def questions(self) -> dict[str, dict[str, Any]]:
        """The feed as it is on disk: latest line per id."""
        return read_feed(self.feed_path).questions

    def wait_feed(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """Wait until ``predicate`` holds for the feed's current questions (latest per id)."""
        deadline = time.monotonic() + timeout
        while True:
            current = list(self.questions().values())
            if predicate(current):
                return current
            if time.monotonic() > deadline:
                tail = "\n".join(self.raw_output[-40:])
                raise AssertionError(
                    f"feed condition not met within {timeout}s; feed={current!r}\n{tail}"
                )
            time.sleep(0.02)

    def get(self, path: str) -> tuple[int, bytes]:
        assert self.port, "service has not logged its port yet"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def health(self) -> dict[str, Any]:
        return json.loads(self.get("/health")[1])

    def wait_scanned(self, *monitors: str, timeout: float = 15.0) -> None:
        """Until each monitor's initial scan is over (``initial_scan_s`` in its /health)."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()["monitors"]
            if all("initial_scan_s" in health[m].get("details", {}) for m in monitors):
                return
            assert time.monotonic() < deadline, f"initial scans not done: {health}"
            time.sleep(0.05)


def chaos_config(directory: Path, **chaos: Any) -> Path:
    """A config with only the chaos monitor, reading ``var/chaos_history.jsonl``."""
    return write_config(directory, {"monitors": {"chaos": {
        "history_file": "var/chaos_history.jsonl", **chaos}}})


def append_chaos(directory: Path, *entries: dict[str, Any]) -> None:
    """Append chaos results (see :func:`failure`): gaps written to disk."""
    path = directory / "var" / "chaos_history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry) + "\n")


def failure(scenario: str, error: str = "service did not come back") -> dict[str, Any]:
    return {"scenario": scenario, "healed": False, "error": error, "mode": "kill"}


def questions_of(feed: list[dict[str, Any]], gap_type: str) -> list[dict[str, Any]]:
    return [q for q in feed if q["metadata"]["gap_type"] == gap_type]


def feed_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def assert_no_duplicates(feed: Path) -> None:
    """Every gap has one id, and each id was created once (restarts included)."""
    created: dict[str, set[str]] = {}
    ids: dict[tuple[str, str], set[str]] = {}
    for q in feed_lines(feed):
        created.setdefault(q["id"], set()).add(q["created_at"])
        ids.setdefault((q["metadata"]["gap_type"], q["metadata"]["gap_name"]), set()).add(q["id"])
    assert all(len(v) == 1 for v in created.values()), created
    assert all(len(v) == 1 for v in ids.values()), ids


def wait_file_contains(path: Path, needle: bytes, timeout: float = 10.0) -> None:
    """Wait until ``path`` (a checkpoint) mentions ``needle``."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if needle in path.read_bytes():
                return
        assert time.monotonic() < deadline, f"{path} never mentioned {needle!r}"
        time.sleep(0.01)
