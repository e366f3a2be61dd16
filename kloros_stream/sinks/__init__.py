"""Sinks: every way out after the core besides the feed (see :mod:`.base`)."""

from __future__ import annotations

import structlog

from ..config import Config
from ..monitors.base import Publisher
from ..supervisor import BackoffPolicy
from .base import QuestionView, Sink, SinkSet
from .files import HistorySink, QuestionFileSink, kloros_feed_sink, snapshot_sink

log = structlog.get_logger("kloros_stream.sinks")

__all__ = ["HistorySink", "QuestionFileSink", "QuestionView", "Sink", "SinkSet",
           "build_sinks", "chembus_sink", "history_sink"]


def history_sink(config: Config) -> HistorySink | None:
    """The ``[history]`` sink, or None when no path is set or it cannot be opened (logged)."""
    if config.history.path is None:
        return None
    try:
        return HistorySink(config.history.path, config.history.max_bytes)
    except OSError as err:
        log.error("history_unavailable", path=str(config.history.path), error=str(err))
        return None


def chembus_sink(config: Config, publisher: Publisher) -> Sink | None:
    """The ``[chembus]`` bridge when enabled (pyzmq is imported only then)."""
    if not config.chembus.enabled:
        return None
    from .chembus import ChemBusSink

    return ChemBusSink(config.chembus, config.service.state_dir, publisher,
                       BackoffPolicy.from_config(config.supervisor))


def build_sinks(config: Config, publisher: Publisher) -> SinkSet:
    """The sinks the configuration asks for, in the order they are called."""
    sinks = SinkSet()
    if (history := history_sink(config)) is not None:
        sinks.add(history)
    if config.feed.snapshot_path is not None:
        sinks.add(snapshot_sink(config.feed.snapshot_path))
    if config.feed.kloros_path is not None:
        sinks.add(kloros_feed_sink(config.feed.kloros_path))
    if (chembus := chembus_sink(config, publisher)) is not None:
        sinks.add(chembus)
    return sinks
