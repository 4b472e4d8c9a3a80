"""``ParameterBroadcast``: SetParameters on one instance reaches ``on_update`` on all of them.

Updates are durable, so an instance that was cut off from Redis, or started later,
still gets them:

- An instance that applied parameters appends them to the Redis Stream
  ``<prefix>:params:<block_id>`` (``XADD ... MAXLEN ~ 1000``, fields ``origin`` and
  ``params``) and, in the same transaction, merges them into the hash
  ``<prefix>:params:<block_id>:current`` (one field per top-level key, JSON values):
  the block's current parameters.
- Every instance reads the stream from the last id it saw and applies the entries of
  other instances in order. After a lost connection it goes on from that id, so
  updates sent meanwhile are applied once it is back.
- On start an instance applies the current parameters (the hash) and reads the stream
  from the id taken in the same transaction. If entries it never read were trimmed
  away (it was gone for more than ~1000 updates), it applies the hash again.
- Updates applied while Redis is unreachable are kept (up to 1000) and written when it
  is back; ``publish`` waits for the write at most a second.
- The original SDK's ``PARAMETER_UPDATES`` list is honoured: whichever instance takes
  an update (a JSON object) applies it and broadcasts it. Taking is crash-safe
  (``ListClaims``): the item moves into ``<list>:processing:<instance>`` and is removed
  in the same transaction that writes its broadcast, so an instance that dies between
  the two leaves it there, and once its heartbeat ``<list>:alive:<instance>`` expired
  another instance moves it back and applies it. Takes are counted per item in
  ``<list>:deliveries``: an update taken more than ``max_deliveries`` times (it kills
  every instance that applies it) is not applied again. It, an item that is not a JSON
  object, and one that ``on_update`` rejects go to the list ``<list>:dead`` with the
  error.

Updates that fail on an instance are logged there; the caller of SetParameters saw
its own instance's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from aios_grpc._text import quote
from aios_grpc.redis.claims import ListClaims
from aios_grpc.redis.retry import TRANSIENT, Retry

log = logging.getLogger("aios_grpc.parameters")

Apply = Callable[[dict[str, Any]], Awaitable[Any]]

# Entries the stream keeps: enough for an instance that was away a while to catch up
# entry by entry; one away longer applies the current parameters instead.
MAX_LEN = 1000
# Updates kept while Redis is unreachable; past this the oldest are dropped (logged),
# though the current parameters still reach a later instance through a later update.
MAX_OUTBOX = 1000


class ParameterBroadcast:
    """Writes applied parameters to a Redis Stream and applies those of other instances."""

    def __init__(
        self,
        url: str,
        block_id: str,
        instance_id: str,
        *,
        prefix: str = "aios",
        updates_list: str = "PARAMETER_UPDATES",
        heartbeat_s: float = 10.0,
        max_deliveries: int = 5,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, got {max_deliveries}")
        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=2.0)
        self.stream = f"{prefix}:params:{block_id}"
        self.current = f"{prefix}:params:{block_id}:current"
        self.instance_id = instance_id
        self.updates_list = updates_list
        self.claims = (
            ListClaims(self.client, updates_list, instance_id, heartbeat_s=heartbeat_s) if updates_list else None
        )
        self.dead_letter = f"{updates_list}:dead"
        # An update taken more often than this (it kills its instances) is dead-lettered.
        self.max_deliveries = max_deliveries
        self.recovered = 0  # list items moved back from dead instances (or this one's last run)
        self.applied_remote = 0
        self.last_id: bytes | None = None  # None: not synced with Redis yet
        self._seen = 0  # stream entries up to last_id (XINFO's entries-added), to notice trimming
        self._apply: Apply | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # (params, waiter, the PARAMETER_UPDATES item it finishes or None)
        self._outbox: deque[tuple[dict[str, Any], asyncio.Future[None], bytes | None]] = deque()
        self._outbox_ready = asyncio.Event()
        self._outbox_drained = asyncio.Event()
        self._synced = asyncio.Event()
        # Loops also check this: redis-py can swallow a cancellation that lands as a
        # blocking read times out, and the task would then read on for ever.
        self._closing = False

    async def start(self, apply: Apply) -> None:
        """Apply the current parameters, then start following updates.

        ``apply(params)`` applies without broadcasting again. Waits at most two seconds
        for Redis: while it is unreachable, start-up goes on and the listener catches up
        once it is back.
        """
        self._apply = apply
        self._tasks.append(asyncio.create_task(self._listen(), name="aios-params-listen"))
        self._tasks.append(asyncio.create_task(self._send(), name="aios-params-send"))
        if self.claims is not None:
            self._tasks.append(asyncio.create_task(self._take_updates(), name="aios-params-list"))
            self._tasks.append(asyncio.create_task(self._watch(), name="aios-params-list-watch"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), 2.0)

    async def publish(self, params: dict[str, Any]) -> None:
        """Broadcast ``params`` to every instance, now and to come (errors are logged, not raised).

        Returns once Redis has the update, or after a second while Redis is unreachable
        (the update is written when it is back).
        """
        await self._enqueue(params, None)

    async def _enqueue(self, params: dict[str, Any], item: bytes | None) -> None:
        if len(self._outbox) >= MAX_OUTBOX:
            dropped, dropped_waiter, _ = self._outbox.popleft()
            if not dropped_waiter.done():
                dropped_waiter.set_result(None)
            # A dropped list item stays in the processing list: it is taken again after
            # close() gives it back, or after this instance's heartbeat expired.
            log.error("parameter outbox full (Redis unreachable); dropped the update %.200s", json.dumps(dropped))
        waiter = asyncio.get_running_loop().create_future()
        self._outbox.append((params, waiter, item))
        self._outbox_drained.clear()
        self._outbox_ready.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), 1.0)

    # -- writing ---------------------------------------------------------------------

    async def _send(self) -> None:
        sending = Retry(f"broadcasting parameters on {self.stream}")
        while not self._closing:
            await self._outbox_ready.wait()
            if not self._outbox:
                self._outbox_ready.clear()
                continue
            params, waiter, item = self._outbox[0]
            try:
                async with sending:
                    await self._write(params, item)
            except Exception as exc:
                # Not retryable (a key of the wrong type...): this update is not broadcast.
                log.error("parameter broadcast on %s failed: %s: %s", self.stream, type(exc).__name__, exc)
            if sending.failed:
                continue  # tried again after the pause
            if self._outbox and self._outbox[0][1] is waiter:
                self._outbox.popleft()
            if not self._outbox:
                self._outbox_drained.set()
            if not waiter.done():
                waiter.set_result(None)

    async def _write(self, params: dict[str, Any], item: bytes | None) -> None:
        message = {"origin": self.instance_id, "params": json.dumps(params)}
        pipe = self.client.pipeline(transaction=True)
        if params:
            pipe.hset(self.current, mapping={k: json.dumps(v) for k, v in params.items()})
        pipe.xadd(self.stream, message, maxlen=MAX_LEN, approximate=True)  # type: ignore[arg-type]
        if item is not None and self.claims is not None:
            # In the same transaction: a crash leaves the item either broadcast and
            # removed, or neither (then another instance takes it again).
            self.claims.finish(pipe, item)
        await pipe.execute()

    # -- reading ---------------------------------------------------------------------

    async def _sync(self) -> None:
        """Apply the current parameters and read the stream from the id taken with them."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.current)
        pipe.xrevrange(self.stream, count=1)
        # XINFO on a missing stream is an error; in a transaction it only fails its own reply.
        pipe.xinfo_stream(self.stream)
        current, last, info = await pipe.execute(raise_on_error=False)
        if isinstance(current, Exception):
            raise current
        self.last_id = last[0][0] if isinstance(last, list) and last else b"0-0"
        self._seen = int(info["entries-added"]) if isinstance(info, dict) else 0
        params: dict[str, Any] = {}
        for key, value in (current or {}).items():
            try:
                params[key.decode()] = json.loads(value)
            except (ValueError, UnicodeDecodeError) as exc:
                log.error("%s: parameter %s is not JSON: %s", self.current, quote(key), exc)
        if params:
            await self._apply_logged(params, self.current)
        self._synced.set()  # start() returns with the current parameters applied

    async def _missed_entries(self) -> bool:
        """Whether entries after ``last_id`` were trimmed away while this instance was gone."""
        try:
            info = await self.client.xinfo_stream(self.stream)
        except ResponseError:
            return False  # no stream (yet, or Redis lost its data): nothing to miss
        return int(info["entries-added"]) - int(info["length"]) > self._seen

    async def _listen(self) -> None:
        reading = Retry(f"reading parameter updates on {self.stream}")
        resync = True
        while not self._closing:
            try:
                if self.last_id is None:
                    await self._sync()
                elif resync and await self._missed_entries():
                    log.warning("%s: updates were trimmed while this instance was away; re-applying", self.stream)
                    await self._sync()
                resync = False
                assert self.last_id is not None
                reply: Any = await self.client.xread({self.stream: self.last_id}, count=100, block=1000)
            except Exception as exc:
                # Any error is retried here (the listener must not die); other than a
                # lost connection it is logged as well.
                resync = True
                if not isinstance(exc, TRANSIENT):
                    log.error("reading parameter updates on %s failed: %s: %s", self.stream, type(exc).__name__, exc)
                await reading.fail(exc)
                continue
            reading.succeeded()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    self._seen += 1
                    await self._on_entry(fields)

    async def _on_entry(self, fields: dict[bytes, bytes]) -> None:
        try:
            origin = fields[b"origin"].decode()
            params = json.loads(fields[b"params"])
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            log.error("bad parameter update on %s: %s", self.stream, exc)
            return
        if origin == self.instance_id or self._apply is None:
            return
        await self._apply_logged(params, f"broadcast from {origin}")

    async def _apply_logged(self, params: Any, source: str) -> str:
        """Apply ``params``; the error text when they were not applied, else ``""``."""
        assert self._apply is not None
        try:
            await self._apply(params)
            self.applied_remote += 1
        except Exception as exc:
            log.error("parameters from %s not applied: %s", source, exc)
            return f"{type(exc).__name__}: {exc}"
        return ""

    async def _take_updates(self) -> None:
        """Take ``PARAMETER_UPDATES`` items one at a time: apply, then broadcast and remove."""
        assert self.claims is not None
        taking = Retry(f"reading {self.updates_list}")
        started = False
        while not self._closing:
            try:
                if not started:
                    await self.claims.beat()
                    # A restarted instance with the same id: what it had taken is taken again.
                    self.recovered += await self.claims.requeue(self.claims.processing)
                    started = True
                item = await self.claims.take(1.0)
            except Exception as exc:
                if not isinstance(exc, TRANSIENT):
                    log.error("reading %s failed: %s: %s", self.updates_list, type(exc).__name__, exc)
                await taking.fail(exc)
                continue
            taking.succeeded()
            if item is not None:
                await self._handle_update(item)

    async def _handle_update(self, item: bytes) -> None:
        assert self.claims is not None
        # Counted before on_update runs: a take that never finishes (the instance dies in
        # on_update, or is killed first) still counts.
        delivered = await self.claims.count_delivery(item)
        if delivered > self.max_deliveries:
            await self._dead(item, f"delivered {delivered} times (AIOS_REDIS_MAX_DELIVERIES={self.max_deliveries})")
            return
        try:
            params = json.loads(item)
        except ValueError as exc:
            await self._dead(item, f"not JSON: {exc}")
            return
        if not isinstance(params, dict):
            await self._dead(item, f"not a JSON object: {type(params).__name__}")
            return
        error = await self._apply_logged(params, self.updates_list)
        if error:
            # Rejected here as SetParameters would have been: not broadcast.
            await self._dead(item, error)
            return
        await self._enqueue(params, item)

    async def _dead(self, item: bytes, error: str) -> None:
        """Move ``item`` from the processing list to the dead-letter list with ``error``."""
        assert self.claims is not None
        log.error("%s: update moved to %s: %s", self.updates_list, self.dead_letter, error)
        record = json.dumps({"item": item.decode(errors="replace"), "error": error, "queue": self.updates_list})
        claims = self.claims

        async def move() -> None:
            pipe = self.client.pipeline(transaction=True)
            claims.finish(pipe, item)
            pipe.lpush(self.dead_letter, record)
            await pipe.execute()

        try:
            await Retry(f"dead-lettering an update of {self.updates_list}").call(move, attempts=5)
        except TRANSIENT:
            pass  # still in the processing list: taken again when this instance is gone
        except Exception as exc:
            # Still in the processing list: taken again when this instance is gone.
            log.error("dead-lettering an update of %s failed: %s: %s", self.updates_list, type(exc).__name__, exc)

    async def _watch(self) -> None:
        """Keep this instance's heartbeat fresh; give dead instances' updates back."""
        assert self.claims is not None
        beating = Retry(f"heartbeat on {self.updates_list}")
        while not self._closing:
            await asyncio.sleep(self.claims.heartbeat_s)
            try:
                await self.claims.beat()
                self.recovered += await self.claims.recover_dead()
            except Exception as exc:
                await beating.fail(exc)  # any error: the heartbeat must go on
                continue
            beating.succeeded()

    async def close(self) -> None:
        """Stop listening, give unsent updates a last short try, close the connection."""
        if self._outbox:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox_drained.wait(), 1.0)
        self._closing = True
        self._outbox_ready.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a task whose cancellation was swallowed ends at its next loop check.
            await asyncio.wait(self._tasks, timeout=3.0)
        self._tasks = []
        if self.claims is not None:
            # Updates taken but not broadcast go back now rather than after the heartbeat.
            try:
                await asyncio.wait_for(self.claims.leave(), 2.0)
            except Exception as exc:
                log.warning("%s: unfinished updates return once this heartbeat expires (%s)", self.updates_list, exc)
        await self.client.aclose()


__all__ = ["MAX_LEN", "ParameterBroadcast"]
