"""``OrderedReplies``: per-stream release of results in each session's arrival order.

Workers finish packets in any order; a stream's answers for one session must come
back in the order its packets arrived. Each packet takes a slot when it is read; a
slot's results go out at once when every earlier packet of the same session on the
stream is answered, and are held until then otherwise.

A partial output keeps its place in its packet's bound of unsent partials (see
``Partial``) while it is held here: the slot defers it, and the emitter calls
``sent()`` once it is written. The bound is per packet, so a packet whose partials
are held never takes places from the earlier packet it waits for. ``close()`` (the
stream is gone) drops what is held, which stops those packets' producers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from aios_grpc.job import Kind, Result

Emit = Callable[[str, int, Result], None]


_PARTIAL = Kind.PARTIAL


class _Slot:
    __slots__ = ("done", "held", "owner", "seq_no", "session_id")

    def __init__(self, owner: OrderedReplies, session_id: str, seq_no: int) -> None:
        self.owner = owner
        self.session_id = session_id
        self.seq_no = seq_no
        self.held: list[Result] | None = None
        self.done = False

    @property
    def gone(self) -> bool:
        """Whether the stream this slot answers on is closed (its caller went away): the router
        stops routing a packet whose caller is gone (``job.reply.gone``)."""
        return self.owner.closed

    def __call__(self, result: Result) -> None:
        # Runs once per answer: kept in one frame, with the in-order case first.
        if self.done:
            result.drop()  # a partial after the terminal answer has nowhere to go
            return  # a second terminal answer would break "exactly once"; ignore it
        owner = self.owner
        queue = owner._sessions[self.session_id]
        terminal = result.kind is not _PARTIAL
        if queue[0] is not self:
            if not terminal:
                if owner.closed:
                    result.drop()
                    return
                result.defer()
            if self.held is None:
                self.held = []
            self.held.append(result)
            if terminal:
                self.done = True
            return
        if not terminal:
            result.defer()
            owner._emit(self.session_id, self.seq_no, result)
            return
        # Count the slot closed before emitting, so that the emitter sees
        # open_slots == 0 on the last terminal result of the stream.
        self.done = True
        owner.open_slots -= 1
        queue.popleft()
        owner._emit(self.session_id, self.seq_no, result)
        if queue:
            head = queue[0]
            if not head.done and not head.held:
                return  # the next packet is still running: nothing to release
            owner._release(queue)
        if not queue:
            owner._sessions.pop(self.session_id, None)


class OrderedReplies:
    """Slots for one stream's packets; ``emit(session_id, seq_no, result)`` sends.

    ``emit`` takes over each partial: it calls ``result.sent()`` once the partial is
    written, or ``result.drop()`` when it never will be.
    """

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._sessions: dict[str, deque[_Slot]] = {}
        self.open_slots = 0
        self.closed = False

    def close(self) -> None:
        """The stream is gone: drop every partial held and each one that comes later."""
        self.closed = True
        for queue in self._sessions.values():
            for slot in queue:
                held, slot.held = slot.held, None
                for result in held or ():
                    result.drop()

    def slot(self, session_id: str, seq_no: int) -> _Slot:
        """A reply callable for the next packet of ``session_id`` on this stream."""
        slot = _Slot(self, session_id, seq_no)
        queue = self._sessions.get(session_id)
        if queue is None:
            queue = self._sessions[session_id] = deque()
        queue.append(slot)
        self.open_slots += 1
        return slot

    def _release(self, queue: deque[_Slot]) -> None:
        """Send what the packets at the head of ``queue`` held back while they waited."""
        while queue:
            head = queue[0]
            held, head.held = head.held, None
            if head.done:
                self.open_slots -= 1
                queue.popleft()
            for item in held or ():
                self._emit(head.session_id, head.seq_no, item)
            if not head.done:
                break
