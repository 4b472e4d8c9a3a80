"""``SessionCap``: at most ``limit`` packets of one session run at once (``AIOS_MAX_IN_FLIGHT_PER_SESSION``).

One caller (one session id) cannot take every worker: a packet over its session's cap
waits here, in arrival order, counted in flight but not queued, and goes to the
scheduler's queue when one of its session's running packets is answered. None is lost
or refused; a server that stops answers the waiting ones UNAVAILABLE. With a ``Muxer``
the cap counts merged packets (a group's members are not held apart, or a cap below
``N`` would never let a group complete).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from aios_grpc.job import Job


class SessionCap:
    """Per-session running counts and the packets waiting for their session's turn."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: dict[str, int] = {}
        self._waiting: dict[str, deque[Job]] = {}
        self._counted: dict[Job, str] = {}  # running jobs -> their session

    @property
    def held(self) -> int:
        """Packets waiting for their session's turn."""
        return sum(len(q) for q in self._waiting.values())

    def admit(self, job: Job) -> bool:
        """Whether ``job`` may run now; if not it waits (``release`` hands it out later)."""
        sid = job.packet.session_id
        running = self._running.get(sid, 0)
        if running < self.limit:
            self._running[sid] = running + 1
            self._counted[job] = sid
            return True
        self._waiting.setdefault(sid, deque()).append(job)
        return False

    def release(self, jobs: Iterable[Job]) -> list[Job]:
        """``jobs`` were answered: the waiting jobs that may run now, in arrival order."""
        ready: list[Job] = []
        for job in jobs:
            sid = self._counted.pop(job, None)
            if sid is None:
                continue  # never counted (a muxer member, or refused before it ran)
            queue = self._waiting.get(sid)
            if queue:
                nxt = queue.popleft()
                if not queue:
                    del self._waiting[sid]
                self._counted[nxt] = sid  # takes the answered job's place
                ready.append(nxt)
            elif self._running[sid] > 1:
                self._running[sid] -= 1
            else:
                del self._running[sid]
        return ready

    def flush(self) -> list[Job]:
        """Every waiting job (to answer), forgotten here."""
        jobs = [job for queue in self._waiting.values() for job in queue]
        self._waiting.clear()
        return jobs


__all__ = ["SessionCap"]
