"""Third-party monitors: packages register them under the entry point group
``kloros_stream.monitors`` (name = the monitor's name, value = ``module:Class``).

A plugin monitor is a :class:`~kloros_stream.monitors.base.Monitor` subclass whose
``config_model`` (a :class:`~kloros_stream.config.MonitorConfig` subclass) validates its
``[monitors.<name>]`` section; it runs only when that section is in the config. It is
supervised like the nine, and appears in /health and /metrics under its name. A plugin
that cannot be loaded, is not a Monitor, or takes a built-in name is logged and skipped.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

import structlog

GROUP = "kloros_stream.monitors"

log = structlog.get_logger(__name__)


@functools.cache
def plugin_monitors() -> dict[str, Any]:
    """Name -> monitor class of every installed plugin that loads (once per process)."""
    from .config import MONITOR_NAMES, MonitorConfig
    from .monitors.base import Monitor

    found: dict[str, Any] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in MONITOR_NAMES or ep.name in found:
            log.error("plugin_skipped", plugin=ep.name, value=ep.value,
                      reason="the name is taken by another monitor")
            continue
        try:
            cls = ep.load()
        except Exception as err:  # a broken plugin must not take the service down
            log.error("plugin_skipped", plugin=ep.name, value=ep.value, reason=repr(err))
            continue
        if not (isinstance(cls, type) and issubclass(cls, Monitor)
                and issubclass(cls.config_model, MonitorConfig)):
            log.error("plugin_skipped", plugin=ep.name, value=ep.value,
                      reason="not a Monitor subclass with a MonitorConfig config_model")
            continue
        found[ep.name] = cls
    return found
