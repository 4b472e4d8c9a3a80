"""``RedisWiring``: the Redis-backed pieces of one block instance, chosen by settings.

With ``AIOS_REDIS_URL`` set, the context's ``sessions``, ``events`` and side-cars use
Redis, so do the block's own ``StateDict``/``SessionsManager`` made without a store
(``RedisWiring`` makes Redis the process's default store until it closes),
SetParameters is broadcast to every instance of the block, and
``AIOS_REDIS_INGRESS_STREAM`` / ``AIOS_REDIS_INGRESS_LIST`` start ingresses. Without
it, nothing here runs and the block keeps its in-memory helpers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from aios_grpc.adapters.list_queue import ListQueue
from aios_grpc.events import BlockEvents, BlockSideCars
from aios_grpc.redis.params import ParameterBroadcast
from aios_grpc.redis.queue import RedisListQueue, sidecar_url
from aios_grpc.redis.state import RedisStateStore
from aios_grpc.settings import Settings
from aios_grpc.state import SessionsManager, add_default_store, remove_default_store

if TYPE_CHECKING:
    from aios_grpc.redis.list_ingress import ListIngress
    from aios_grpc.redis.stream_ingress import StreamIngress
    from aios_grpc.runtime.control import ControlPlane
    from aios_grpc.runtime.scheduler import Scheduler

log = logging.getLogger("aios_grpc.redis")


def context_helpers(settings: Settings) -> dict[str, Any]:
    """``Context`` fields backed by Redis (``sessions``, ``events``, ``side_cars``) per settings.

    Empty when neither ``AIOS_REDIS_URL`` nor side-cars are configured.
    """
    helpers: dict[str, Any] = {}
    if settings.redis_url:
        store = RedisStateStore.from_url(settings.redis_url, settings.redis_key_prefix)
        helpers["sessions"] = SessionsManager(store, default_ttl_s=settings.redis_session_ttl_s or None)
        helpers["events"] = BlockEvents(
            block_id=settings.block_id,
            queue=RedisListQueue(store.client),
            queue_name=settings.redis_events_queue,
        )
    if settings.sidecars:
        queues: dict[str, ListQueue] = {}
        for name, config in settings.sidecars.items():
            queues[name] = RedisListQueue.for_sidecar(sidecar_url(name, config, settings.block_id))
        helpers["side_cars"] = BlockSideCars(queues)
    return helpers


class RedisWiring:
    """Starts and stops the Redis ingresses and the parameter broadcast of one instance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0)
        self.broadcast: ParameterBroadcast | None = None
        self.ingresses: list[StreamIngress | ListIngress] = []
        # Made before the block's __init__ runs, so that its StateDict("name") is in Redis.
        self.state_store = RedisStateStore.from_url(settings.redis_url, settings.redis_key_prefix)
        add_default_store(self.state_store)

    @staticmethod
    def wanted(settings: Settings) -> bool:
        """Whether settings ask for anything this runtime runs."""
        return bool(settings.redis_url)

    async def start(self, scheduler: Scheduler, control: ControlPlane) -> None:
        """Start the broadcast (before SERVING, so no update is missed) and the ingresses."""
        from aios_grpc.redis.list_ingress import ListIngress
        from aios_grpc.redis.stream_ingress import StreamIngress

        s = self.settings
        if s.redis_broadcast_parameters or s.redis_parameter_updates:
            self.broadcast = ParameterBroadcast(
                s.redis_url,
                s.block_id,
                s.instance_id,
                prefix=s.redis_key_prefix,
                updates_list=s.redis_parameter_updates,
                heartbeat_s=s.redis_claim_idle_s,
                max_deliveries=s.redis_max_deliveries,
            )

            async def apply(params: dict[str, Any]) -> None:
                """Apply an update heard from another instance, without publishing it again."""
                await control.set_parameters(params, broadcast=False)

            await self.broadcast.start(apply)
            if s.redis_broadcast_parameters:
                control.broadcast = self.broadcast.publish
        if s.redis_ingress_stream:
            self.ingresses.append(
                StreamIngress(
                    self.client,
                    scheduler,
                    stream=s.redis_ingress_stream,
                    group=s.block_id,
                    consumer=s.instance_id,
                    batch=s.redis_batch,
                    block_ms=s.redis_block_ms,
                    claim_idle_s=s.redis_claim_idle_s,
                    max_deliveries=s.redis_max_deliveries,
                    dead_letter=s.redis_dead_letter_stream,
                    results_stream=s.redis_results_stream,
                    # Two batches: one being processed, the next read ahead. More would hoard
                    # entries that idle instances of the block could be working on.
                    max_in_flight=min(s.max_queued, 2 * s.redis_batch),
                )
            )
        if s.redis_ingress_list:
            self.ingresses.append(
                ListIngress(
                    self.client,
                    scheduler,
                    queue=s.redis_ingress_list,
                    consumer=s.instance_id,
                    dead_letter=s.redis_dead_letter_stream,
                    block_s=s.redis_block_ms / 1000,
                    heartbeat_s=s.redis_claim_idle_s,
                    max_in_flight=min(s.max_queued, 2 * s.redis_batch),
                    max_deliveries=s.redis_max_deliveries,
                )
            )
        for ingress in self.ingresses:
            await ingress.start()
            log.info("reading %s", getattr(ingress, "stream", getattr(ingress, "queue", "?")))

    async def drain(self, timeout_s: float) -> None:
        """Stop reading from Redis and acknowledge what finishes within ``timeout_s``."""
        for ingress in self.ingresses:
            await ingress.stop(timeout_s)

    async def close(self) -> None:
        """Close the broadcast and the connection pool."""
        if self.broadcast is not None:
            await self.broadcast.close()
        await self.client.aclose()
        remove_default_store(self.state_store)
        self.state_store.client.close()  # a StateDict still used later reconnects


__all__ = ["RedisWiring", "context_helpers"]
