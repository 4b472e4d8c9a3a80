"""What the Redis ingresses share: decoding entries, connection backoff, the in-flight window."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aios_grpc._pb import pb
from aios_grpc.converters import packet_from_proto
from aios_grpc.errors import InvalidPacket
from aios_grpc.packet import AIOSPacket

log = logging.getLogger("aios_grpc.ingress")

# Errors after which the same Redis command may work again (a restart, a network blip).
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


def decode_packet(payload: Any) -> AIOSPacket:
    """An ``AIOSPacket`` from protobuf bytes; ``InvalidPacket`` naming the problem otherwise."""
    if not isinstance(payload, bytes | bytearray) or not payload:
        raise InvalidPacket("entry has no packet bytes", stage="decode")
    try:
        msg = pb.Packet.FromString(bytes(payload))
    except Exception as exc:
        raise InvalidPacket(f"entry is not an aios.block.v1.Packet: {exc}", stage="decode") from None
    return packet_from_proto(msg)


async def pause(failures: int, what: str, exc: BaseException) -> None:
    """Sleep a capped exponential delay after ``failures`` transient errors in a row."""
    delay = min(2.0, 0.05 * 2 ** min(failures, 10))
    if failures == 1 or failures % 20 == 0:
        log.warning("%s: %s (retrying, %d failures in a row)", what, exc, failures)
    await asyncio.sleep(delay)


__all__ = ["TRANSIENT", "decode_packet", "pause"]
