"""Several endpoints for one client: which to call (failover or weighted round-robin), and retries.

An endpoint is a ``host:port`` (or any gRPC target, e.g. ``dns:///block.ns.svc:50051``)
with a ``priority`` (failover: lower goes first), a ``weight`` (round-robin: calls in
proportion) and an optional ``token`` of its own, as the worker SDK's orchestrator list
has them.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

POLICIES = ("failover", "round_robin")

# Codes after which a broken Process stream, or a unary call, is tried again: the server
# was not there, was shedding load, or aborted; never a caller's own mistake.
RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})

# How long a failed endpoint goes to the back of the failover order.
DOWN_FOR_S = 5.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One block instance to call: ``address`` with its ``priority``, ``weight`` and ``token``."""

    address: str
    priority: int = 10
    weight: int = 1
    token: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise ValueError(f"endpoint address must be a non-empty string, got {self.address!r:.80}")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise ValueError(f"endpoint {self.address!r:.80}: priority must be an int, got {self.priority!r:.40}")
        if not isinstance(self.weight, int) or isinstance(self.weight, bool) or self.weight < 1:
            raise ValueError(f"endpoint {self.address!r:.80}: weight must be an int >= 1, got {self.weight!r:.40}")


EndpointLike = str | Endpoint | Mapping[str, Any]


def endpoint_of(item: EndpointLike) -> Endpoint:
    """An ``Endpoint`` from an address, an ``Endpoint``, or a dict with ``address`` (or ``url``)."""
    if isinstance(item, Endpoint):
        return item
    if isinstance(item, str):
        return Endpoint(item)
    if isinstance(item, Mapping):
        known = {"address", "url", "priority", "weight", "token"}
        unknown = sorted(str(k) for k in item if k not in known)
        if unknown:
            raise ValueError(f"unknown endpoint keys {unknown!r:.120}; known: {sorted(known)}")
        address = item.get("address", item.get("url"))
        return Endpoint(
            address=address,  # checked in __post_init__
            priority=item.get("priority", 10),
            weight=item.get("weight", 1),
            token=item.get("token"),
        )
    raise TypeError(f"an endpoint is an address string, an Endpoint or a dict, got {type(item).__name__}")


def endpoints_of(target: EndpointLike | Sequence[EndpointLike]) -> list[Endpoint]:
    """The endpoints of ``target``: one address, or a list of them; at least one."""
    items = [target] if isinstance(target, str | Endpoint | Mapping) else list(target)
    if not items:
        raise ValueError("no endpoints given")
    return [endpoint_of(item) for item in items]


class Picker:
    """The order in which a new call tries the endpoints.

    ``failover``: by priority (lower first, ties in the order given); an endpoint that
    failed within the last few seconds goes last. ``round_robin``: each call starts at
    the next endpoint of a smooth weighted round-robin (weight 2 gets twice the calls of
    weight 1), then tries the others.
    """

    def __init__(self, endpoints: Sequence[Endpoint], policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r:.40}")
        self.endpoints = list(endpoints)
        self.policy = policy
        self._lock = threading.Lock()
        self._down_until = [0.0] * len(self.endpoints)
        self._current = [0] * len(self.endpoints)
        self._by_priority = sorted(range(len(self.endpoints)), key=lambda i: self.endpoints[i].priority)

    def order(self) -> list[int]:
        """Endpoint indexes for one call, first choice first."""
        with self._lock:
            if self.policy == "round_robin":
                total = 0
                for i, endpoint in enumerate(self.endpoints):
                    self._current[i] += endpoint.weight
                    total += endpoint.weight
                first = max(range(len(self.endpoints)), key=lambda i: self._current[i])
                self._current[first] -= total
                n = len(self.endpoints)
                return [(first + k) % n for k in range(n)]
            now = time.monotonic()
            up = [i for i in self._by_priority if self._down_until[i] <= now]
            return up + [i for i in self._by_priority if self._down_until[i] > now]

    def failed(self, index: int) -> None:
        """``index`` broke a call: failover tries it last for a while."""
        with self._lock:
            self._down_until[index] = time.monotonic() + DOWN_FOR_S

    def worked(self, index: int) -> None:
        """``index`` answered: it takes its place by priority again."""
        with self._lock:
            self._down_until[index] = 0.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, how soon and for how long a packet or call is tried again.

    ``retries`` resends per packet (0: never); the n-th waits ``min(max_backoff_s,
    backoff_s * 2**n)`` times a random 0.5-1 (jitter); no resend starts later than
    ``timeout_s`` after the packet was first sent.
    """

    retries: int = 3
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r:.40}")
        for name in ("backoff_s", "max_backoff_s", "timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"retry {name} must be a number >= 0, got {value!r:.40}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before resend number ``attempt`` (1 for the first)."""
        backoff = float(self.backoff_s * 2.0 ** max(0, attempt - 1))
        return min(self.max_backoff_s, backoff) * random.uniform(0.5, 1.0)

    def allows(self, attempt: int, first_sent: float, now: float) -> bool:
        """Whether resend number ``attempt`` may go, for a packet first sent at ``first_sent``."""
        return attempt <= self.retries and now - first_sent <= self.timeout_s


def retryable_call_error(exc: BaseException) -> bool:
    """Whether a failed gRPC call may be tried again (on another endpoint)."""
    return isinstance(exc, grpc.RpcError) and exc.code() in RETRY_CODES


def lb_options(target: str, policy: str, endpoints: int) -> list[tuple[str, Any]]:
    """gRPC's own round-robin over the addresses a single name resolves to (``dns:///...``)."""
    if endpoints == 1 and policy == "round_robin":
        return [("grpc.lb_policy_name", "round_robin")]
    return []


__all__ = [
    "DOWN_FOR_S",
    "POLICIES",
    "RETRY_CODES",
    "Endpoint",
    "EndpointLike",
    "Picker",
    "RetryPolicy",
    "endpoint_of",
    "endpoints_of",
    "lb_options",
    "retryable_call_error",
]
