"""Settings of a block instance, read from ``AIOS_*`` environment variables.

Every field can be set from the environment (``AIOS_<FIELD>``, upper case) or from
code (``Settings(port=0)``, or keyword arguments to ``Block(...)``). The original
SDK's variable names (``BLOCK_ID``, ``INSTANCE_ID``, ...) are accepted too. Values
are checked when the settings are built: a bad value fails at start-up with the
variable's name in the message. ``docs/configuration.md`` is the reference table;
``tests/test_settings.py`` checks that it lists every field.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aios_grpc.errors import ConfigurationError


def _env(name: str, *legacy: str) -> AliasChoices:
    return AliasChoices(f"AIOS_{name}", *legacy, name.lower())


class Settings(BaseSettings):
    """Settings of one block instance (see docs/configuration.md)."""

    model_config = SettingsConfigDict(
        env_prefix="AIOS_", extra="ignore", validate_default=True, populate_by_name=True
    )

    # Identity
    block_id: str = Field("block", validation_alias=_env("BLOCK_ID", "BLOCK_ID"))
    """Id of the block this instance serves."""
    instance_id: str = Field(
        default_factory=lambda: f"instance-{uuid.uuid4().hex[:8]}",
        validation_alias=_env("INSTANCE_ID", "INSTANCE_ID"),
    )
    """Id of this instance (a random one when unset)."""

    # Block context (JSON objects)
    block_data: dict[str, Any] = Field(
        default_factory=dict, validation_alias=_env("BLOCK_DATA", "BLOCK_DATA")
    )
    """The block's full configuration (JSON object), as ``context.block_data``."""
    block_init_data: dict[str, Any] = Field(
        default_factory=dict, validation_alias=_env("BLOCK_INIT_DATA", "BLOCK_INIT_DATA")
    )
    """Static initial configuration (JSON object), as ``context.block_init_data``."""
    block_init_settings: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=_env("BLOCK_INIT_SETTINGS", "BLOCK_INIT_SETTINGS"),
    )
    """Runtime settings (JSON object), as ``context.block_init_settings``."""
    block_init_parameters: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=_env("BLOCK_INIT_PARAMETERS", "BLOCK_INIT_PARAMETERS"),
    )
    """Initial parameters (JSON object), as ``context.block_init_parameters``."""
    gpus: list[str] = Field(default_factory=list, validation_alias=_env("GPUS", "GPUS"))
    """GPUs allocated to this instance (JSON list), as ``context.allocation_info["gpus"]``."""
    node_id: str = Field("", validation_alias=_env("NODE_ID", "NODE_ID"))
    """Node the instance runs on, as ``context.allocation_info["node_id"]``."""
    cluster_id: str = Field("", validation_alias=_env("CLUSTER_ID", "CLUSTER_ID"))
    """Cluster the instance runs on, as ``context.allocation_info["cluster_id"]``."""

    # Server
    host: str = Field("127.0.0.1", validation_alias=_env("HOST"))
    """Address the gRPC server binds (use 0.0.0.0 in a container)."""
    port: int = Field(50051, ge=0, le=65535, validation_alias=_env("PORT"))
    """gRPC port; 0 picks a free one (the bound port is logged)."""
    workers: int = Field(4, ge=1, le=1024, validation_alias=_env("WORKERS"))
    """Threads that run plain (non-async) block methods."""
    max_chunk: int = Field(32, ge=1, le=4096, validation_alias=_env("MAX_CHUNK"))
    """Most queued packets one worker thread takes in one hand-off (amortises the hop)."""
    max_queued: int = Field(1024, ge=1, validation_alias=_env("MAX_QUEUED"))
    """Packets waiting for a worker, over all streams; a full queue pauses the readers."""
    stream_max_in_flight: int = Field(256, ge=1, validation_alias=_env("STREAM_MAX_IN_FLIGHT"))
    """Unanswered packets one Process stream may have; past it the server stops reading it."""
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, validation_alias=_env("MAX_MESSAGE_BYTES")
    )
    """Largest gRPC message received or sent."""
    max_files_per_packet: int = Field(64, ge=0, validation_alias=_env("MAX_FILES_PER_PACKET"))
    """Files one packet may carry; more is answered INVALID_ARGUMENT."""
    validate_json: bool = Field(True, validation_alias=_env("VALIDATE_JSON"))
    """Check that a packet's non-empty ``data`` is JSON before the block sees it."""
    grace_period_s: float = Field(10.0, ge=0, validation_alias=_env("GRACE_PERIOD_S"))
    """Seconds a drain (SIGTERM) waits for in-flight packets before exiting."""
    health_interval_s: float = Field(5.0, gt=0, validation_alias=_env("HEALTH_INTERVAL_S"))
    """Seconds between calls of the block's ``health()``."""
    health_timeout_s: float = Field(5.0, gt=0, validation_alias=_env("HEALTH_TIMEOUT_S"))
    """A ``health()`` call slower than this counts as unhealthy."""
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL"))
    """Logging level of the ``aios_grpc`` logger."""

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @property
    def address(self) -> str:
        """``host:port`` as the server binds it."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with ``overrides`` on top.

    Raises ``ConfigurationError`` naming each bad variable, instead of pydantic's
    ValidationError, so that start-up fails with one readable message.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            env = name if name.isupper() else f"AIOS_{name.upper()}"
            shown = os.environ.get(env, err.get("input"))
            problems.append(f"{env}={shown!r}: {err['msg']}")
        raise ConfigurationError("invalid settings: " + "; ".join(problems)) from None


__all__ = ["Settings", "load_settings"]
