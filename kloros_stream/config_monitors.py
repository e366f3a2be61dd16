"""The ``[monitors.*]`` sections: one model per built-in monitor, and their container.

A plugin monitor's section is validated by the plugin's own
:class:`MonitorConfig` subclass and kept in :class:`MonitorsConfig` beside the nine.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PrivateAttr

from .config_sections import Section

MONITOR_NAMES: tuple[str, ...] = (
    "exception",
    "integration",
    "chaos",
    "test",
    "module_discovery",
    "capability_discovery",
    "exploration",
    "metric_quality",
    "knowledge_discovery",
)


class MonitorConfig(Section):
    enabled: bool = True


class ExceptionMonitorConfig(MonitorConfig):
    journal: bool = True
    journalctl: str = "journalctl"
    namespace: str = ""
    units: list[str] = Field(default_factory=lambda: ["kloros-*"])
    identifiers: list[str] = Field(default_factory=list)
    log_files: list[Path] = Field(default_factory=list)
    flush_after_s: float = Field(default=0.5, gt=0)
    """An incomplete traceback is flushed after this quiet period."""
    dedup_size: int = Field(default=4096, ge=16)
    initial_lines: int = Field(default=10_000, ge=0)
    """Journal entries read back on a first start (no saved cursor) and by ``scan``."""


class IntegrationMonitorConfig(MonitorConfig):
    roots: list[Path] = Field(default_factory=lambda: [Path("src")])
    exclude: list[str] = Field(
        default_factory=lambda: [".git", ".venv", "venv", "__pycache__", "node_modules"]
    )
    max_file_bytes: int = Field(default=2_000_000, ge=1)
    emit_calls: list[str] = Field(default_factory=lambda: ["emit", "publish"])
    subscribe_calls: list[str] = Field(default_factory=lambda: ["ChemSub", "UMNSub", "subscribe"])
    subscriber_suffixes: list[str] = Field(default_factory=lambda: ["Sub", "Subscriber"])
    """Classes named ``*Sub``/``*Subscriber`` constructed with a topic subscribe too."""
    prefix_match: bool = True
    """Subscriptions match topics by prefix, as ZeroMQ SUB sockets do."""


class ChaosMonitorConfig(MonitorConfig):
    history_file: Path = Path("var/chaos_history.jsonl")
    max_scenarios: int = Field(default=1000, ge=1)
    recovery_runs: int = Field(default=5, ge=1)
    recovery_rate: float = Field(default=0.8, ge=0, le=1)


class TestMonitorConfig(MonitorConfig):
    results_dir: Path = Path("var/test-results")
    group_threshold: int = Field(default=3, ge=0)
    """This many failing tests with one cause are one question (0: never group)."""


class ModuleDiscoveryConfig(MonitorConfig):
    roots: list[Path] = Field(default_factory=lambda: [Path("src")])
    exclude: list[str] = Field(
        default_factory=lambda: [".git", ".venv", "venv", "__pycache__", "node_modules"]
    )


class CapabilityDiscoveryConfig(MonitorConfig):
    required_executables: list[str] = Field(default_factory=list)
    required_modules: list[str] = Field(default_factory=list)
    scan_imports: bool = True
    python: str = ""
    """The watched system's interpreter (its sys.path and syntax); "" = the service's own."""


class ExplorationConfig(MonitorConfig):
    nvidia_smi: str = "nvidia-smi"
    interval_s: float = Field(default=300, gt=0)
    idle_threshold_pct: float = Field(default=10, ge=0, le=100)
    idle_window_s: float = Field(default=1800, gt=0)


class MetricQualityConfig(MonitorConfig):
    experiments_file: Path = Path("var/curiosity_experiments.jsonl")


class KnowledgeDiscoveryConfig(MonitorConfig):
    docs_dirs: list[Path] = Field(default_factory=lambda: [Path("docs")])
    index_file: Path = Path("var/knowledge_index.json")
    stale_after_days: float = Field(default=180, gt=0)


class MonitorsConfig(Section):
    exception: ExceptionMonitorConfig = Field(default_factory=ExceptionMonitorConfig)
    integration: IntegrationMonitorConfig = Field(default_factory=IntegrationMonitorConfig)
    chaos: ChaosMonitorConfig = Field(default_factory=ChaosMonitorConfig)
    test: TestMonitorConfig = Field(default_factory=TestMonitorConfig)
    module_discovery: ModuleDiscoveryConfig = Field(default_factory=ModuleDiscoveryConfig)
    capability_discovery: CapabilityDiscoveryConfig = Field(
        default_factory=CapabilityDiscoveryConfig
    )
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    metric_quality: MetricQualityConfig = Field(default_factory=MetricQualityConfig)
    knowledge_discovery: KnowledgeDiscoveryConfig = Field(default_factory=KnowledgeDiscoveryConfig)

    _plugins: dict[str, MonitorConfig] = PrivateAttr(default_factory=dict)
    """``[monitors.<name>]`` sections of plugin monitors, each validated by its own model."""

    def get(self, name: str) -> MonitorConfig:
        if name in MONITOR_NAMES:
            return getattr(self, name)
        return self._plugins[name]

    @property
    def plugins(self) -> dict[str, MonitorConfig]:
        return dict(self._plugins)

    def names(self) -> tuple[str, ...]:
        """The nine monitors, then the configured plugin monitors (sorted)."""
        return MONITOR_NAMES + tuple(sorted(self._plugins))
