"""What the Redis ingresses share: decoding entries, restarting a reader that failed.

Retries after transient Redis errors are ``aios_grpc.redis.retry.Retry``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aios_grpc._pb import pb
from aios_grpc.converters import packet_from_proto
from aios_grpc.errors import InvalidPacket
from aios_grpc.packet import AIOSPacket
from aios_grpc.redis.retry import READER_BACKOFF

log = logging.getLogger("aios_grpc.redis")


def decode_packet(payload: Any) -> AIOSPacket:
    """An ``AIOSPacket`` from protobuf bytes; ``InvalidPacket`` naming the problem otherwise."""
    if not isinstance(payload, bytes | bytearray) or not payload:
        raise InvalidPacket("entry has no packet bytes", stage="decode")
    try:
        msg = pb.Packet.FromString(bytes(payload))
    except Exception as exc:
        raise InvalidPacket(f"entry is not an aios.block.v1.Packet: {exc}", stage="decode") from None
    return packet_from_proto(msg)


async def keep_reading(read_forever: Callable[[], Awaitable[None]], what: str, stopping: Callable[[], bool]) -> None:
    """Run ``read_forever`` until ``stopping()``, starting it again after any error.

    A Redis error that is not a lost connection (a key of the wrong type, a
    misconfiguration) is logged and retried after ``READER_BACKOFF``: a reader never dies
    silently. Cancellation ends it.
    """
    failures = 0
    while not stopping():
        try:
            await read_forever()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            log.error("reading %s failed: %s: %s", what, type(exc).__name__, exc)
            await asyncio.sleep(READER_BACKOFF.delay(failures, jitter=False))


__all__ = ["decode_packet", "keep_reading"]
