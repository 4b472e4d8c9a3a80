"""Settings of the block-health aggregator (``aios-grpc block-health-server``), from ``AIOS_*``."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aios_grpc.settings import build_settings


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"AIOS_{name}", name.lower())


class BlockHealthSettings(BaseSettings):
    """Settings of the aggregator (see docs/configuration.md, "Block health aggregator")."""

    model_config = SettingsConfigDict(extra="ignore", validate_default=True, populate_by_name=True)

    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("REDIS_URL"))
    """Redis the instances publish their heartbeats to."""
    heartbeat_prefix: str = Field("aios:blockhealth", validation_alias=_env("HEARTBEAT_PREFIX"))
    """Prefix of the heartbeat keys (the instances' AIOS_HEARTBEAT_PREFIX)."""
    block_health_host: str = Field("127.0.0.1", validation_alias=_env("BLOCK_HEALTH_HOST"))
    """Address the HTTP server binds (0.0.0.0 in a container)."""
    block_health_port: int = Field(30201, ge=0, le=65535, validation_alias=_env("BLOCK_HEALTH_PORT"))
    """Port of the HTTP server; 0 picks a free one (the bound port is printed)."""
    block_health_max_age_s: float = Field(60.0, gt=0, validation_alias=_env("BLOCK_HEALTH_MAX_AGE_S"))
    """A heartbeat older than this makes its instance (and so the block) unhealthy."""
    block_health_policies: list[Any] = Field(default_factory=list, validation_alias=_env("BLOCK_HEALTH_POLICIES"))
    """Extra policies (JSON list): ``"module:Class"`` or ``{"class": "module:Class", <options>}``."""
    block_health_retention_s: float = Field(3600.0, gt=0, validation_alias=_env("BLOCK_HEALTH_RETENTION_S"))
    """Instances with no heartbeat for this long are dropped from the block's list."""
    block_health_idle_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("BLOCK_HEALTH_IDLE_TIMEOUT_S"))
    """A connection that sends nothing for this long is closed (idle or stalled clients)."""
    block_health_max_connections: int = Field(64, ge=1, validation_alias=_env("BLOCK_HEALTH_MAX_CONNECTIONS"))
    """Connections served at once (one thread each); past it a new one is answered 503 and closed."""


def load_block_health_settings(**overrides: Any) -> BlockHealthSettings:
    """Settings from the environment with ``overrides`` on top; a bad value is a ``ConfigurationError``."""
    return build_settings(BlockHealthSettings, overrides)


__all__ = ["BlockHealthSettings", "load_block_health_settings"]
