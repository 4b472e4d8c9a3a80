"""``HeartbeatPublisher``: an instance tells Redis, every few seconds, how it is doing.

A heartbeat carries the instance's health (the same verdict as its gRPC health
status, with the reason, and the last value of the block's ``health()``), its load
(packets in flight, queued, open streams), its packet totals with a short history
(for error-rate policies) and when it last answered a packet. The block-health
aggregator reads them. Redis being down never hurts the instance: the failure is
logged once per outage and the next beat retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import redis.asyncio as aioredis

from aios_grpc.blockhealth.report import InstanceReport, blocks_key, instances_key, report_key
from aios_grpc.settings import Settings

log = logging.getLogger("aios_grpc.blockhealth")

HISTORY_S = 600.0
"""How far back the published packet history reaches."""
OP_TIMEOUT_S = 2.0
"""A Redis write slower than this counts as failed (it must never hold a drain for long)."""


class HeartbeatPublisher:
    """Publishes heartbeats of one server (a ``BlockServer``) every ``heartbeat_interval_s``."""

    def __init__(self, settings: Settings, server: Any, client: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.server = server
        self.interval_s = settings.heartbeat_interval_s
        self.prefix = settings.heartbeat_prefix
        self.ttl_s = max(120, int(10 * self.interval_s))
        self.client = client or aioredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0
        )
        self.started_at = time.time()
        self.history: deque[tuple[float, float, float]] = deque(maxlen=int(HISTORY_S / self.interval_s) + 2)
        self.published = 0
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def report(self) -> InstanceReport:
        """The heartbeat as of now."""
        s = self.settings
        now = time.time()
        status = self.server.health.status()
        stats = self.server.telemetry.snapshot()
        scheduler = self.server.scheduler
        self.history.append((now, float(stats.get("answered", 0)), float(stats.get("failed", 0))))
        return InstanceReport(
            instance_id=s.instance_id,
            block_id=s.block_id,
            heartbeat_at=now,
            healthy=bool(status["serving"]),
            reason="" if status["serving"] else str(status["reason"]),
            started_at=self.started_at,
            last_packet_at=float(stats.get("last_answered_at", 0.0)),
            load={
                "in_flight": float(getattr(scheduler, "in_flight", 0)),
                "queue_depth": float(getattr(scheduler, "queue_depth", 0)),
                "open_streams": float(getattr(self.server.servicer, "open_streams", 0)),
            },
            packets={k: float(stats[k]) for k in ("received", "answered", "failed") if k in stats},
            history=list(self.history),
            health=status.get("report"),
        )

    async def publish_once(self) -> bool:
        """Publish one heartbeat; returns whether Redis took it."""
        report = self.report()
        s = self.settings
        try:
            async with asyncio.timeout(OP_TIMEOUT_S), self.client.pipeline(transaction=True) as pipe:
                pipe.sadd(blocks_key(self.prefix), s.block_id)
                pipe.zadd(instances_key(self.prefix, s.block_id), {s.instance_id: report.heartbeat_at})
                pipe.set(report_key(self.prefix, s.block_id, s.instance_id), report.to_json(), ex=self.ttl_s)
                await pipe.execute()
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                log.warning("heartbeat to Redis failed (%s); retrying every %.0fs", exc, self.interval_s)
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeats to Redis work again")
        self._failing = False
        self.published += 1
        return True

    async def start(self) -> None:
        """Publish now, then every interval until ``stop``."""
        await self.publish_once()
        self._task = asyncio.create_task(self._loop(), name="aios-heartbeat")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.publish_once()
            except Exception:  # never let a bug here end the heartbeats silently
                log.exception("heartbeat failed")

    async def stop(self) -> None:
        """Stop beating and remove this instance: it left, it did not die."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        s = self.settings
        try:
            async with asyncio.timeout(OP_TIMEOUT_S), self.client.pipeline(transaction=True) as pipe:
                pipe.zrem(instances_key(self.prefix, s.block_id), s.instance_id)
                pipe.delete(report_key(self.prefix, s.block_id, s.instance_id))
                await pipe.execute()
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            log.warning("could not remove this instance's heartbeat from Redis: %s", exc)
        finally:
            await self.client.aclose()


__all__ = ["HeartbeatPublisher"]
