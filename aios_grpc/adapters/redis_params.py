"""``ParameterBroadcast``: SetParameters on one instance reaches ``on_update`` on all of them.

An instance that applied parameters publishes them on the Redis channel
``<prefix>:params:<block_id>``; every other instance of the block applies what it
hears (not publishing again). The original SDK's ``PARAMETER_UPDATES`` list is
honoured too: whichever instance pops an update (a JSON object) applies it and
broadcasts it. Updates that fail on an instance are logged there; the caller of
SetParameters saw its own instance's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger("aios_grpc.parameters")

Apply = Callable[[dict[str, Any]], Awaitable[Any]]


class ParameterBroadcast:
    """Publishes applied parameters and applies those published by other instances."""

    def __init__(
        self,
        url: str,
        block_id: str,
        instance_id: str,
        *,
        prefix: str = "aios",
        updates_list: str = "PARAMETER_UPDATES",
    ) -> None:
        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=2.0)
        self.channel = f"{prefix}:params:{block_id}"
        self.instance_id = instance_id
        self.updates_list = updates_list
        self.applied_remote = 0
        self._apply: Apply | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    async def start(self, apply: Apply) -> None:
        """Start listening; ``apply(params)`` applies without publishing again."""
        self._apply = apply
        self._tasks.append(asyncio.create_task(self._listen(), name="aios-params-listen"))
        if self.updates_list:
            self._tasks.append(asyncio.create_task(self._pop_updates(), name="aios-params-list"))
        # Wait (bounded) for the subscription, so an update published right after start is
        # heard; with Redis down, start-up goes on and the listener keeps retrying.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 2.0)

    async def publish(self, params: dict[str, Any]) -> None:
        """Tell the other instances to apply ``params`` (errors are logged, not raised)."""
        message = json.dumps({"origin": self.instance_id, "params": params})
        try:
            await self.client.publish(self.channel, message)
        except Exception as exc:
            log.error("parameter broadcast on %s failed: %s", self.channel, exc)

    async def _listen(self) -> None:
        failures = 0
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                failures = 0
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is not None:
                        await self._on_message(msg.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("parameter channel %s: %s; resubscribing", self.channel, exc)
                await asyncio.sleep(min(2.0, 0.1 * 2**failures))
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _on_message(self, data: Any) -> None:
        try:
            message = json.loads(data)
            origin, params = message["origin"], message["params"]
        except (ValueError, TypeError, KeyError) as exc:
            log.error("bad parameter broadcast on %s: %s", self.channel, exc)
            return
        if origin == self.instance_id or self._apply is None:
            return
        await self._apply_logged(params, f"broadcast from {origin}")

    async def _apply_logged(self, params: Any, source: str) -> None:
        assert self._apply is not None
        try:
            await self._apply(params)
            self.applied_remote += 1
        except Exception as exc:
            log.error("parameters from %s not applied: %s", source, exc)

    async def _pop_updates(self) -> None:
        failures = 0
        while True:
            try:
                item = await self.client.brpop([self.updates_list], timeout=1)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("reading %s failed: %s", self.updates_list, exc)
                await asyncio.sleep(min(2.0, 0.1 * 2**failures))
                continue
            if item is None:
                continue
            try:
                params = json.loads(item[1])
            except ValueError as exc:
                log.error("%s: update is not JSON: %s", self.updates_list, exc)
                continue
            await self._apply_logged(params, self.updates_list)
            if isinstance(params, dict):
                await self.publish(params)

    async def close(self) -> None:
        """Stop listening and close the connection."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.client.aclose()


__all__ = ["ParameterBroadcast"]
