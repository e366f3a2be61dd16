"""``kloros-stream``: run, check-config, questions, scan; claim, answer, block, release,
tail (:mod:`.cli_consumers`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
import structlog

from . import console
from .cli_consumers import add_commands as add_consumer_commands
from .config import Config, ConfigError, effective_settings, load_config, missing_paths
from .logs import configure_logging, json_for

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_SCAN_FAILED = 1
EXIT_DEADLINE_S = 4.0


def _run_loop(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine on uvloop when it is installed, else on the default asyncio loop."""
    import asyncio  # here: the commands that need no loop start faster without it

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def _load(args: argparse.Namespace) -> Config | None:
    try:
        return load_config(args.config)
    except ConfigError as err:
        print(f"kloros-stream: configuration error: {err}", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.service.log_level, json=json_for(config.service.log_format))
    from .service import Service, StartupError

    log = structlog.get_logger("kloros_stream")
    log.info("service_starting", config=str(config.source or "<built-in defaults>"))

    if _EARLY_STOP.is_set():
        log.info("service_stopped_early", reason="stop signal during start-up")
        return EXIT_OK

    async def main() -> None:
        await Service(config, on_stop=_arm_exit_deadline, stop_requested=_EARLY_STOP.is_set).run()

    try:
        _run_loop(main)
    except StartupError as err:
        log.error("service_cannot_start", reason=str(err))
        print(f"kloros-stream: cannot start: {err}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _arm_exit_deadline(seconds: float = EXIT_DEADLINE_S) -> None:
    """Called when a stop is requested: the contract wants an exit within 5 s. Shutdown
    drains the bus and saves checkpoints well within that; a worker thread busy with an
    initial scan can't be cancelled, though, and the interpreter would wait for it. A
    daemon timer ends the process at the deadline if it is still there (a normal exit
    ends the timer with it). Lines already written stay; checkpoints are at-least-once,
    so what was in flight is redone on the next start."""

    def force_exit() -> None:
        busy = [t.name for t in threading.enumerate()
                if t is not threading.main_thread() and not t.daemon]
        structlog.get_logger("kloros_stream").warning("exit_forced", waiting_threads=busy)
        sys.stdout.flush()
        os._exit(EXIT_OK)

    timer = threading.Timer(seconds, force_exit)
    timer.daemon = True
    timer.start()


_EARLY_STOP = threading.Event()
"""Set by SIGTERM/SIGINT before the service's own handlers are in place."""


def _exit_quietly_on_early_signals() -> None:
    """Until the service installs its own handlers, SIGTERM/SIGINT end the start-up
    cleanly (exit 0, nothing started) instead of with a signal's exit status. The handler
    only sets a flag that ``run`` checks before starting and once its handlers are in
    place: an exception raised wherever the signal lands (a weakref callback in the import
    system, say) can be swallowed, and the service would run on."""

    def stop(signum: int, frame: object) -> None:
        _EARLY_STOP.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    print(f"# {config.source or 'built-in defaults'}: valid")
    for warning in missing_paths(config):
        print(f"kloros-stream: warning: {warning}", file=sys.stderr)
    print(orjson.dumps(effective_settings(config), option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _feed_lines_of(path: Path, qid: str) -> list[dict[str, Any]]:
    """Every feed line of one question, oldest first (a full read: ``--explain`` only)."""
    needle = qid.encode()
    lines: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError), path.open("rb") as feed:
        for raw in feed:
            if needle not in raw:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                data = orjson.loads(raw)
                if isinstance(data, dict) and data.get("id") == qid:
                    lines.append(data)
    return lines


def cmd_questions(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    configure_logging("error")
    if args.explain:
        lines = _feed_lines_of(config.feed.path, args.explain)
        if not lines:
            print(f"kloros-stream: no question {args.explain!r} in {config.feed.path}",
                  file=sys.stderr)
            return 1
        print(console.explain(lines))
        return EXIT_OK
    from .core.store import Selection
    from .store.view import FeedView

    view = FeedView(config.feed.path)  # the index (read-only), else the whole feed
    try:
        sel = Selection(status="all" if args.all else "open", limit=args.top)
        raw = [j for j in map(view.json, view.select(sel)) if j is not None]
    finally:
        view.close()
    if args.json and not args.json_array:
        sys.stdout.write("".join(f"{j.decode()}\n" for j in raw))
        return EXIT_OK
    ranked = [orjson.loads(j) for j in raw]
    if args.json_array:
        console.print_json(ranked, array=True)
        return EXIT_OK
    if not ranked:
        print(f"no {'' if args.all else 'open '}questions in {config.feed.path}")
        return EXIT_OK
    width = console.cell_width(sys.stdout, len(console.QUESTION_HEADER) - 8, wide=args.wide)
    print(console.QUESTION_HEADER)
    print("\n".join(console.question_rows(ranked, width)))
    return EXIT_OK


def cmd_scan(args: argparse.Namespace) -> int:
    """Exit 0 when every enabled monitor scanned (or is honestly unavailable), 1 when one
    failed or timed out (reason on stderr). Gaps print in a stable order; logs go to stderr
    so ``--json`` stdout holds JSON lines only; a closed pipe (``| head``) ends quietly."""
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    configure_logging("error", json=True, file=sys.stderr)
    from .service import scan

    bar = console.ScanBar.for_stream(sys.stderr)
    try:
        signals, problems = _run_loop(
            lambda: scan(config, on_progress=bar.update if bar else None))
    finally:
        if bar is not None:
            bar.close()
    for name, problem in sorted(problems.items()):
        print(f"kloros-stream: {name}: {problem}", file=sys.stderr)
    failed = any(not p.startswith("unavailable") for p in problems.values())
    gaps = sorted((s for s in signals if not s.resolved),
                  key=lambda s: (s.monitor, s.gap_type, s.gap_name))
    if args.json:
        lines = [orjson.dumps(s.model_dump(mode="json")).decode() for s in gaps]
    elif gaps:
        rows = [(s.monitor, s.gap_type, s.gap_name, str(s.facts.get("gap_reason", "")))
                for s in gaps]
        lines = list(console.gap_table(rows, sys.stdout))
    else:
        lines = ["no gaps found"]
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away: silence the interpreter's own flush at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_SCAN_FAILED if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kloros-stream",
        description="Event-driven self-observation: capability gaps become questions.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="config file (default: $KLOROS_STREAM_CONFIG, "
                                         "./config.toml, built-in defaults)")
        p.set_defaults(func=func)
        return p

    add("run", cmd_run, "run the service in the foreground")
    add("check-config", cmd_check_config, "validate the config and print the effective settings")
    q = add("questions", cmd_questions, "print the open questions, highest priority first")
    q.add_argument("--top", type=_positive_int, default=None, help="only the N highest")
    q.add_argument("--json", action="store_true",
                   help="JSON lines: one question object per line (for jq -c, streaming)")
    q.add_argument("--json-array", action="store_true",
                   help="one JSON array (for python3 -m json.tool and other readers)")
    q.add_argument("--all", action="store_true", help="include resolved questions")
    q.add_argument("--wide", action="store_true",
                   help="never cut the question (piped output is never cut either)")
    q.add_argument("--explain", metavar="ID",
                   help="one question whole: evidence, the history of its feed lines, and "
                        "what would resolve it")
    s = add("scan", cmd_scan, "one-shot initial scan of every enabled monitor; prints the gaps")
    s.add_argument("--json", action="store_true", help="JSON lines")
    add_consumer_commands(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is cmd_run:
        _exit_quietly_on_early_signals()
    return args.func(args)
