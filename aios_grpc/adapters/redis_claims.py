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
  its unfinished items when it leaves).

Usage::

    claims = ListClaims(client, "PARAMETER_UPDATES", "instance-1", heartbeat_s=10)
    await claims.beat()
    item = await claims.take(1.0)
    if item is not None:
        pipe = client.pipeline(transaction=True)
        ...  # the writes that finish the item
        claims.finish(pipe, item)
        await pipe.execute()

An owner whose heartbeat expired while it was still working (a long network
partition) may finish an item that another instance took again: delivery is at least
once, and exactly once when nothing crashes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger("aios_grpc.redis")

# At most this many items are moved per list in one call (a list cannot grow while
# nobody moves items into it; this only bounds a pathological one).
_MAX_MOVE = 1_000_000


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
        self.client = client
        self.queue = queue
        self.owner = owner
        self.heartbeat_s = heartbeat_s
        self.processing = self.processing_of(owner)
        self.alive = f"{queue}:alive:{owner}"

    def processing_of(self, owner: str) -> str:
        """The processing list of ``owner``."""
        return f"{self.queue}:processing:{owner}"

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

    def finish(self, pipe: Any, item: bytes) -> None:
        """Add the removal of ``item`` from this owner's processing list to ``pipe``."""
        pipe.lrem(self.processing, -1, item)

    async def requeue(self, processing: str) -> int:
        """Move every item of ``processing`` back onto the queue, to be taken next, in order."""
        moved = 0
        for _ in range(_MAX_MOVE):
            # The newest first, each onto the consuming end: the oldest ends up taken first.
            item = await self.client.lmove(processing, self.queue, "LEFT", "RIGHT")
            if item is None:
                break
            moved += 1
        if moved:
            log.info("moved %d unfinished items of %s back onto %s", moved, processing, self.queue)
        return moved

    async def recover_dead(self) -> int:
        """Requeue the processing lists of owners whose heartbeat expired; items moved."""
        prefix = f"{self.queue}:processing:"
        names: list[Any] = [n async for n in self.client.scan_iter(match=_glob_escape(prefix) + "*", count=200)]
        moved = 0
        for name in names:
            key = name.decode() if isinstance(name, bytes) else str(name)
            owner = key[len(prefix) :]
            if owner == self.owner:
                continue
            if not await self.client.exists(f"{self.queue}:alive:{owner}"):
                moved += await self.requeue(key)
        return moved


__all__ = ["ListClaims"]
