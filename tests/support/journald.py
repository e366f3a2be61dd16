"""A real, namespaced systemd-journald for tests, written to the way services write to it.

``NamespacedJournald`` starts ``/lib/systemd/systemd-journald NS`` (root only) with a
fresh namespace name, waits until its sockets and journal file exist, and on exit kills it
and removes ``/var/log/journal/<machine-id>.NS`` and ``/run/systemd/journal.NS``.

Writing, as a service does:

- :meth:`NamespacedJournald.emit` forwards lines through the namespace's stdout stream
  socket (``/run/systemd/journal.NS/stdout``: seven header lines, identifier, unit id,
  priority, level prefix, forward to syslog, kmsg, console, then one entry per line) from
  a *new process*, because journald caches a client's unit per PID;
- :meth:`NamespacedJournald.run_service` runs Python code whose stdout and stderr are that
  stream socket, so a real uncaught exception lands one line per entry, with its own PID;
- :meth:`NamespacedJournald.native` sends one entry over the native datagram socket
  (``/run/systemd/journal.NS/socket``), multi-line values in the binary field format.

``python -m tests.support.journald stream NS IDENT UNIT PRIORITY LEVEL_PREFIX [-- CMD ...]``
is the launcher these use: it connects, sends the header, and then either forwards its
stdin or puts the socket on fd 1 and 2 and execs CMD.

Without root, :func:`scripted_journalctl` gives a stand-in journalctl (a real executable
that prints planned output and records its arguments) for exact edge cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kloros_stream.sources.journal import JournalBatch

JOURNALD = Path("/lib/systemd/systemd-journald")
JOURNAL_ROOT = Path("/var/log/journal")
RUNTIME_ROOT = Path("/run/systemd")
REPO = Path(__file__).resolve().parents[2]


def journald_skip_reason() -> str | None:
    """Why a real namespaced journald cannot run here (None: it can)."""
    if not JOURNALD.exists():
        return f"{JOURNALD} does not exist (no systemd-journald on this host)"
    if os.geteuid() != 0:
        return "starting a namespaced systemd-journald needs root"
    if shutil.which("journalctl") is None:
        return "journalctl is not on PATH"
    return None


def machine_id() -> str:
    return Path("/etc/machine-id").read_text().strip()


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)


class NamespacedJournald:
    """A private systemd-journald namespace (see the module docstring)."""

    def __init__(
        self, namespace: str | None = None, settings: dict[str, str] | None = None
    ) -> None:
        """``settings``: ``[Journal]`` options for ``/etc/systemd/journald@NS.conf`` (e.g.
        ``{"RateLimitBurst": "0"}`` for benchmarks); the file is removed on stop."""
        self.namespace = namespace or f"kst{uuid.uuid4().hex[:10]}"
        self.settings = settings or {}
        self.config_file = Path("/etc/systemd") / f"journald@{self.namespace}.conf"
        self.runtime_dir = RUNTIME_ROOT / f"journal.{self.namespace}"
        self.journal_dir = JOURNAL_ROOT / f"{machine_id()}.{self.namespace}"
        self.stdout_socket = self.runtime_dir / "stdout"
        self.native_socket = self.runtime_dir / "socket"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> NamespacedJournald:
        if self.settings:
            self.config_file.write_text(
                "[Journal]\n" + "".join(f"{k}={v}\n" for k, v in self.settings.items())
            )
        self.proc = subprocess.Popen(
            [str(JOURNALD), self.namespace],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._ready, timeout, what=f"journald {self.namespace} ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"systemd-journald {self.namespace} exited with {self.proc.returncode}"
            )
        if not (self.journal_dir / "system.journal").exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.stdout_socket))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.journal_dir, ignore_errors=True)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        if self.settings:
            self.config_file.unlink(missing_ok=True)

    def __enter__(self) -> NamespacedJournald:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- writing -------------------------------------------------------------------------
    def _launcher(self, identifier: str, unit: str, priority: int, level_prefix: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tests.support.journald",
            "stream",
            self.namespace,
            identifier,
            unit,
            str(priority),
            "1" if level_prefix else "0",
        ]

    def emit(
        self,
        lines: Iterable[str],
        *,
        identifier: str = "app",
        unit: str = "",
        priority: int = 6,
        level_prefix: bool = False,
    ) -> int:
        """Write ``lines`` through the stdout stream socket from a new process; its PID."""
        payload = "".join(f"{line}\n" for line in lines).encode()
        proc = subprocess.run(
            self._launcher(identifier, unit, priority, level_prefix),
            input=payload,
            cwd=REPO,
            capture_output=True,
            timeout=30,
            check=True,
        )
        return int(proc.stdout.decode().strip())

    def run_service(
        self, code: str, *, identifier: str = "app", unit: str = "", priority: int = 6
    ) -> int:
        """Run ``python -c code`` with stdout/stderr on the stream socket; its PID."""
        proc = subprocess.run(
            [*self._launcher(identifier, unit, priority, False), "--", sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return int(proc.stdout.decode().split()[0])

    def native(self, fields: dict[str, str | bytes]) -> None:
        """One entry over the native protocol from this process."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(encode_native(fields), str(self.native_socket))

    # -- reading -------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every entry of the namespace, as ``journalctl -o json`` prints it."""
        out = subprocess.run(
            ["journalctl", f"--namespace={self.namespace}", "--output=json", "--all", "--no-pager"],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_messages(self, messages: Iterable[str], timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until every message is in the journal (it is flushed to the file)."""
        wanted = set(messages)

        def present() -> list[dict[str, Any]] | None:
            entries = self.entries()
            found = {m for e in entries if isinstance(m := e.get("MESSAGE"), str)}
            return entries if wanted <= found else None

        return wait_until(present, timeout, what=f"messages {sorted(wanted)!r} in journal")


def encode_native(fields: dict[str, str | bytes]) -> bytes:
    """The native protocol: ``KEY=value\\n``, or for values with a newline
    ``KEY\\n<le64 length><value>\\n``."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode() if isinstance(value, str) else value
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


# -- a scripted journalctl ---------------------------------------------------------------
def scripted_journalctl(
    tmp_path: Path, runs: list[dict[str, Any]], probe: dict[str, Any] | None = None
) -> Path:
    """An executable that answers the probe with ``probe`` and its n-th reading run with
    ``runs[n]`` (``stdout`` bytes as latin-1 text, then each ``[after_s, text]`` of
    ``more`` after a pause, or ``[after_s, text, path]`` once ``path`` exists too,
    ``stderr``, ``code``, ``hang``); every call's argv is appended to ``calls.jsonl``."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"runs": runs, "probe": probe or {}}))
    script = tmp_path / "journalctl"
    script.write_text(f"""#!{sys.executable}
import json, sys, time
from pathlib import Path
here = Path(__file__).parent
plan = json.loads((here / "plan.json").read_text())
calls = here / "calls.jsonl"
with calls.open("a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
if "--output=json" not in sys.argv:
    step = plan["probe"]
else:
    n = sum(1 for line in calls.read_text().splitlines() if "--output=json" in line) - 1
    step = plan["runs"][min(n, len(plan["runs"]) - 1)]
sys.stdout.buffer.write(step.get("stdout", "").encode("latin-1"))
sys.stdout.flush()
for after_s, text, *gate in step.get("more", ()):
    time.sleep(after_s)
    while gate and not Path(gate[0]).exists():
        time.sleep(0.01)
    sys.stdout.buffer.write(text.encode("latin-1"))
    sys.stdout.flush()
sys.stderr.write(step.get("stderr", ""))
sys.stderr.flush()
if step.get("hang"):
    time.sleep(3600)
sys.exit(step.get("code", 0))
""")
    script.chmod(0o755)
    return script


def calls(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def collect(
    it: AsyncIterator[JournalBatch], count: int, timeout: float = 10.0, ident: str | None = None
) -> list[dict[str, Any]]:
    """Entries from ``it`` (only those of identifier ``ident`` if given) until ``count``
    arrived (fails after ``timeout``)."""
    got: list[dict[str, Any]] = []

    async def run() -> None:
        async for batch in it:
            got.extend(
                e for e in batch.entries if ident is None or e.get("SYSLOG_IDENTIFIER") == ident
            )
            if len(got) >= count:
                return

    await asyncio.wait_for(run(), timeout)
    return got


def _stream_main(argv: list[str]) -> int:
    namespace, identifier, unit, priority, level_prefix = argv[:5]
    command = argv[6:] if len(argv) > 5 and argv[5] == "--" else []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(RUNTIME_ROOT / f"journal.{namespace}" / "stdout"))
    sock.sendall(f"{identifier}\n{unit}\n{priority}\n{level_prefix}\n0\n0\n0\n".encode())
    if command:
        sys.stdout.write(f"{os.getpid()}\n")
        sys.stdout.flush()
        os.dup2(sock.fileno(), 1)
        os.dup2(sock.fileno(), 2)
        os.execvp(command[0], command)
    data = sys.stdin.buffer.read()
    sock.sendall(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # journald closes its side once it has read everything
    sock.close()
    print(os.getpid())
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "stream":
        raise SystemExit(_stream_main(sys.argv[2:]))
    raise SystemExit(
        "usage: python -m tests.support.journald stream NS IDENT UNIT PRIO "
        "LEVEL_PREFIX [-- CMD ...]"
    )
