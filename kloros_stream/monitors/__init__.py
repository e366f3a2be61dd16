"""The nine monitors, by their contract names, imported on first use (and plugins)."""

from __future__ import annotations

import importlib

from .base import Monitor

MONITOR_CLASSES: dict[str, str] = {
    "exception": "exception:ExceptionMonitor",
    "integration": "integration:IntegrationMonitor",
    "chaos": "chaos:ChaosMonitor",
    "test": "testresults:TestResultsMonitor",
    "module_discovery": "module_discovery:ModuleDiscoveryMonitor",
    "capability_discovery": "capability_discovery:CapabilityDiscoveryMonitor",
    "exploration": "exploration:ExplorationMonitor",
    "metric_quality": "metric_quality:MetricQualityMonitor",
    "knowledge_discovery": "knowledge_discovery:KnowledgeDiscoveryMonitor",
}


def monitor_class(name: str) -> type[Monitor]:
    """The class implementing monitor ``name``: one of the nine, or a plugin monitor
    (:mod:`kloros_stream.plugins`); KeyError if none."""
    if name not in MONITOR_CLASSES:
        from ..plugins import plugin_monitors

        return plugin_monitors()[name]
    module_name, class_name = MONITOR_CLASSES[name].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)
