"""The service-wide sections of the configuration: every table but ``[monitors.*]``.

Each is a pydantic model on :class:`Section` (unknown keys rejected, assignment
validated); :mod:`.config` assembles them into :class:`~.config.Config`.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
    xsub: str = Field(
        default_factory=lambda: os.environ.get("KLR_UMN_XSUB") or "tcp://127.0.0.1:5558",
        pattern=UMN_ENDPOINT,
    )
    xpub: str = Field(
        default_factory=lambda: os.environ.get("KLR_UMN_XPUB") or "tcp://127.0.0.1:5559",
        pattern=UMN_ENDPOINT,
    )
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
            raise ValueError(
                f"host {self.host!r} is not a loopback address: set "
                "http.token_file so that only token holders can change questions"
            )
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
