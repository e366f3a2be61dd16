"""``kloros-stream``: run, check-config, questions, scan; claim, answer, block, release,
tail (:mod:`.cli_consumers`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import structlog

from .cli_consumers import add_commands as add_consumer_commands
from .config import Config, ConfigError, effective_settings, load_config, missing_paths
from .core.curiosity import CuriosityCore
from .feed import read_feed
from .logs import configure_logging, json_for

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_DEADLINE_S = 4.0


def _run_loop(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine on uvloop when it is installed, else on the default asyncio loop."""
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

    async def main() -> None:
        await Service(config, on_stop=_arm_exit_deadline).run()

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


def _exit_quietly_on_early_signals() -> None:
    """Until the service installs its own handlers, SIGTERM/SIGINT end the start-up
    cleanly (nothing has been written yet) instead of with a signal's exit status."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(EXIT_OK)

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


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_questions(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    configure_logging("error")
    core = CuriosityCore()
    core.load(read_feed(config.feed.path).questions.values(), 0.0)
    ranked = core.ranked(include_resolved=args.all)
    if args.top is not None:
        ranked = ranked[: args.top]
    if args.json:
        for q in ranked:
            print(orjson.dumps(q.model_dump(mode="json")).decode())
        return EXIT_OK
    if not ranked:
        print(f"no {'' if args.all else 'open '}questions in {config.feed.path}")
        return EXIT_OK
    print(f"{'PRIORITY':>8}  {'STATUS':<9} {'SEEN':>5}  {'GAP TYPE':<18} QUESTION")
    for q in ranked:
        print(f"{q.priority:8.2f}  {q.status.value:<9} {q.metadata.get('occurrences', 1):>5}  "
              f"{_clip(q.metadata.get('gap_type', '?'), 18):<18} {_clip(q.question, 110)}")
    return EXIT_OK


def cmd_scan(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    configure_logging("error", json=True)
    from .service import scan

    signals, problems = _run_loop(lambda: scan(config))
    for name, problem in sorted(problems.items()):
        print(f"kloros-stream: {name}: {problem}", file=sys.stderr)
    gaps = [s for s in signals if not s.resolved]
    if args.json:
        for s in gaps:
            print(orjson.dumps(s.model_dump(mode="json")).decode())
        return EXIT_OK
    if not gaps:
        print("no gaps found")
    for s in gaps:
        print(f"{s.monitor:<21} {s.gap_type:<18} {_clip(s.gap_name, 60):<60} "
              f"{_clip(s.facts.get('gap_reason', ''), 80)}")
    return EXIT_OK


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
    q.add_argument("--top", type=int, default=None, help="only the N highest")
    q.add_argument("--json", action="store_true", help="JSON lines")
    q.add_argument("--all", action="store_true", help="include resolved questions")
    s = add("scan", cmd_scan, "one-shot initial scan of every enabled monitor; prints the gaps")
    s.add_argument("--json", action="store_true", help="JSON lines")
    add_consumer_commands(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is cmd_run:
        _exit_quietly_on_early_signals()
    return args.func(args)
