"""The ``aios-grpc`` command.

- ``aios-grpc serve MODULE:CLASS [--host H] [--port P] [--workers N]``: serve a block.
- ``aios-grpc health HOST:PORT [--service NAME] [--timeout S]``: exit 0 when SERVING,
  1 otherwise, with a one-line reason (a Kubernetes exec probe or a script check).

Errors a user can cause (a module that does not import, a bad setting) print one
line and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from aios_grpc.errors import AiosError


def _serve(args: argparse.Namespace) -> int:
    from aios_grpc.loader import load_block_class
    from aios_grpc.server import Block

    overrides: dict[str, Any] = {}
    for name in ("host", "port", "workers"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    block_class = load_block_class(args.block)
    Block(block_class, **overrides).run()
    return 0


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aios-grpc`` command."""
    parser = argparse.ArgumentParser(prog="aios-grpc", description="Serve and probe aios-grpc blocks.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a block class over gRPC")
    serve.add_argument("block", help="MODULE:CLASS or path/to/file.py:CLASS")
    serve.add_argument("--host", help="address to bind (AIOS_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (AIOS_PORT, default 50051; 0 picks one)")
    serve.add_argument("--workers", type=int, help="threads for plain block methods (AIOS_WORKERS)")
    serve.set_defaults(func=_serve)

    health = sub.add_parser("health", help="exit 0 when a block is SERVING, 1 otherwise")
    health.add_argument("target", help="HOST:PORT")
    health.add_argument("--service", default="", help="service name to check (default: the server)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    health.set_defaults(func=_health)
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
