"""OrderedReplies: each session's answers leave in arrival order, partials included, and nothing is kept after."""

from __future__ import annotations

import random

from aios_grpc.job import Kind, Result
from aios_grpc.service.ordering import OrderedReplies


def _run(order: list[int], sessions: int, per_session: int, partials: bool) -> tuple[list, OrderedReplies]:
    sent: list = []
    replies = OrderedReplies(lambda s, n, r: sent.append((s, n, r.kind)))
    slots = [replies.slot(f"s{k}", n) for n in range(per_session) for k in range(sessions)]
    for i in order:
        if partials:
            slots[i](Result(Kind.PARTIAL))
        slots[i](Result(Kind.OK))
        slots[i](Result(Kind.ERROR))  # a second terminal answer is ignored
    return sent, replies


def test_answers_in_any_completion_order_leave_in_arrival_order_per_session():
    rng = random.Random(7)
    for partials in (False, True):
        for _ in range(50):
            sessions, per_session = rng.randint(1, 4), rng.randint(1, 6)
            order = list(range(sessions * per_session))
            rng.shuffle(order)
            sent, replies = _run(order, sessions, per_session, partials)
            for k in range(sessions):
                mine = [(n, kind) for s, n, kind in sent if s == f"s{k}"]
                expected = [
                    (n, kind) for n in range(per_session) for kind in ([Kind.PARTIAL] if partials else []) + [Kind.OK]
                ]
                assert mine == expected
            assert replies.open_slots == 0
            assert replies._sessions == {}  # no session left behind once all is answered
