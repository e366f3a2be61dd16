"""Configuration: the contract's ``config.toml``, validated with pydantic.

Every key has a default; unknown keys and bad values are rejected with a message that
names the key. Relative paths resolve against the directory of the config file (or the
working directory when the built-in defaults are used); ``~`` expands.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

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

ENV_VAR = "KLOROS_STREAM_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the problem."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServiceConfig(Section):
    state_dir: Path = Path("var/state")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    """``auto``: readable console lines on a terminal, JSON lines otherwise."""
    max_line_bytes: int = Field(default=1_048_576, ge=1024)
    """Lines longer than this (tailed files, journal entries) are skipped and counted."""


class BusConfig(Section):
    maxsize: int = Field(default=10_000, ge=1)


class FeedConfig(Section):
    path: Path = Path("var/curiosity_feed.jsonl")
    snapshot_path: Path | None = None
    kloros_path: Path | None = None
    """KLoROS-format feed file: open questions with exactly KLoROS's CuriosityQuestion fields."""
    compact_bytes: int = Field(default=67_108_864, ge=4096)
    counter_flush_s: float = Field(default=60.0, gt=0)
    """A question whose only change is its counters reaches the feed at most this often."""
    retention_days: float = Field(default=30.0, ge=0)
    """Resolved questions older than this leave the views and, at compaction, move to the
    archive file beside the feed; 0 keeps them forever."""

    @field_validator("snapshot_path", "kloros_path", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v in ("", None) else v


UMN_ENDPOINT = r"^(tcp|ipc|inproc)://\S+$"


class ChemBusConfig(Section):
    """The KLoROS ZeroMQ bus (UMN). Endpoints default to $KLR_UMN_XSUB / $KLR_UMN_XPUB, as
    in KLoROS's umn_bus.py, else KLoROS's own defaults; a key set in the file wins."""

    enabled: bool = False
    xsub: str = Field(default_factory=lambda: os.environ.get("KLR_UMN_XSUB")
                      or "tcp://127.0.0.1:5558", pattern=UMN_ENDPOINT)
    xpub: str = Field(default_factory=lambda: os.environ.get("KLR_UMN_XPUB")
                      or "tcp://127.0.0.1:5559", pattern=UMN_ENDPOINT)
    publish_gaps: bool = True
    publish_questions: bool = True
    ingest_gaps: bool = True
    value_threshold: float = Field(default=1.5, ge=0)


class CuriosityConfig(Section):
    suppress: list[str] = Field(default_factory=list)


class HistoryConfig(Section):
    path: Path | None = None
    max_bytes: int = Field(default=104_857_600, ge=4096)

    @field_validator("path", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v in ("", None) else v


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    token_file: Path | None = None
    """If set, mutating endpoints need ``Authorization: Bearer <the file's content>``."""
    idle_timeout_s: float = Field(default=15.0, gt=0)
    """A connection that sends no complete request for this long (half-sent headers, or
    idle between keep-alive requests) is closed."""

    @field_validator("token_file", mode="before")
    @classmethod
    def _empty_token_is_none(cls, v: Any) -> Any:
        return None if v in ("", None) else v

    @model_validator(mode="after")
    def _token_off_loopback(self) -> HttpConfig:
        if self.token_file is None and not is_loopback(self.host):
            raise ValueError(f"host {self.host!r} is not a loopback address: set "
                             "http.token_file so that only token holders can change questions")
        return self


class SupervisorConfig(Section):
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    stable_after_s: float = Field(default=60.0, gt=0)
    """A monitor that ran this long without crashing starts its backoff afresh."""
    breaker_restarts: int = Field(default=5, ge=1)
    breaker_window_s: float = Field(default=60.0, gt=0)
    """More than ``breaker_restarts`` crashes within this window: state ``failed``."""
    unavailable_retry_s: float = Field(default=300.0, gt=0)
    breaker_retry_s: float = Field(default=60.0, gt=0)
    """An open breaker tries one restart (half-open) after this long, doubling per failed
    try up to ``breaker_retry_max_s``; a try that runs ``stable_after_s`` closes it."""
    breaker_retry_max_s: float = Field(default=1800.0, gt=0)


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
    subscribe_calls: list[str] = Field(
        default_factory=lambda: ["ChemSub", "UMNSub", "subscribe"]
    )
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
    knowledge_discovery: KnowledgeDiscoveryConfig = Field(
        default_factory=KnowledgeDiscoveryConfig
    )

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


class ClusterConfig(Section):
    """Distributed mode on NATS JetStream (``docs/distributed.md``); role "" = embedded."""

    role: Literal["", "edge", "core", "both"] = ""
    nats_url: str = "nats://127.0.0.1:4222"
    host: str = ""
    """This host's name in questions; "" = the machine's hostname."""
    credentials: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    stream: str = Field(default="KLOROS_GAPS", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    bucket: str = Field(default="kloros_questions", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    buffer_max_signals: int = Field(default=100_000, ge=1)
    """Edge: signals kept on disk while NATS is unreachable; past it the oldest go."""
    ack_wait_s: float = Field(default=30.0, gt=0)
    """Core: an unacknowledged signal is redelivered (to any core) after this long."""
    duplicate_window_s: float = Field(default=600.0, gt=0)
    max_age_days: float = Field(default=7.0, gt=0)

    @field_validator("credentials", "tls_ca", "tls_cert", "tls_key", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v in ("", None) else v


class Config(Section):
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    feed: FeedConfig = Field(default_factory=FeedConfig)
    curiosity: CuriosityConfig = Field(default_factory=CuriosityConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    chembus: ChemBusConfig = Field(default_factory=ChemBusConfig)
    monitors: MonitorsConfig = Field(default_factory=MonitorsConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="before")
    @classmethod
    def _cluster_role_defaults_to_both(cls, data: Any) -> Any:
        """A ``[cluster]`` table without ``role`` means "both"; no table means embedded."""
        section = data.get("cluster") if isinstance(data, dict) else None
        if isinstance(section, dict) and "role" not in section:
            data = {**data, "cluster": {**section, "role": "both"}}
        return data

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file this configuration was read from (None: built-in defaults)."""
        return self._source

    @source.setter
    def source(self, value: Path | None) -> None:
        self._source = value

    def resolved(self, base: Path) -> Config:
        """A copy with every path made absolute against ``base``."""
        return _resolve_paths(self, base)


EXECUTABLE_KEYS = frozenset({"journalctl", "nvidia_smi", "python"})
"""Commands: a bare name is looked up on PATH; a path (``~``, or with a ``/``) resolves
like the path keys."""


def _resolve_paths(model: BaseModel, base: Path) -> Any:
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name in EXECUTABLE_KEYS and isinstance(value, str) and (
            "/" in value or value.startswith("~")
        ):
            updates[name] = str(_absolute(Path(value), base))
        elif isinstance(value, BaseModel):
            updates[name] = _resolve_paths(value, base)
        elif isinstance(value, Path):
            updates[name] = _absolute(value, base)
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            updates[name] = [_absolute(v, base) for v in value]
    return model.model_copy(update=updates)


def _absolute(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path)


def find_config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """``--config``, else ``$KLOROS_STREAM_CONFIG``, else ``./config.toml``, else None."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    local = Path("config.toml")
    return local if local.is_file() else None


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the section at ``loc`` accepts (empty if ``loc`` leads nowhere known)."""
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(e["loc"][-1]), _known_keys(e["loc"][:-1]),
                                             n=1, cutoff=0.6)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            lines.append(f"{key}: unknown key{hint}")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def parse_config(data: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Validate a decoded TOML document and resolve its paths against ``base``.

    A ``[monitors.<name>]`` section that is not one of the nine names a plugin monitor
    (entry point group ``kloros_stream.monitors``) and is validated by its model."""
    monitors = data.get("monitors")
    extra: dict[str, Any] = {}
    if isinstance(monitors, dict):
        extra = {k: v for k, v in monitors.items() if k not in MONITOR_NAMES}
        if extra:
            data = {**data, "monitors": {k: v for k, v in monitors.items() if k in MONITOR_NAMES}}
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    cfg = cfg.resolved(base.resolve())
    if extra:
        cfg.monitors._plugins = _plugin_sections(extra, base.resolve())
    cfg.source = source
    return cfg


def _plugin_sections(sections: dict[str, Any], base: Path) -> dict[str, MonitorConfig]:
    from .plugins import plugin_monitors

    plugins = plugin_monitors()
    out: dict[str, MonitorConfig] = {}
    for name, section in sorted(sections.items()):
        cls = plugins.get(name)
        if cls is None:
            near = difflib.get_close_matches(name, MONITOR_NAMES + tuple(plugins), n=1)
            hint = f"did you mean '{near[0]}'?" if near else "no installed plugin has that name"
            raise ConfigError(f"monitors.{name}: unknown key (no such monitor; {hint})")
        try:
            model = cls.config_model.model_validate(section)
        except ValidationError as err:
            raise ConfigError(_plugin_error(name, cls.config_model, err)) from None
        out[name] = _resolve_paths(model, base)
    return out


def _plugin_error(name: str, model: type[BaseModel], err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = f"monitors.{name}." + ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(e["loc"][-1]), list(model.model_fields), n=1)
            lines.append(f"{key}: unknown key" + (f" (did you mean '{near[0]}'?)" if near else ""))
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Find, read and validate the configuration; raises :class:`ConfigError`."""
    path = find_config_path(explicit)
    if path is None:
        return parse_config({}, Path.cwd())
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    return parse_config(data, path.parent, source=path.resolve())


def effective_settings(cfg: Config) -> dict[str, Any]:
    """The settings as plain data, for ``check-config`` (plugin sections included)."""
    data = cfg.model_dump(mode="json")
    for name, section in cfg.monitors.plugins.items():
        data["monitors"][name] = section.model_dump(mode="json")
    return data


def missing_paths(cfg: Config) -> list[str]:
    """Inputs of enabled monitors that do not exist now, as ``key: path`` lines.

    Not an error (a monitor waits for a missing root or file, and reports ``unavailable``
    where that is its nature), but usually a typo worth a warning in ``check-config``.
    """
    missing: list[str] = []
    for name in type(cfg.monitors).model_fields:
        section = cfg.monitors.get(name)
        if not section.enabled:
            continue
        for key in type(section).model_fields:
            value = getattr(section, key)
            paths = value if isinstance(value, list) else [value]
            missing += [f"monitors.{name}.{key}: {p} does not exist" for p in paths
                        if isinstance(p, Path) and not p.exists()]
    return missing
