"""Routing policy: which targets a packet may name, and how a down target is retried.

``Backoff`` is the package's one back-off formula (``aios_grpc.backoff``), re-exported here.

>>> allow = AllowList(["127.0.0.1:*", "*.svc.cluster.local:50051"], ["results*"])
>>> allow.allows_address("127.0.0.1:6379"), allow.allows_address("evil.example:80")
(True, False)
>>> Backoff(0.1, 1.0).delay(10, jitter=False)
1.0
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from aios_grpc.backoff import Backoff
from aios_grpc.errors import PermissionDenied
from aios_grpc.routing.pointer import GRPC, Target


class AllowList:
    """Glob patterns (``fnmatch``) for target ``host:port`` and for queue names.

    An empty address list allows no target at all: a packet cannot make a block
    connect anywhere unless the operator said so.
    """

    def __init__(self, addresses: Iterable[str], queues: Iterable[str] = ("*",)) -> None:
        self.addresses = [a.strip() for a in addresses if a.strip()]
        self.queues = [q.strip() for q in queues if q.strip()]

    def allows_address(self, address: str) -> bool:
        """Whether ``host:port`` matches one of the address patterns."""
        return any(fnmatchcase(address, pattern) for pattern in self.addresses)

    def allows_queue(self, queue_name: str) -> bool:
        """Whether a Redis queue name matches one of the queue patterns."""
        return any(fnmatchcase(queue_name, pattern) for pattern in self.queues)

    def check(self, target: Target) -> None:
        """Raise ``PermissionDenied`` when ``target`` is off the allow-list."""
        if not self.allows_address(target.address):
            raise PermissionDenied(
                f"routing target {target.describe()} is not allowed (AIOS_ROUTE_ALLOW={self.addresses or '[]'})",
                stage="route",
            )
        if target.transport != GRPC and not self.allows_queue(target.queue_name):
            raise PermissionDenied(
                f"routing queue {target.queue_name!r} on {target.address} is not allowed "
                f"(AIOS_ROUTE_ALLOW_QUEUES={self.queues or '[]'})",
                stage="route",
            )


__all__ = ["AllowList", "Backoff"]
