"""``Outbox``: one Process stream's answers on their way out to its writer.

HOT PATH: ``put_nowait`` and ``take`` run per answer on the event loop's thread (see
``service/stream.py``); keep them flat.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

END = object()
"""What ``Outbox.get`` gives once the outbox ended and is empty."""


class Outbox:
    """One stream's answers on their way out: a single-consumer queue, cheaper than asyncio.Queue.

    Not bounded itself: the stream's window bounds the terminal results in it, each
    packet's ``PartialGate`` (``AIOS_MAX_UNSENT_PARTIALS``) the partials. ``end()``
    marks the last answer in: ``get`` gives ``END`` once the items before it are taken.
    """

    __slots__ = ("_items", "_waiter", "ended")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.ended = False

    def put_nowait(self, item: Any) -> None:
        """Add an item and wake the consumer."""
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end(self) -> None:
        """Nothing follows: the consumer gets ``END`` after the items already in."""
        self.ended = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        """Whether no item is waiting."""
        return not self._items

    def get_nowait(self) -> Any:
        """The oldest item (call only when not ``empty()``)."""
        return self._items.popleft()

    def take(self, first: Any, limit: int) -> list[Any]:
        """``first`` and the items waiting after it, ``limit`` at most in all."""
        items = self._items
        if len(items) < limit:
            taken = [first, *items]
            items.clear()
            return taken
        return [first, *[items.popleft() for _ in range(limit - 1)]]

    async def get(self) -> Any:
        """The oldest item, waiting for one; ``END`` once ended and empty."""
        while not self._items:
            if self.ended:
                return END
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


__all__ = ["END", "Outbox"]
