"""``kloros-stream claim | answer | block | release | tail``: a consumer at the terminal.

Each command reads the config (``--config``) for the running service's address and token
and talks to its HTTP endpoints. Exit status: 0 done (``claim`` also when nothing was
ready), 1 the service refused (the message says why) or cannot be reached, 2 config error.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import orjson

from .config import Config, ConfigError, load_config
from .token import TokenFileError, load_token

EXIT_OK, EXIT_REFUSED, EXIT_CONFIG = 0, 1, 2
TIMEOUT_S = 10.0
RECONNECT_S = 1.0
COLOURS = {"ready": "33", "in_progress": "36", "answered": "32", "blocked": "35",
           "resolved": "2"}


class ServiceError(Exception):
    """The service refused or could not be reached; the message is for the user."""


class Client:
    """The running service's HTTP endpoint, from a config."""

    def __init__(self, config: Config) -> None:
        host = config.http.host
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        if ":" in host:
            host = f"[{host}]"
        if config.http.port == 0:
            raise ServiceError("http.port is 0 (any free port): set a port to reach the "
                               "service from the command line")
        self.base = f"http://{host}:{config.http.port}"
        self.token = load_token(config.http.token_file)

    def _request(self, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None) -> urllib.request.Request:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else orjson.dumps(body),
                                     headers=headers or {})
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if self.token is not None:
            req.add_header("Authorization", f"Bearer {self.token}")
        return req

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The JSON answer, or None for 204; raises :class:`ServiceError`."""
        try:
            with urllib.request.urlopen(self._request("POST", path, body),
                                        timeout=TIMEOUT_S) as resp:
                data = resp.read()
        except urllib.error.HTTPError as err:
            raise ServiceError(f"{err.code}: {_message(err.read())}") from None
        except OSError as err:
            raise ServiceError(f"cannot reach the service at {self.base}: "
                               f"{getattr(err, 'reason', err)}") from None
        return orjson.loads(data) if data else None

    def events(self, last_id: str | None = None) -> Iterator[tuple[str, str, str]]:
        """(event, id, data) from the stream; reconnects with the last id until interrupted."""
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                with urllib.request.urlopen(self._request("GET", "/questions/stream",
                                                          headers=headers)) as resp:
                    for event, ev_id, data in _parse(resp):
                        if ev_id:
                            last_id = ev_id
                        yield event, ev_id, data
            except urllib.error.HTTPError as err:
                raise ServiceError(f"{err.code}: {_message(err.read())}") from None
            except OSError as err:
                print(f"kloros-stream: stream interrupted ({getattr(err, 'reason', err)}); "
                      "reconnecting", file=sys.stderr)
            time.sleep(RECONNECT_S)


def _message(raw: bytes) -> str:
    try:
        return str(orjson.loads(raw)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return raw.decode("utf-8", "replace")[:200]


def _parse(resp: Any) -> Iterator[tuple[str, str, str]]:
    """Server-Sent Events from an HTTP response: (event, id, data); comments skipped.

    Reads with ``read1`` (what has arrived), not line iteration: http.client fills its
    whole buffer across chunks before returning a line, which would hold events back."""
    event, ev_id, data = "message", "", []
    pending = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if not line:
                if data:
                    yield event, ev_id, "\n".join(data)
                event, ev_id, data = "message", "", []
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                event = value
            elif key == "id":
                ev_id = value
            elif key == "data":
                data.append(value)


def default_consumer() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _line(q: dict[str, Any], colour: bool) -> str:
    meta = q.get("metadata", {})
    status = str(q.get("status", "?"))
    when = str(q.get("updated_at", ""))
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(when).astimezone().strftime("%H:%M:%S")
    shown = f"{status:<11}"
    if colour:
        shown = f"\033[{COLOURS.get(status, '0')}m{shown}\033[0m"
    who = meta.get("claim", {}).get("consumer", "") if isinstance(meta.get("claim"), dict) \
        else ""
    extra = f" [{who}]" if who else ""
    return (f"{when} {shown} {float(q.get('priority', 0)):6.2f} "
            f"{meta.get('gap_type', '?'):<18} {q.get('id', '?')}{extra}  {q.get('question', '')}")


def _run(args: argparse.Namespace, action: Callable[[Client], int]) -> int:
    try:
        config = load_config(args.config)
        return action(Client(config))
    except (ConfigError, TokenFileError) as err:
        print(f"kloros-stream: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except ServiceError as err:
        print(f"kloros-stream: {err}", file=sys.stderr)
        return EXIT_REFUSED


def _print(q: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(q).decode())
    else:
        print(_line(q, sys.stdout.isatty()))


def cmd_claim(args: argparse.Namespace) -> int:
    def act(client: Client) -> int:
        body: dict[str, Any] = {"consumer": args.consumer or default_consumer(),
                                "lease_s": args.lease}
        if args.gap_type:
            body["gap_types"] = args.gap_type
        q = client.post("/questions/claim", body)
        if q is None:
            if not args.json:
                print("no ready question to claim")
            return EXIT_OK
        if args.json:
            _print(q, True)
            return EXIT_OK
        print(f"claimed {q['id']} until {q['metadata']['claim']['lease_until']}")
        print(f"  {q['question']}")
        for line in q.get("evidence", []):
            print(f"  - {line}")
        return EXIT_OK

    return _run(args, act)


def _status(args: argparse.Namespace, status: str, note: str = "") -> int:
    def act(client: Client) -> int:
        body = {"status": status, "note": note}
        if args.consumer:
            body["consumer"] = args.consumer
        q = client.post(f"/questions/{args.id}/status", body)
        assert q is not None
        _print(q, args.json)
        return EXIT_OK

    return _run(args, act)


def cmd_answer(args: argparse.Namespace) -> int:
    return _status(args, "answered", args.text)


def cmd_block(args: argparse.Namespace) -> int:
    return _status(args, "blocked", args.reason)


def cmd_release(args: argparse.Namespace) -> int:
    return _status(args, "ready")


def cmd_tail(args: argparse.Namespace) -> int:
    def act(client: Client) -> int:
        colour = sys.stdout.isatty()
        try:
            for event, _, data in client.events():
                if event == "overflow":
                    print(f"kloros-stream: {data}; catching up", file=sys.stderr)
                    continue
                if args.json:
                    print(data, flush=True)
                    continue
                print(_line(orjson.loads(data), colour), flush=True)
        except KeyboardInterrupt:
            pass
        return EXIT_OK

    return _run(args, act)


def add_commands(add: Callable[[str, Callable[[argparse.Namespace], int], str],
                               argparse.ArgumentParser]) -> None:
    """Register the consumer commands with the main parser's ``add``."""
    c = add("claim", cmd_claim, "claim the highest-priority ready question (with a lease)")
    c.add_argument("--consumer", default="", help="consumer name (default: user@host)")
    c.add_argument("--lease", type=float, default=300.0, metavar="S",
                   help="lease in seconds (default 300)")
    c.add_argument("--gap-type", action="append", default=[],
                   help="only this gap type (repeatable)")
    c.add_argument("--json", action="store_true", help="the question as JSON")
    for name, func, help_, arg in (
            ("answer", cmd_answer, "mark a question answered", ("text", "the answer or a link")),
            ("block", cmd_block, "mark a question blocked", ("reason", "why it is blocked")),
            ("release", cmd_release, "give a question back (ready)", None)):
        p = add(name, func, help_)
        p.add_argument("id", help="question id")
        if arg is not None:
            p.add_argument(arg[0], help=arg[1])
        p.add_argument("--consumer", default="",
                       help="act as this consumer (checked against the claim's holder)")
        p.add_argument("--json", action="store_true", help="the question as JSON")
    t = add("tail", cmd_tail, "follow the question stream (new, changed, claimed, answered)")
    t.add_argument("--json", action="store_true", help="one question JSON per line")
