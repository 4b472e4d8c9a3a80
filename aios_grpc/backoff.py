"""``Backoff``: the one back-off formula, for Redis retries and routing links alike.

Capped exponential, ``min(cap, initial * 2**n)`` after ``n`` failures in a row, times a
random 0.5-1 unless ``jitter=False``. It imports nothing of the package, so both the
Redis wing (``aios_grpc.redis.retry``) and routing (``aios_grpc.routing``) use it.

>>> Backoff(0.1, 1.0).delay(10, jitter=False)
1.0
>>> Backoff(0.05, 2.0).delay(1, jitter=False)
0.1
"""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with jitter: ``min(cap, initial * 2**n)``, times 0.5-1."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s

    def delay(self, failures: int, *, jitter: bool = True) -> float:
        """Seconds to wait after ``failures`` failed attempts in a row."""
        base = min(self.max_s, self.initial_s * (2 ** min(failures, 30)))
        # Jitter spreads the reconnects of many senders after a downstream restart.
        return float(base * random.uniform(0.5, 1.0)) if jitter else float(base)


__all__ = ["Backoff"]
