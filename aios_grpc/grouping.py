"""``Muxer``, ``Batcher`` and ``TimeBasedBatcher``: the seed's grouping helpers.

A block returns a ``Muxer`` from ``get_muxer()`` and the scheduler merges packets
for it. The batchers keep working when used by hand inside ``on_data`` as in the
original SDK; a block that defines ``on_batch`` and returns one from
``get_batcher()`` gets batches formed by the scheduler instead.

>>> b = Batcher(N=2)
>>> b.add_to_batch("a") is None
True
>>> b.add_to_batch("b")
['a', 'b']
"""

from __future__ import annotations

import threading
import time
from typing import Any


class Muxer:
    """Merge ``N`` packets with the same ``(session_id, seq_no)`` into one.

    The merged packet's ``data`` is ``{"inputs": [...]}`` in arrival order and its
    files are concatenated. ``timeout_s`` bounds how long an incomplete group waits;
    ``max_open_groups`` bounds how many groups may wait at once (None: settings).
    """

    def __init__(self, N: int = 1, timeout_s: float | None = None, max_open_groups: int | None = None) -> None:
        if int(N) < 1:
            raise ValueError(f"Muxer N must be 1 or more, got {N}")
        # Checked here: a zero or negative value would evict every group at once or refuse
        # every packet, far from the line that set it.
        if timeout_s is not None and not float(timeout_s) > 0:
            raise ValueError(f"Muxer timeout_s must be more than 0 (or None for AIOS_MUX_TIMEOUT_S), got {timeout_s}")
        if max_open_groups is not None and int(max_open_groups) < 1:
            raise ValueError(
                f"Muxer max_open_groups must be 1 or more (or None for AIOS_MUX_MAX_OPEN_GROUPS), got {max_open_groups}"
            )
        self.N = int(N)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.max_open_groups = None if max_open_groups is None else int(max_open_groups)


class Batcher:
    """Collect ``N`` items and hand them out together.

    By hand (the original use): ``add_to_batch(item)`` returns the batch once ``N``
    items are in, else None. Given to the scheduler (``get_batcher()``), it closes a
    batch at ``N`` entries or as soon as no more work is queued.
    """

    kind = "batcher"

    def __init__(self, N: int) -> None:
        if int(N) < 1:
            raise ValueError(f"Batcher N must be 1 or more, got {N}")
        self.N = int(N)
        self.T = 0.0
        self.batch: list[Any] = []
        self._lock = threading.Lock()

    def add_to_batch(self, item: Any) -> list[Any] | None:
        """Add one item; the full batch when it reached ``N``, else None."""
        with self._lock:
            self.batch.append(item)
            if len(self.batch) >= self.N:
                full, self.batch = self.batch, []
                return full
            return None

    def flush(self) -> list[Any]:
        """Hand out whatever is collected (possibly empty)."""
        with self._lock:
            out, self.batch = self.batch, []
            return out


class TimeBasedBatcher(Batcher):
    """A ``Batcher`` that also closes a batch ``T`` seconds after its first item.

    By hand, ``add_to_batch`` returns the batch when it is full or when ``T`` has
    passed since its first item; ``check_timeout()`` returns an overdue batch without
    adding anything (call it from a timer). Given to the scheduler, a batch closes
    at ``N`` entries, ``T`` seconds after its first entry, or as soon as no more work
    is queued, so a lone request never waits ``T``.
    """

    kind = "time"

    def __init__(self, N: int, T: float) -> None:
        super().__init__(N)
        if float(T) < 0:
            raise ValueError(f"TimeBasedBatcher T must be 0 or more, got {T}")
        self.T = float(T)
        self._first = 0.0

    def add_to_batch(self, item: Any) -> list[Any] | None:
        with self._lock:
            if not self.batch:
                self._first = time.monotonic()
            self.batch.append(item)
            if len(self.batch) >= self.N or time.monotonic() - self._first >= self.T:
                full, self.batch = self.batch, []
                return full
            return None

    def check_timeout(self) -> list[Any] | None:
        """The collected batch if ``T`` has passed since its first item, else None."""
        with self._lock:
            if self.batch and time.monotonic() - self._first >= self.T:
                full, self.batch = self.batch, []
                return full
            return None


__all__ = ["Batcher", "Muxer", "TimeBasedBatcher"]
