"""Live reload (SIGHUP): what a new ``config.toml`` changes, decided without I/O.

:func:`plan_reload` compares the running configuration with a freshly validated one:

- monitors enabled now but not before are started, disabled ones stopped, and enabled
  ones whose settings changed restarted; the others keep running with their state. A
  monitor's settings are its own section, the sections it reads besides
  (:func:`monitor_reads`, declared by each monitor class) and ``service.max_line_bytes``;
- ``[feed]``, ``[http]`` and ``service.state_dir`` need a restart of the service: their new
  values are reported and the running ones kept;
- everything else (``curiosity``, ``bus``, ``history``, ``supervisor``,
  ``service.log_level``) the service applies in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .config import Config


def monitor_reads(name: str) -> tuple[str, ...]:
    """The settings monitor ``name`` reads besides its own section, as its class declares
    them (:attr:`~kloros_stream.monitors.base.Monitor.reads`)."""
    from .monitors import monitor_class

    try:
        return monitor_class(name).reads
    except KeyError:
        return ()

RESTART_ONLY_SECTIONS = ("feed", "http", "cluster")
RESTART_ONLY_KEYS = ("service.state_dir",)


@dataclass(frozen=True)
class ReloadPlan:
    config: Config
    """The configuration to adopt: the new one, restart-only keys kept from the old one."""
    start: tuple[str, ...]
    stop: tuple[str, ...]
    restart: tuple[str, ...]
    unchanged: tuple[str, ...]
    changed: tuple[str, ...]
    """Dotted keys whose new values take effect."""
    needs_restart: tuple[str, ...]
    """Dotted keys that changed but only take effect after a service restart."""


def changed_keys(old: BaseModel, new: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of the leaf settings that differ between two configurations."""
    out: list[str] = []
    for name in type(old).model_fields:
        if name == "source":
            continue
        a, b = getattr(old, name), getattr(new, name)
        key = f"{prefix}{name}"
        if isinstance(a, BaseModel) and isinstance(b, BaseModel):
            out += changed_keys(a, b, key + ".")
        elif a != b:
            out.append(key)
    return out


def monitor_settings(config: Config, name: str) -> tuple[Any, ...]:
    """Everything monitor ``name`` reads from the configuration."""
    values = [config.monitors.get(name).model_dump()]
    for read in monitor_reads(name):
        section, _, key = read.partition(".")
        data = config.monitors.get(section).model_dump()
        values.append(data[key] if key else data)
    return (tuple(values), config.service.max_line_bytes)


def _restart_only(key: str) -> bool:
    return key.split(".", 1)[0] in RESTART_ONLY_SECTIONS or key in RESTART_ONLY_KEYS


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """What applying ``new`` over the running ``old`` configuration does."""
    keys = changed_keys(old, new)
    needs_restart = tuple(k for k in keys if _restart_only(k))
    adopted = new.model_copy(
        update={
            "feed": old.feed,
            "http": old.http,
            "service": new.service.model_copy(update={"state_dir": old.service.state_dir}),
        }
    )
    start, stop, restart, unchanged = [], [], [], []
    # The set of plugin monitors is fixed at start: one added or removed waits for a restart.
    needs_restart += tuple(f"monitors.{n}" for n in sorted(
        set(old.monitors.plugins) ^ set(new.monitors.plugins)))
    for name in old.monitors.names():
        if name not in adopted.monitors.names():
            continue
        was, now = old.monitors.get(name).enabled, adopted.monitors.get(name).enabled
        if now and not was:
            start.append(name)
        elif was and not now:
            stop.append(name)
        elif now and monitor_settings(old, name) != monitor_settings(adopted, name):
            restart.append(name)
        else:
            unchanged.append(name)
    return ReloadPlan(
        config=adopted,
        start=tuple(start),
        stop=tuple(stop),
        restart=tuple(restart),
        unchanged=tuple(unchanged),
        changed=tuple(k for k in keys if not _restart_only(k)),
        needs_restart=needs_restart,
    )
