"""systemd's notify protocol (``sd_notify``) with the standard library only.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service: an ``AF_UNIX`` datagram
socket, a filesystem path or an abstract name written with a leading ``@``. Each message
is one datagram of newline-separated ``KEY=VALUE`` assignments (``READY=1``,
``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``, ``RELOADING=1``). Without the variable
every call is a no-op that returns False, so the service runs unchanged outside systemd.

``WatchdogSec=`` arrives as ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, the process meant
to ping). :func:`watchdog_loop` pings at half that period from the event loop itself: a
stalled loop stops pinging and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger(__name__)

_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str) -> str | bytes | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value (None: unsupported or empty)."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_timeout_from_env(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """``$WATCHDOG_USEC`` in seconds, if it is set, valid, and meant for this process."""
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    target = env.get("WATCHDOG_PID", "")
    if target and target != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("sd_watchdog_usec_invalid", value=raw)
        return None
    return usec / 1_000_000 if usec > 0 else None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class Notifier:
    """Sends notify messages to systemd; every method returns whether a datagram went out."""

    def __init__(self, address: str | None, watchdog_timeout: float | None = None) -> None:
        self.address = address or None
        self.watchdog_timeout = watchdog_timeout
        """``WatchdogSec`` in seconds (None: no watchdog requested)."""
        self._target = socket_address(address) if address else None
        self._sock: socket.socket | None = None
        self.sent = 0
        self.errors = 0
        if address and self._target is None:
            log.warning("sd_notify_socket_unsupported", notify_socket=address)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, unset_environment: bool = False
    ) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET``; ``unset_environment`` hides it from children."""
        source = os.environ if env is None else env
        notifier = cls(source.get("NOTIFY_SOCKET") or None, watchdog_timeout_from_env(source))
        if unset_environment and env is None:
            for key in _ENV_KEYS:
                os.environ.pop(key, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self._target is not None

    @property
    def watchdog_interval(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half of ``WatchdogSec`` (None: no watchdog)."""
        return None if self.watchdog_timeout is None else self.watchdog_timeout / 2

    def notify(self, message: str | None = None, /, **fields: object) -> bool:
        """Send ``message`` (raw ``KEY=VALUE`` lines) and/or ``fields`` as one datagram."""
        parts = [message] if message else []
        parts += [f"{key}={value}" for key, value in fields.items()]
        if not parts or self._target is None:
            return False
        payload = "\n".join(parts).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self._target)
        except OSError as err:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning("sd_notify_failed", error=str(err), errors=self.errors)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: startup (or a reload) is complete."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=_one_line(status))

    def status(self, text: str) -> bool:
        """``STATUS=``: one line shown by ``systemctl status``."""
        return self.notify(STATUS=_one_line(text))

    def stopping(self) -> bool:
        return self.notify(STOPPING=1)

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (systemd >= 253 requires it for reloads)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def watchdog_loop(
    notifier: Notifier,
    interval: float | None = None,
    healthy: Callable[[], bool] | None = None,
) -> None:
    """Send ``WATCHDOG=1`` every ``interval`` (default half of ``WatchdogSec``) until cancelled.

    It runs on the event loop, so a blocked loop stops the pings. With ``healthy``, a ping
    is skipped while it returns False (systemd then restarts a service that stays unhealthy).
    Returns at once when systemd asked for no watchdog.
    """
    period = interval if interval is not None else notifier.watchdog_interval
    if period is None or period <= 0 or not notifier.enabled:
        return
    log.info("sd_watchdog_started", interval_s=period)
    while True:
        if healthy is None or healthy():
            notifier.watchdog()
        else:
            log.warning("sd_watchdog_withheld")
        await asyncio.sleep(period)
