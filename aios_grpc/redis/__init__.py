"""Ingress other than the Process stream: packets from Redis, delivered at least once.

- ``StreamIngress`` (stream.py): a Redis Stream read through a consumer group.
- ``ListIngress`` (list.py): the original executor's list queues, made reliable.
- ``RedisWiring`` (wiring.py): builds the Redis-backed pieces of a server from settings.
"""

from __future__ import annotations

from aios_grpc.redis.list_ingress import ListIngress
from aios_grpc.redis.stream_ingress import StreamIngress

__all__ = ["ListIngress", "StreamIngress"]
