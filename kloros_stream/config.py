"""Configuration: the contract's ``config.toml``, validated with pydantic.

Every key has a default; unknown keys and bad values are rejected with a message that
names the key. Relative paths resolve against the directory of the config file (or the
working directory when the built-in defaults are used); ``~`` expands.

This module is the root model and its loading; the sections are in :mod:`.config_sections`
(service-wide tables) and :mod:`.config_monitors` (``[monitors.*]``), all re-exported here.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, model_validator

from .config_monitors import (
    MONITOR_NAMES,
    CapabilityDiscoveryConfig,
    ChaosMonitorConfig,
    ExceptionMonitorConfig,
    ExplorationConfig,
    IntegrationMonitorConfig,
    KnowledgeDiscoveryConfig,
    MetricQualityConfig,
    ModuleDiscoveryConfig,
    MonitorConfig,
    MonitorsConfig,
    TestMonitorConfig,
)
from .config_sections import (
    UMN_ENDPOINT,
    BusConfig,
    ChemBusConfig,
    ClusterConfig,
    CuriosityConfig,
    FeedConfig,
    HistoryConfig,
    HttpConfig,
    Section,
    ServiceConfig,
    SupervisorConfig,
    is_loopback,
)

__all__ = [
    "ENV_VAR",
    "EXECUTABLE_KEYS",
    "MONITOR_NAMES",
    "UMN_ENDPOINT",
    "BusConfig",
    "CapabilityDiscoveryConfig",
    "ChaosMonitorConfig",
    "ChemBusConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "CuriosityConfig",
    "ExceptionMonitorConfig",
    "ExplorationConfig",
    "FeedConfig",
    "HistoryConfig",
    "HttpConfig",
    "IntegrationMonitorConfig",
    "KnowledgeDiscoveryConfig",
    "MetricQualityConfig",
    "ModuleDiscoveryConfig",
    "MonitorConfig",
    "MonitorsConfig",
    "Section",
    "ServiceConfig",
    "SupervisorConfig",
    "TestMonitorConfig",
    "effective_settings",
    "find_config_path",
    "format_validation_error",
    "is_loopback",
    "load_config",
    "missing_paths",
    "parse_config",
]

ENV_VAR = "KLOROS_STREAM_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the problem."""


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
