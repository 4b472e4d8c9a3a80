"""Routing policy: which targets a packet may name, and how a down target is retried.

An address pattern is ``host:port``. The host is matched label by label: a ``*`` (or
``?``, ``[...]``) stays within one dot-separated label, so ``10.0.*.*:50051`` never
matches ``10.0.attacker.example:50051`` and ``*.svc:50051`` never matches
``a.b.svc:50051``. A host pattern made only of digits and wildcards (an IPv4
pattern) matches only an IPv4 literal, and a ``[...]`` host pattern only that IPv6
address. The port is matched as one label too. Matching is done on the literal host
the packet names, before anything is resolved: a name off the list is never looked up.

Queue patterns are globs over the whole queue name, and none is allowed by default.
``reserved`` names (the block's own ingress stream and list, its parameter updates
list, and the SDK's keys under ``AIOS_REDIS_KEY_PREFIX``) are allowed only when the
queue list names them exactly, never through a wildcard.

``Backoff`` is the package's one back-off formula (``aios_grpc.backoff``), re-exported here.

>>> allow = AllowList(["127.0.0.1:*", "*.svc.cluster.local:50051"], ["results*"])
>>> allow.allows_address("127.0.0.1:6379"), allow.allows_address("evil.example:80")
(True, False)
>>> allow.allows_address("b.evil.svc.cluster.local:50051")
False
>>> Backoff(0.1, 1.0).delay(10, jitter=False)
1.0
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from aios_grpc._text import quote
from aios_grpc.backoff import Backoff
from aios_grpc.errors import ConfigurationError, PermissionDenied
from aios_grpc.routing.pointer import GRPC, Target

_IPV4_PATTERN = re.compile(r"[0-9*?\[\]!-]+(\.[0-9*?\[\]!-]+){3}")


@dataclass(frozen=True, slots=True)
class _AddressPattern:
    """One ``host:port`` pattern, split once at start-up."""

    labels: tuple[str, ...]  # the host's labels, lower case (empty for an IPv6 pattern)
    ipv6: ipaddress.IPv6Address | None
    ipv4: bool  # matches IPv4 literals only
    port: str

    @classmethod
    def parse(cls, pattern: str) -> _AddressPattern:
        host, sep, port = pattern.rpartition(":")
        if not sep or not host or not port:
            raise ConfigurationError(f"AIOS_ROUTE_ALLOW: {pattern!r} is not a host:port pattern")
        if host.startswith("["):
            try:
                return cls((), ipaddress.IPv6Address(host.strip("[]")), False, port)
            except ValueError:
                raise ConfigurationError(f"AIOS_ROUTE_ALLOW: {pattern!r} has a bad IPv6 address") from None
        labels = tuple(host.lower().split("."))
        if "" in labels:
            raise ConfigurationError(f"AIOS_ROUTE_ALLOW: {pattern!r} has an empty host label")
        return cls(labels, None, bool(_IPV4_PATTERN.fullmatch(host)), port)

    def matches(self, host: str, port: str) -> bool:
        if not fnmatchcase(port, self.port):
            return False
        if self.ipv6 is not None:
            if not host.startswith("["):
                return False
            try:
                return ipaddress.IPv6Address(host.strip("[]")) == self.ipv6
            except ValueError:
                return False
        if self.ipv4:
            try:
                ipaddress.IPv4Address(host)  # dotted quad only: no name is looked up
            except ValueError:
                return False
        labels = host.lower().split(".")
        if len(labels) != len(self.labels):
            return False
        return all(fnmatchcase(label, pattern) for label, pattern in zip(labels, self.labels, strict=True))


class AllowList:
    """Address patterns (``host:port``, a wildcard within one label) and queue name globs.

    An empty address list allows no target at all, and an empty queue list no Redis
    queue: a packet cannot make a block connect or push anywhere unless the operator
    said so. A malformed pattern is a ``ConfigurationError`` (at start-up).
    """

    def __init__(self, addresses: Iterable[str], queues: Iterable[str] = (), reserved: Iterable[str] = ()) -> None:
        self.addresses = [a.strip() for a in addresses if a.strip()]
        self.queues = [q.strip() for q in queues if q.strip()]
        self._patterns = [_AddressPattern.parse(a) for a in self.addresses]
        # A reserved entry ending in ":" reserves every name under that prefix.
        self.reserved = [r for r in reserved if r]
        self._named = set(self.queues)

    def allows_address(self, address: str) -> bool:
        """Whether ``host:port`` matches one of the address patterns."""
        host, _, port = address.rpartition(":")
        return any(p.matches(host, port) for p in self._patterns)

    def allows_queue(self, queue_name: str) -> bool:
        """Whether a Redis queue name matches one of the queue patterns (a reserved one: only by name)."""
        if queue_name in self._named:
            return True
        if self.is_reserved(queue_name):
            return False
        return any(fnmatchcase(queue_name, pattern) for pattern in self.queues)

    def is_reserved(self, queue_name: str) -> bool:
        """Whether ``queue_name`` is one of the block's own queues (a target only when listed by name)."""
        for name in self.reserved:
            if queue_name == name or (name.endswith(":") and queue_name.startswith(name)):
                return True
            if queue_name.startswith(f"{name}:"):  # its dead letters, claims and counters
                return True
        return False

    def check(self, target: Target) -> None:
        """Raise ``PermissionDenied`` when ``target`` is off the allow-list."""
        if not self.allows_address(target.address):
            raise PermissionDenied(
                f"routing target {target.describe()} is not allowed (AIOS_ROUTE_ALLOW={quote(self.addresses or '[]')})",
                stage="route",
            )
        if target.transport != GRPC and not self.allows_queue(target.queue_name):
            why = (
                "a queue of this block, allowed only by name" if self.is_reserved(target.queue_name) else "not allowed"
            )
            raise PermissionDenied(
                f"routing queue {quote(target.queue_name)} on {quote(target.address)} is {why} "
                f"(AIOS_ROUTE_ALLOW_QUEUES={quote(self.queues or '[]')})",
                stage="route",
            )


__all__ = ["AllowList", "Backoff"]
