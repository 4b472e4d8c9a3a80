"""Settings of a block instance, read from ``AIOS_*`` environment variables.

Every field can be set from the environment (``AIOS_<FIELD>``, upper case) or from
code (``Settings(port=0)``, or keyword arguments to ``Block(...)``). The original
SDK's variable names (``BLOCK_ID``, ``INSTANCE_ID``, ...) are accepted too. Values
are checked when the settings are built: a bad value fails at start-up with the
variable's name in the message. ``docs/configuration.md`` is the reference table;
``tests/test_settings.py`` checks that it lists every field.
"""

from __future__ import annotations

import difflib
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from aios_grpc.errors import ConfigurationError


def _env(name: str, *legacy: str) -> AliasChoices:
    return AliasChoices(f"AIOS_{name}", *legacy, name.lower())


class Settings(BaseSettings):
    """Settings of one block instance (see docs/configuration.md)."""

    model_config = SettingsConfigDict(env_prefix="AIOS_", extra="ignore", validate_default=True, populate_by_name=True)

    # Identity
    block_id: str = Field("block", validation_alias=_env("BLOCK_ID", "BLOCK_ID"))
    """Id of the block this instance serves."""
    instance_id: str = Field(
        default_factory=lambda: f"instance-{uuid.uuid4().hex[:8]}",
        validation_alias=_env("INSTANCE_ID", "INSTANCE_ID"),
    )
    """Id of this instance (a random one when unset)."""

    # Block context (JSON objects)
    block_data: dict[str, Any] = Field(default_factory=dict, validation_alias=_env("BLOCK_DATA", "BLOCK_DATA"))
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
    max_chunk: int = Field(64, ge=1, le=4096, validation_alias=_env("MAX_CHUNK"))
    """Most queued packets one worker thread takes in one hand-off (amortises the hop)."""
    gather_s: float = Field(0.003, ge=0, le=1.0, validation_alias=_env("GATHER_S"))
    """Seconds a fast block's chunk waits for more packets from a pipelining client (0: never waits).

    The wait ends early when the chunk is full or no packet came for a fifth of it.
    """
    max_queued: int = Field(1024, ge=1, validation_alias=_env("MAX_QUEUED"))
    """Packets waiting for a worker, over all streams; a full queue pauses the readers."""
    stream_max_in_flight: int = Field(256, ge=1, validation_alias=_env("STREAM_MAX_IN_FLIGHT"))
    """Unanswered packets one Process stream may have; past it the server stops reading it."""
    max_in_flight_per_session: int = Field(0, ge=0, validation_alias=_env("MAX_IN_FLIGHT_PER_SESSION"))
    """Packets of one session id that may run at once, over all streams and ingresses; the
    others wait their turn in arrival order (none refused); 0: no cap."""
    max_unsent_partials: int = Field(64, ge=1, validation_alias=_env("MAX_UNSENT_PARTIALS"))
    """Partial outputs one packet may have produced and not yet sent; past it its generator waits."""
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, validation_alias=_env("MAX_MESSAGE_BYTES"))
    """Largest gRPC message received or sent."""
    max_files_per_packet: int = Field(64, ge=0, validation_alias=_env("MAX_FILES_PER_PACKET"))
    """Files one packet may carry; more is answered INVALID_ARGUMENT."""
    max_session_id_bytes: int = Field(256, ge=1, validation_alias=_env("MAX_SESSION_ID_BYTES"))
    """Longest ``session_id`` (UTF-8 bytes) a packet may carry; longer is answered INVALID_ARGUMENT."""
    max_json_depth: int = Field(64, ge=1, le=500, validation_alias=_env("MAX_JSON_DEPTH"))
    """Deepest nesting of objects and arrays in a packet's JSON ``data`` or a control-plane
    ``Struct``; deeper is answered INVALID_ARGUMENT."""
    stream_max_unsent_bytes: int = Field(4 * 1024 * 1024, ge=1024, validation_alias=_env("STREAM_MAX_UNSENT_BYTES"))
    """Bytes of results one Process stream may hold unwritten (with the results of the packets it
    has in flight, reckoned at the stream's largest result); past it the server stops reading it."""
    max_streams: int = Field(256, ge=1, validation_alias=_env("MAX_STREAMS"))
    """Process streams open at once; one more is refused RESOURCE_EXHAUSTED."""
    max_parameters_bytes: int = Field(1024 * 1024, ge=1024, validation_alias=_env("MAX_PARAMETERS_BYTES"))
    """Largest SetParameters update, and largest set of stored parameters (JSON bytes); an update
    over either is refused INVALID_ARGUMENT before ``on_update`` sees it."""
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
    log_format: str = Field("text", validation_alias=_env("LOG_FORMAT"))
    """``text`` (one line per record) or ``json`` (one JSON object per line, with ``trace_id`` and
    ``span_id`` when the record is about a traced packet)."""
    gc_freeze: bool = Field(True, validation_alias=_env("GC_FREEZE"))
    """Once the block is ready, keep every object alive then (modules, the model) out of later
    garbage-collector passes (``gc.freeze``); undone when the server stops."""

    # Security: tokens, TLS (docs/security.md). Token fields stay out of repr and error messages.
    auth_tokens: list[str] = Field(default_factory=list, repr=False, validation_alias=_env("AUTH_TOKENS"))
    """Bearer tokens (JSON list) accepted on the data plane (Process); empty with no file: the data plane is open."""
    auth_tokens_file: str = Field("", validation_alias=_env("AUTH_TOKENS_FILE"))
    """File of data-plane tokens, one a line (added to AIOS_AUTH_TOKENS), re-read when it changes."""
    control_tokens: list[str] = Field(default_factory=list, repr=False, validation_alias=_env("CONTROL_TOKENS"))
    """Bearer tokens (JSON list) for the control plane (SetParameters, Management, GetInfo); unset: the
    data-plane tokens guard it too. Control tokens are accepted on the data plane as well."""
    control_tokens_file: str = Field("", validation_alias=_env("CONTROL_TOKENS_FILE"))
    """File of control-plane tokens, one a line (added to AIOS_CONTROL_TOKENS), re-read when it changes."""
    reflection: str = Field("auto", validation_alias=_env("REFLECTION"))
    """Server reflection: ``auto`` (needs a data-plane token when those are set), ``open``, ``off``."""
    tls_cert_file: str = Field("", validation_alias=_env("TLS_CERT_FILE"))
    """PEM certificate chain of the server; with AIOS_TLS_KEY_FILE the port serves TLS only."""
    tls_key_file: str = Field("", validation_alias=_env("TLS_KEY_FILE"))
    """PEM private key of AIOS_TLS_CERT_FILE."""
    tls_client_ca_file: str = Field("", validation_alias=_env("TLS_CLIENT_CA_FILE"))
    """PEM CA certificates; set: mutual TLS, every client must present a certificate they signed."""
    tls_reload_s: float = Field(5.0, ge=0, validation_alias=_env("TLS_RELOAD_S"))
    """Seconds between checks of the certificate files (and token files) for rotation; 0: every handshake/call."""

    # Scheduler: muxing, batching, loop watchdog
    mux_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("MUX_TIMEOUT_S"))
    """Seconds an incomplete muxer group waits before its members are answered DEADLINE_EXCEEDED."""
    mux_max_open_groups: int = Field(1024, ge=1, validation_alias=_env("MUX_MAX_OPEN_GROUPS"))
    """Incomplete muxer groups allowed at once; a packet opening one more gets RESOURCE_EXHAUSTED."""
    max_concurrent_batches: int = Field(1, ge=1, validation_alias=_env("MAX_CONCURRENT_BATCHES"))
    """``on_batch`` calls that may run at once (changeable at run time: action ``aios.batcher``)."""
    stream_window_bytes: int = Field(1 << 20, ge=0, validation_alias=_env("STREAM_WINDOW_BYTES"))
    """HTTP/2 receive window per stream: bytes a sender may have in flight unread; 0: grpc's adaptive window."""
    loop_block_threshold_s: float = Field(0.25, ge=0, validation_alias=_env("LOOP_BLOCK_THRESHOLD_S"))
    """Event-loop stall that the watchdog reports (once per call site, with the frame); 0: off."""

    # Routing (output_ptr targets)
    route_allow: list[str] = Field(default_factory=list, validation_alias=_env("ROUTE_ALLOW"))
    """``host:port`` patterns (JSON list) of routing targets, a ``*`` within one host label or the
    port (``10.0.*.*:50051``, ``*.ns.svc.cluster.local:50051``); empty allows none."""
    route_allow_queues: list[str] = Field(default_factory=list, validation_alias=_env("ROUTE_ALLOW_QUEUES"))
    """Glob patterns (JSON list) of Redis queue names that outputs may be pushed to; empty allows none.
    The block's own ingress stream and list, its parameter updates list and the keys under
    AIOS_REDIS_KEY_PREFIX are targets only when listed by exact name."""
    route_tls: list[dict[str, Any]] = Field(default_factory=list, repr=False, validation_alias=_env("ROUTE_TLS"))
    """Per-target link security (JSON list, first match wins): ``{"pattern": "host:port glob", "ca_file",
    "cert_file", "key_file", "token", "token_file", "server_name", "tls"}`` (docs/security.md)."""
    route_retry_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("ROUTE_RETRY_TIMEOUT_S"))
    """Seconds a down target is retried before the input is answered UNAVAILABLE."""
    route_answer_timeout_s: float = Field(60.0, gt=0, validation_alias=_env("ROUTE_ANSWER_TIMEOUT_S"))
    """Further seconds a connected gRPC target may take to answer an output."""
    route_backoff_initial_s: float = Field(0.05, gt=0, validation_alias=_env("ROUTE_BACKOFF_INITIAL_S"))
    """First retry delay for a down target (doubles per failure, with jitter)."""
    route_backoff_max_s: float = Field(2.0, gt=0, validation_alias=_env("ROUTE_BACKOFF_MAX_S"))
    """Cap of the retry delay for a down target."""
    route_max_fanout: int = Field(1024, ge=1, validation_alias=_env("ROUTE_MAX_FANOUT"))
    """Most sends one input packet may cause in all, over every hop of its graph (its descendants); a
    budget carried in the ``aios-fanout`` header, each hop keeping the smaller of it and its own."""
    route_max_hops: int = Field(64, ge=1, validation_alias=_env("ROUTE_MAX_HOPS"))
    """Most blocks a routed packet may pass through (the ``aios-hops`` header)."""

    # Redis (all optional: without AIOS_REDIS_URL everything stays in memory)
    redis_url: str = Field("", validation_alias=_env("REDIS_URL"))
    """Redis for sessions, state, events, side-cars and parameter broadcast (``redis://host:port/db``)."""
    redis_key_prefix: str = Field("aios", validation_alias=_env("REDIS_KEY_PREFIX"))
    """Prefix of the Redis keys of session and state data."""
    redis_session_ttl_s: float = Field(0.0, ge=0, validation_alias=_env("REDIS_SESSION_TTL_S"))
    """Default TTL of a session's state in seconds after its last write (0: none)."""
    redis_ingress_stream: str = Field("", validation_alias=_env("REDIS_INGRESS_STREAM"))
    """Redis Stream to consume packets from (consumer group = block id); empty: none."""
    redis_ingress_list: str = Field("", validation_alias=_env("REDIS_INGRESS_LIST"))
    """Redis list to consume packets from (the original executor's queue); empty: none."""
    redis_results_stream: str = Field("", validation_alias=_env("REDIS_RESULTS_STREAM"))
    """Stream where Redis-ingress packets with an empty ``output_ptr`` get their outputs; empty: none."""
    redis_batch: int = Field(100, ge=1, le=10000, validation_alias=_env("REDIS_BATCH"))
    """Entries one XREADGROUP reads at most."""
    redis_block_ms: int = Field(1000, ge=1, validation_alias=_env("REDIS_BLOCK_MS"))
    """Milliseconds a read waits for new entries."""
    redis_claim_idle_s: float = Field(30.0, gt=0, validation_alias=_env("REDIS_CLAIM_IDLE_S"))
    """Entries pending this long on another consumer (a dead instance) are claimed."""
    redis_max_deliveries: int = Field(5, ge=1, validation_alias=_env("REDIS_MAX_DELIVERIES"))
    """Deliveries after which an entry (stream ingress), an item (list ingress) or a PARAMETER_UPDATES
    update goes to the dead letters."""
    redis_dead_letter_stream: str = Field("", validation_alias=_env("REDIS_DEAD_LETTER_STREAM"))
    """Dead-letter stream (default: ``<ingress stream>:dead`` or ``<ingress list>:dead``)."""
    redis_events_queue: str = Field("EVENTS_QUEUE", validation_alias=_env("REDIS_EVENTS_QUEUE"))
    """List that ``BlockEvents.push_event`` pushes to."""
    redis_parameter_updates: str = Field("PARAMETER_UPDATES", validation_alias=_env("REDIS_PARAMETER_UPDATES"))
    """List of parameter updates (JSON objects) applied and broadcast to every instance; empty: off."""
    redis_broadcast_parameters: bool = Field(True, validation_alias=_env("REDIS_BROADCAST_PARAMETERS"))
    """Whether SetParameters on one instance is applied on every instance of the block."""
    sidecars: dict[str, Any] = Field(default_factory=dict, validation_alias=_env("SIDECARS", "SIDECARS"))
    """Side-cars (JSON object): name -> ``{"redis_url": ...}`` or ``{"external": false}`` (cluster DNS name)."""

    # Observability: metrics, traces, health watchdog, heartbeats
    metrics_port: int = Field(9464, ge=-1, le=65535, validation_alias=_env("METRICS_PORT"))
    """Port of the Prometheus endpoint (``GET /metrics``, on AIOS_HOST); 0 picks a free one; -1: off."""
    metrics_host: str = Field("", validation_alias=_env("METRICS_HOST"))
    """Address the metrics endpoint binds; empty: AIOS_HOST (set 0.0.0.0 for a Prometheus scrape in a pod)."""
    http_port: int = Field(-1, ge=-1, le=65535, validation_alias=_env("HTTP_PORT"))
    """Port of the original SDK's HTTP endpoints (``GET /health``, ``POST /setParameters``,
    ``POST /mgmt``, on AIOS_HOST, control-plane tokens); 0 picks a free one; -1: off (default)."""
    tracing: str = Field("auto", validation_alias=_env("TRACING"))
    """Traces: ``auto`` (on when OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT is set), ``on``, ``off``."""
    tracing_stages: bool = Field(True, validation_alias=_env("TRACING_STAGES"))
    """A child span per stage (queue, preprocess, data, route) under each packet's span; false: the
    packet span only, with each stage's seconds as an attribute (cheaper)."""
    health_stall_s: float = Field(60.0, ge=0, validation_alias=_env("HEALTH_STALL_S"))
    """Packets in flight but none answered for this long turns health NOT_SERVING; 0: off."""
    heartbeat_interval_s: float = Field(10.0, gt=0, validation_alias=_env("HEARTBEAT_INTERVAL_S"))
    """Seconds between the heartbeats an instance publishes to Redis (when AIOS_REDIS_URL is set)."""
    heartbeat_prefix: str = Field("aios:blockhealth", validation_alias=_env("HEARTBEAT_PREFIX"))
    """Prefix of the Redis keys of heartbeats (the aggregator reads the same prefix)."""

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator("reflection")
    @classmethod
    def _reflection(cls, value: str) -> str:
        mode = value.strip().lower()
        if mode not in {"auto", "open", "off"}:
            raise ValueError(f"reflection must be auto, open or off, not {value!r}")
        return mode

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        fmt = value.strip().lower()
        if fmt not in {"text", "json"}:
            raise ValueError(f"log format must be text or json, not {value!r}")
        return fmt

    @field_validator("tracing")
    @classmethod
    def _tracing(cls, value: str) -> str:
        mode = value.strip().lower()
        if mode not in {"auto", "on", "off"}:
            raise ValueError(f"tracing must be auto, on or off, not {value!r}")
        return mode

    @property
    def address(self) -> str:
        """``host:port`` as the server binds it."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


def load_settings(*, labels: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment with ``overrides`` on top.

    Raises ``ConfigurationError`` naming each bad variable, instead of pydantic's
    ValidationError, so that start-up fails with one readable message; an unknown
    keyword is an error naming the closest setting (``wrokers=9``: did you mean
    ``workers``?). ``labels`` names where an override came from in those messages
    (the CLI passes ``{"workers": "--workers"}``); the keyword itself otherwise.
    """
    return build_settings(Settings, overrides, labels)


