"""``ListClaims``: taking items off a Redis list so that a crash loses none of them.

``BRPOP`` hands an item to one instance and forgets it: if that instance dies before it
has finished the item, the item is gone. Here an item is moved atomically into the
taker's own processing list and removed from there only once it is finished:

- ``take`` moves the oldest item (``BLMOVE <queue> <queue>:processing:<owner> RIGHT
  LEFT``; producers ``LPUSH``) into the processing list;
- the owner removes it when finished, with ``finish(pipe, item)`` inside the same
  transaction as whatever finishing writes, so "written" and "removed" cannot part;
- ``beat`` keeps ``<queue>:alive:<owner>`` alive for three heartbeat periods;
- ``recover_dead`` moves the processing lists of owners whose heartbeat key expired back
  onto the queue, at its consuming end and in their original order, so they are taken
  next; ``requeue`` does the same for one list (an owner's own leftovers at start, or
  its unfinished items when it leaves). A list moves in one step (a Lua script): a
  reader blocked on the queue cannot take a later item before the earlier ones are back;
- ``count_delivery`` counts each take of an item in the hash ``<queue>:deliveries``
  (field: a hash of the item's bytes, so identical items share a count); ``finish``
  removes the count with the item, so an item that keeps killing its owners is seen to
  have been taken too often and can be dead-lettered by its caller.

Usage::

    claims = ListClaims(client, "PARAMETER_UPDATES", "instance-1", heartbeat_s=10)
    await claims.beat()
    item = await claims.take(1.0)
    if item is not None:
        pipe = client.pipeline(transaction=True)
        ...  # the writes that finish the item
        claims.finish(pipe, item)
        await pipe.execute()

Processing lists are found with ``SCAN MATCH <queue>:processing:*``, the queue name
escaped, so a name with ``*``, ``?`` or ``[`` matches only itself. An owner id may not
contain ``:processing:``: such keys are taken for the processing lists of another queue
whose name starts like this one's (``<queue>:processing:<x>``) and left alone.

An owner whose heartbeat expired while it was still working (a long network
partition) may finish an item that another instance took again: delivery is at least
once, and exactly once when nothing crashes.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import redis.asyncio as aioredis

from aios_grpc.redis.retry import TRANSIENT, Retry

log = logging.getLogger("aios_grpc.redis")

# KEYS[1] processing list, KEYS[2] queue. The newest item first, each onto the consuming
# end, so the oldest ends up taken first; all of it before any blocked reader is served.
_REQUEUE = """
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do
  moved = moved + 1
end
return moved
"""

_SEPARATOR = ":processing:"


def item_key(item: bytes) -> str:
    """The field of ``item`` in the delivery-count hash (items can be large; this is short)."""
    return hashlib.blake2b(item, digest_size=16).hexdigest()


def _glob_escape(text: str) -> str:
    """``text`` with the characters Redis's MATCH treats specially escaped."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class ListClaims:
    """One owner's processing list and heartbeat for the Redis list ``queue``."""

    def __init__(self, client: aioredis.Redis, queue: str, owner: str, *, heartbeat_s: float = 10.0) -> None:
        if not queue:
            raise ValueError("ListClaims needs a queue name")
        if not owner:
            raise ValueError("ListClaims needs an owner (the instance id)")
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be positive, got {heartbeat_s}")
        if _SEPARATOR in owner:
            raise ValueError(f"an owner id may not contain {_SEPARATOR!r}: {owner!r}")
        self.client = client
        self.queue = queue
        self.owner = owner
        self.heartbeat_s = heartbeat_s
        self.processing = self.processing_of(owner)
        self.alive = f"{queue}:alive:{owner}"
        self.deliveries = f"{queue}:deliveries"
        self._requeue = client.register_script(_REQUEUE)

    def processing_of(self, owner: str) -> str:
        """The processing list of ``owner``."""
        return f"{self.queue}{_SEPARATOR}{owner}"

    async def beat(self) -> None:
        """Mark this owner alive for three heartbeat periods."""
        await self.client.set(self.alive, b"1", px=max(1, int(self.heartbeat_s * 3000)))

    async def leave(self) -> int:
        """Give unfinished items back to the queue and drop the heartbeat (a clean stop)."""
        moved = await self.requeue(self.processing)
        await self.client.delete(self.alive)
        return moved

    async def take(self, timeout_s: float) -> bytes | None:
        """Move the oldest item into this owner's processing list; ``None`` after ``timeout_s``."""
        item: Any = await self.client.blmove(
            self.queue,
            self.processing,
            timeout_s,  # type: ignore[arg-type]  # redis-py's stub says int; Redis takes seconds as a float
            "RIGHT",
            "LEFT",
        )
        if item is None:
            return None
        return item.encode() if isinstance(item, str) else bytes(item)

    async def count_delivery(self, item: bytes) -> int:
        """Count a take of ``item`` (just taken by this owner); its number, 1 the first time.

        Retries a lost connection a few times; when Redis cannot say, returns 1 (the item is
        this owner's to finish, counted or not) and logs why.
        """
        counting = Retry(f"counting a delivery on {self.deliveries}")
        try:
            return int(await counting.call(lambda: self.client.hincrby(self.deliveries, item_key(item), 1), attempts=5))
        except TRANSIENT:
            pass  # logged by Retry
        except Exception as exc:
            log.error("counting a delivery on %s failed: %s: %s", self.deliveries, type(exc).__name__, exc)
        return 1

    def finish(self, pipe: Any, item: bytes, *, forget: bool = True) -> None:
        """Add the removal of ``item`` from this owner's processing list to ``pipe``.

        With ``forget`` (the item is done with) its delivery count goes too; without it
        (the caller puts the item back onto the queue) the count stays, so that the next
        take counts on.
        """
        pipe.lrem(self.processing, -1, item)
        if forget:
            pipe.hdel(self.deliveries, item_key(item))

    async def requeue(self, processing: str) -> int:
        """Move every item of ``processing`` back onto the queue, to be taken next, in order."""
        moved = int(await self._requeue(keys=[processing, self.queue]))
        if moved:
            log.info("moved %d unfinished items of %s back onto %s", moved, processing, self.queue)
        return moved

    async def recover_dead(self) -> int:
        """Requeue the processing lists of owners whose heartbeat expired; items moved."""
        prefix = self.processing_of("")
        names: list[Any] = [n async for n in self.client.scan_iter(match=_glob_escape(prefix) + "*", count=200)]
        moved = 0
        for name in names:
            key = name.decode() if isinstance(name, bytes) else str(name)
            owner = key[len(prefix) :]
            # ``<queue>:processing:<x>:processing:<owner>`` is a list of the queue
            # ``<queue>:processing:<x>``, not one of ours.
            if owner == self.owner or _SEPARATOR in owner:
                continue
            if not await self.client.exists(f"{self.queue}:alive:{owner}"):
                moved += await self.requeue(key)
        return moved


__all__ = ["ListClaims", "item_key"]
