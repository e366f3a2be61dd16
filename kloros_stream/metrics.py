"""Prometheus metrics: read from the components' own counters at scrape time.

Each component (bus, core, feed, monitors) keeps plain counters; :class:`ServiceCollector`
turns them into metric families when ``/metrics`` is scraped, so the hot paths never
touch a metrics library. Only the latency histogram is observed directly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .service import Service

PREFIX = "kloros_stream"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
STATES = ("starting", "running", "restarting", "failed", "unavailable", "disabled")


class ServiceCollector(Collector):
    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        svc = self.service
        bus = svc.bus
        signals = CounterMetricFamily(f"{PREFIX}_signals", "Signals published, by monitor.",
                                      labels=["monitor"])
        delivered = CounterMetricFamily(f"{PREFIX}_signals_delivered",
                                        "Signals taken off the bus by the core, by monitor.",
                                        labels=["monitor"])
        dropped_by = CounterMetricFamily(f"{PREFIX}_bus_dropped_by_monitor",
                                         "Signals dropped (oldest first) on a full bus.",
                                         labels=["monitor"])
        for name in svc.monitor_names:
            signals.add_metric([name], bus.published.get(name, 0))
            delivered.add_metric([name], bus.delivered.get(name, 0))
            dropped_by.add_metric([name], bus.dropped.get(name, 0))
        yield signals
        yield delivered
        yield dropped_by
        yield CounterMetricFamily(f"{PREFIX}_bus_dropped", "Signals dropped on a full bus.",
                                  value=bus.total_dropped)
        yield GaugeMetricFamily(f"{PREFIX}_bus_depth", "Signals waiting on the bus.",
                                value=bus.depth)
        yield GaugeMetricFamily(f"{PREFIX}_bus_maxsize", "Bus capacity.", value=bus.maxsize)

        core = svc.core
        known: Counter[str] = Counter()
        open_: Counter[str] = Counter()
        for (gap_type, is_open), n in core.store.counts().items():
            known[gap_type] += n
            if is_open:
                open_[gap_type] += n
        questions = CounterMetricFamily(f"{PREFIX}_questions",
                                        "Distinct questions in the feed, by gap_type.",
                                        labels=["gap_type"])
        open_family = GaugeMetricFamily(f"{PREFIX}_questions_open",
                                        "Open questions, by gap_type.", labels=["gap_type"])
        for gap_type in sorted(known):
            questions.add_metric([gap_type], known[gap_type])
            open_family.add_metric([gap_type], open_[gap_type])
        yield questions
        yield open_family
        resolved = CounterMetricFamily(f"{PREFIX}_questions_resolved",
                                       "Questions resolved since start, by gap_type.",
                                       labels=["gap_type"])
        for gap_type, n in sorted(core.resolved.items()):
            resolved.add_metric([gap_type], n)
        yield resolved
        yield CounterMetricFamily(f"{PREFIX}_signals_suppressed",
                                  "Gaps ignored by [curiosity] suppress.", value=core.suppressed)
        yield CounterMetricFamily(f"{PREFIX}_feed_lines", "Lines appended to the feed.",
                                  value=svc.feed.lines_written)
        yield CounterMetricFamily(f"{PREFIX}_feed_compactions", "Feed compactions.",
                                  value=svc.feed.compactions)
        yield CounterMetricFamily(f"{PREFIX}_feed_write_errors",
                                  "Feed writes or fsyncs that failed (lines kept, retried).",
                                  value=svc.feed_write_errors)
        yield GaugeMetricFamily(f"{PREFIX}_consumer_up",
                                "1 while the CuriosityCore consumer runs.",
                                value=1.0 if svc.consumer_running else 0.0)
        yield CounterMetricFamily(f"{PREFIX}_consumer_errors",
                                  "Signals or batches the consumer skipped after an error.",
                                  value=svc.consumer_errors)

        restarts = CounterMetricFamily(f"{PREFIX}_monitor_restarts",
                                       "Monitor restarts after a crash.", labels=["monitor"])
        state = GaugeMetricFamily(f"{PREFIX}_monitor_state",
                                  "1 for the monitor's current state.",
                                  labels=["monitor", "state"])
        events = CounterMetricFamily(f"{PREFIX}_monitor_events",
                                     "Monitor-specific event counters.",
                                     labels=["monitor", "event"])
        for name in svc.monitor_names:
            status = svc.statuses[name]
            restarts.add_metric([name], status.restarts)
            for s in STATES:
                state.add_metric([name, s], 1.0 if status.state == s else 0.0)
            for event, n in sorted(status.counters.items()):
                events.add_metric([name, event], n)
        yield restarts
        yield state
        yield events
        yield from _source_metrics(svc)
        yield from sink_metrics(svc)


def _source_metrics(svc: Service) -> Iterator[Metric]:
    """The source indexes' counters, one route for every source (watcher overflows too)."""
    totals = svc.sources.totals()
    yield CounterMetricFamily(f"{PREFIX}_files_parsed",
                              "Source files parsed (each file once per change).",
                              value=totals.get("files_parsed", 0))
    events = CounterMetricFamily(f"{PREFIX}_source_events",
                                 "Source index counters (reuse, skips, watcher overflows).",
                                 labels=["source", "event"])
    gauges = GaugeMetricFamily(f"{PREFIX}_source_size",
                               "Files known and directories watched by the source indexes.",
                               labels=["source", "what"])
    for name, n in sorted(totals.items()):
        if name in ("files", "watched_dirs"):
            gauges.add_metric(["index", name], n)
        elif name != "files_parsed":
            events.add_metric(["index", name], n)
    yield events
    yield gauges


def sink_metrics(svc: Service) -> Iterator[Metric]:
    """Each sink's own counters, errors, state and gauges (``kloros_stream_sink_*``)."""
    events = CounterMetricFamily(f"{PREFIX}_sink_events", "Sink-specific event counters.",
                                 labels=["sink", "event"])
    errors = CounterMetricFamily(f"{PREFIX}_sink_errors",
                                 "Sink calls that raised (isolated from the core and feed).",
                                 labels=["sink"])
    state = GaugeMetricFamily(f"{PREFIX}_sink_state", "1 for the sink's current state.",
                              labels=["sink", "state"])
    gauges = GaugeMetricFamily(f"{PREFIX}_sink_gauge", "Sink-specific levels (queue depths).",
                               labels=["sink", "name"])
    for sink in svc.sinks:
        for event, n in sorted(sink.counters.items()):
            events.add_metric([sink.name, event], n)
        errors.add_metric([sink.name], sink.errors)
        state.add_metric([sink.name, sink.state], 1.0)
        for name, value in sorted(sink.gauges().items()):
            gauges.add_metric([sink.name, name], value)
    yield events
    yield errors
    yield state
    yield gauges


def build_registry(service: Service) -> tuple[CollectorRegistry, Histogram]:
    """A registry with the service's metrics, process metrics and the latency histogram."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    registry.register(ServiceCollector(service))
    latency = Histogram(
        f"{PREFIX}_gap_latency_seconds",
        "Time from the source event to the question's feed line.",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return registry, latency
