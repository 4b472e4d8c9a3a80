"""``Job`` and ``Result``: one packet travelling through the scheduler, and its answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from aios_grpc.packet import AIOSPacket


class Kind(IntEnum):
    """What a ``Result`` says (the numbers are ``aios.block.v1.ResultKind``'s)."""

    OK = 1
    ERROR = 2
    PARTIAL = 3


@dataclass(slots=True)
class Result:
    """An answer about one job: terminal (OK, ERROR) or a partial output."""

    kind: Kind
    output: AIOSPacket | None = None
    error: BaseException | None = None

    @property
    def terminal(self) -> bool:
        """True for OK and ERROR."""
        return self.kind is not Kind.PARTIAL


Reply = Callable[[Result], None]


@dataclass(slots=True, eq=False)
class Job:
    """One input packet and where its answers go.

    ``reply`` is called on the event loop's thread, once per partial output and
    exactly once with a terminal result. ``deadline`` is a ``time.monotonic()``
    instant (0: none). ``members`` is set on a job made by the muxer: the jobs it
    merged, each answered with the merged job's terminal result.
    """

    packet: AIOSPacket
    reply: Reply
    received: float = field(default_factory=time.monotonic)
    deadline: float = 0.0
    members: list[Job] | None = None
    source: str = ""
    trace: Any = None
