"""The ``aios-grpc`` command.

- ``aios-grpc --version``: the SDK's version.
- ``aios-grpc serve MODULE:CLASS [--host H] [--port P] [--workers N] [--metrics-port P]
  [--log-level L]``: serve a block (a flag overrides its ``AIOS_*`` variable).
- ``aios-grpc health HOST:PORT [--service NAME] [--timeout S] [--cacert F [--cert F --key F]]``:
  exit 0 when SERVING, 1 otherwise, with a one-line reason (a Kubernetes exec probe or a
  script check; ``--cacert`` for a TLS port, ``--cert``/``--key`` for mutual TLS).
- ``aios-grpc block-health-server [--port P] [--redis URL] [--policy MODULE:CLASS]``:
  answer ``GET /block/health/<block_id>`` from the instances' heartbeats in Redis.

Errors a user can cause (a module that does not import, a bad setting) print one
line and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from aios_grpc.errors import AiosError, ConfigurationError


def _serve(args: argparse.Namespace) -> int:
    from aios_grpc.block import Block
    from aios_grpc.loader import load_block_class
    from aios_grpc.settings import load_settings

    overrides: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for name in SERVE_FLAGS:
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
            labels[name] = f"--{name.replace('_', '-')}"
    # Settings first: a bad flag or variable is reported before the block is imported.
    settings = load_settings(labels=labels, **overrides)
    block_class = load_block_class(args.block)
    Block(block_class, settings=settings).run()
    return 0


SERVE_FLAGS = ("host", "port", "workers", "metrics_port", "log_level")
"""The ``serve`` flags, each the setting of the same name."""


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if args.cacert or args.cert or args.key:
        if bool(args.cert) != bool(args.key):
            raise ConfigurationError("health: --cert and --key go together")
        from pathlib import Path

        try:
            files = [Path(path).read_bytes() if path else None for path in (args.cacert, args.key, args.cert)]
        except OSError as exc:
            raise ConfigurationError(f"health: cannot read {exc.filename!r}: {exc.strerror}") from None
        credentials = grpc.ssl_channel_credentials(*files)
        channel = grpc.secure_channel(args.target, credentials)
    else:
        channel = grpc.insecure_channel(args.target)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            print(f"{args.target}: {code.name if code else 'ERROR'}: {exc.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    label = f" service {args.service!r}" if args.service else ""
    print(f"{args.target}{label}: {status}")
    return 0 if status == "SERVING" else 1


def _block_health_server(args: argparse.Namespace) -> int:
    import json
    import signal
    import threading

    from aios_grpc.blockhealth import Aggregator, BlockHealthServer, load_block_health_settings

    overrides: dict[str, Any] = {}
    for arg, field in (
        ("host", "block_health_host"),
        ("port", "block_health_port"),
        ("redis", "redis_url"),
        ("max_age", "block_health_max_age_s"),
        ("prefix", "heartbeat_prefix"),
    ):
        if getattr(args, arg) is not None:
            overrides[field] = getattr(args, arg)
    if args.policy:
        policies: list[Any] = []
        for text in args.policy:
            try:
                policies.append(json.loads(text) if text.lstrip().startswith("{") else text)
            except ValueError as exc:
                raise ConfigurationError(f"--policy {text!r} is not valid JSON: {exc}") from None
        overrides["block_health_policies"] = policies
    settings = load_block_health_settings(**overrides)
    aggregator = Aggregator.from_settings(settings)
    try:
        aggregator.client.ping()
    except Exception as exc:
        print(
            f"aios-grpc: warning: Redis at {settings.redis_url} does not answer yet ({exc}); "
            "answering 503 until it does",
            file=sys.stderr,
        )
    try:
        server = BlockHealthServer(
            aggregator,
            settings.block_health_host,
            settings.block_health_port,
            idle_timeout_s=settings.block_health_idle_timeout_s,
            max_connections=settings.block_health_max_connections,
        )
    except OSError as exc:
        raise ConfigurationError(
            f"cannot bind {settings.block_health_host}:{settings.block_health_port} (AIOS_BLOCK_HEALTH_PORT): {exc}"
        ) from None

    def stop(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever, which runs in this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    names = ", ".join(type(p).__name__ for p in aggregator.policies)
    print(
        f"block health on http://{settings.block_health_host}:{server.port}/block/health/<block_id> "
        f"(policies: {names})",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
        aggregator.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aios-grpc`` command."""
    from aios_grpc._version import __version__

    parser = argparse.ArgumentParser(prog="aios-grpc", description="Serve and probe aios-grpc blocks.")
    parser.add_argument("--version", action="version", version=f"aios-grpc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a block class over gRPC")
    serve.add_argument("block", help="MODULE:CLASS or path/to/file.py:CLASS")
    serve.add_argument("--host", help="address to bind (AIOS_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (AIOS_PORT, default 50051; 0 picks one)")
    serve.add_argument("--workers", type=int, help="threads for plain block methods (AIOS_WORKERS)")
    serve.add_argument(
        "--metrics-port", type=int, help="Prometheus /metrics port (AIOS_METRICS_PORT, default 9464; 0 free, -1 off)"
    )
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (AIOS_LOG_LEVEL, default INFO)")
    serve.set_defaults(func=_serve)

    health = sub.add_parser("health", help="exit 0 when a block is SERVING, 1 otherwise")
    health.add_argument("target", help="HOST:PORT")
    health.add_argument("--service", default="", help="service name to check (default: the server)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    health.add_argument("--cacert", default="", help="TLS: PEM CA file that verifies the server (a TLS port)")
    health.add_argument("--cert", default="", help="mutual TLS: this client's PEM certificate (with --key)")
    health.add_argument("--key", default="", help="mutual TLS: this client's PEM private key")
    health.set_defaults(func=_health)

    bh = sub.add_parser("block-health-server", help="serve GET /block/health/<block_id> from heartbeats in Redis")
    bh.add_argument("--host", help="address to bind (AIOS_BLOCK_HEALTH_HOST, default 127.0.0.1)")
    bh.add_argument("--port", type=int, help="port (AIOS_BLOCK_HEALTH_PORT, default 30201; 0 picks one)")
    bh.add_argument("--redis", help="Redis URL (AIOS_REDIS_URL)")
    bh.add_argument("--max-age", type=float, help="heartbeat age limit in seconds (AIOS_BLOCK_HEALTH_MAX_AGE_S)")
    bh.add_argument("--prefix", help="heartbeat key prefix (AIOS_HEARTBEAT_PREFIX)")
    bh.add_argument(
        "--policy",
        action="append",
        default=[],
        help="extra policy: MODULE:CLASS or a JSON object with 'class' and options (repeatable)",
    )
    bh.set_defaults(func=_block_health_server)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aios-grpc`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except AiosError as exc:
        print(f"aios-grpc: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
