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

import copy
import json
import threading
import time
from collections import defaultdict
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
        # The seed's buffers: the packets of each open group and how many arrived.
        self.store: defaultdict[tuple[str, int], list[Any]] = defaultdict(list)
        self.counts: defaultdict[tuple[str, int], int] = defaultdict(int)

    def process_packet(self, packet: Any) -> Any:
        """Add one packet; the merged packet once its group has ``N`` packets, else None.

        With ``N == 1`` the packet itself is returned. A subclass may override this
        (to drop, rewrite or group packets its own way) and the server calls it for
        each packet; a packet it holds must be kept in ``self.store[(session_id,
        seq_no)]`` (as this one does), one it returns None for and does not keep there
        counts as dropped and is answered OK without output. See docs/scheduler.md.

        >>> from aios_grpc.packet import AIOSPacket
        >>> m = Muxer(N=2)
        >>> m.process_packet(AIOSPacket(session_id="s", seq_no=1, data='{"a": 1}')) is None
        True
        >>> m.process_packet(AIOSPacket(session_id="s", seq_no=1, data='{"b": 2}')).data
        {'inputs': [{'a': 1}, {'b': 2}]}
        """
        if self.N == 1:
            return packet
        key = (packet.session_id, packet.seq_no)
        self.store[key].append(packet)
        self.counts[key] += 1
        if self.counts[key] >= self.N:
            merged = self._merge_packets(self.store[key])
            del self.store[key]
            del self.counts[key]
            return merged
        return None

    def _merge_packets(self, packets: list[Any]) -> Any:
        """One packet from ``packets``: a copy of the first with ``data = {"inputs": [...]}``
        (each member's data parsed from JSON, in order) and the members' files concatenated.

        A subclass may override it; the server then calls it for each complete group
        (the group is still formed by the server, with its bounds and timeout).
        """
        merged = copy.deepcopy(packets[0])
        merged.data = {"inputs": [_data_of(p) for p in packets]}
        merged.files = [f for p in packets for f in p.files]
        return merged

    def forget(self, key: tuple[str, int]) -> None:
        """Drop what ``store`` and ``counts`` hold for ``key`` (the server calls it when it
        evicts or flushes that group, so an overridden ``process_packet`` starts afresh)."""
        self.store.pop(key, None)
        self.counts.pop(key, None)


def _data_of(packet: Any) -> Any:
    """A packet's data as a value: JSON text parsed, an already merged value as is."""
    data = packet.data
    if isinstance(data, str | bytes):
        return json.loads(data) if data else {}
    return data


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
