"""structlog set-up: JSON lines on stdout, readable console output on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog

from .escape import clean, clean_obj

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _text(obj: object) -> str:
    return clean(str(obj))


def _orjson_dumps(obj: object, default: object = None) -> str:
    """One log line; names and messages from outside that are not valid UTF-8 (file names
    with undecodable bytes) are escaped, never a reason to lose the line."""
    try:
        return orjson.dumps(obj, default=_text).decode()
    except TypeError:
        return orjson.dumps(clean_obj(obj), default=_text).decode()


def json_for(log_format: str) -> bool | None:
    """``service.log_format`` -> the ``json`` argument of :func:`configure_logging`
    (``auto`` is None: JSON unless stdout is a terminal)."""
    return {"json": True, "console": False}.get(log_format)


def configure_logging(
    level: str = "info", *, json: bool | None = None, file: TextIO | None = None
) -> None:
    """Configure structlog once per process. ``json=None`` picks by ``isatty``; lines go to
    ``file`` (default stdout; ``scan`` keeps stdout for its output and logs to stderr)."""
    out = file if file is not None else sys.stdout
    if json is None:
        json = not out.isatty()
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