AnySettings = TypeVar("AnySettings", bound=BaseSettings)

SECRET_VARIABLES = frozenset({"AIOS_AUTH_TOKENS", "AIOS_CONTROL_TOKENS", "AIOS_ROUTE_TLS"})
"""Variables that hold tokens: an error about one never shows its value."""
_HIDDEN = "<hidden>"


def build_settings(
    model: type[AnySettings], overrides: Mapping[str, Any], labels: Mapping[str, str] | None = None
) -> AnySettings:
    """``model(**overrides)``; a bad value is a one-line ``ConfigurationError`` naming its variable.

    A value given in ``overrides`` is named by its keyword (or ``labels[field]``, a
    command-line flag), one from the environment by its variable.
    """
    _check_names(model, overrides)
    try:
        return model(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            field = _field_of(model, name)
            if field in overrides:
                label = (labels or {}).get(field, field)
                secret = f"AIOS_{field.upper()}" in SECRET_VARIABLES
                problems.append(f"{label}={_HIDDEN if secret else repr(overrides[field])}: {err['msg']}")
                continue
            env = name if name.isupper() else f"AIOS_{name.upper()}"
            shown = _HIDDEN if env in SECRET_VARIABLES else repr(os.environ.get(env, err.get("input")))
            problems.append(f"{env}={shown}: {err['msg']}")
        raise ConfigurationError("invalid settings: " + "; ".join(problems)) from None
    except SettingsError as exc:
        # pydantic-settings fails before validation when a JSON-typed variable (a dict
        # or list field) does not parse; its message names the field, not the variable.
        found = re.search(r'field "(\w+)"', str(exc))
        field = found.group(1) if found else ""
        env = _set_variable(model, field) if field else ""
        shown = "" if env not in os.environ else f"={_HIDDEN}" if env in SECRET_VARIABLES else f"={os.environ[env]!r}"
        reason = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigurationError(
            f"invalid settings: {env or field or 'environment'}{shown}: not valid JSON{reason}"
        ) from None


def _names(model: type[BaseSettings], field: str) -> list[str]:
    """Every name ``field`` is read under: the field's own and its aliases."""
    alias = model.model_fields[field].validation_alias
    return [field, *(c for c in alias.choices if isinstance(c, str))] if isinstance(alias, AliasChoices) else [field]


def _field_of(model: type[BaseSettings], name: str) -> str:
    """The field that ``name`` (a field name or one of its aliases) sets."""
    for field in model.model_fields:
        if name in _names(model, field):
            return field
    return name


def _closest(name: str, known: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the known name most like ``name`` (empty when none is close)."""
    found = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {found[0]!r}?" if found else ""


def _check_names(model: type[BaseSettings], overrides: Mapping[str, Any]) -> None:
    """A ``ConfigurationError`` for a keyword that is no setting of ``model`` (a typo is not ignored)."""
    known = {name for field in model.model_fields for name in _names(model, field)}
    unknown = [key for key in overrides if key not in known]
    if unknown:
        problems = [f"{key!r}{_closest(key, model.model_fields)}" for key in unknown]
        raise ConfigurationError(f"unknown setting {', '.join(problems)} (see docs/configuration.md)")


def unknown_variables(models: Iterable[type[BaseSettings]], environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per ``AIOS_*`` variable of ``environ`` that no model reads, naming the closest one that is read.

    A misspelt ``AIOS_PROT=5`` is otherwise ignored without a word; the server logs
    these lines as warnings at start-up.
    """
    env = os.environ if environ is None else environ
    known = {
        name
        for model in models
        for field in model.model_fields
        for name in _names(model, field)
        if name.startswith("AIOS_")
    }
    return [
        f"{name} is not a setting and is ignored{_closest(name, known)}"
        for name in sorted(env)
        if name.startswith("AIOS_") and name not in known
    ]


def _set_variable(model: type[BaseSettings], field: str) -> str:
    """The environment variable that set ``field`` (its AIOS_ name when none is set)."""
    info = model.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    names = [c for c in alias.choices if isinstance(c, str)] if isinstance(alias, AliasChoices) else []
    for name in names:
        if name.isupper() and name in os.environ:
            return name
    return f"AIOS_{field.upper()}"


__all__ = ["Settings", "build_settings", "load_settings", "unknown_variables"]
