"""AIOS_MAX_IN_FLIGHT_PER_SESSION: one session cannot take every worker; the others wait, none lost."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from aios_grpc_client import BlockClient, make_packet

from aios_grpc import OnDataResult
from tests.helpers import wait_for


class Gate:
    """on_data waits on a gate the test opens, counting what runs per session."""

    lock = threading.Lock()
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    gate = threading.Event()

    def __init__(self, context: Any) -> None:
        pass

    def on_data(self, entry: Any) -> Any:
        sid = entry.packet.session_id
        with Gate.lock:
            Gate.running[sid] += 1
            Gate.peak[sid] = max(Gate.peak[sid], Gate.running[sid])
        Gate.gate.wait(30)
        with Gate.lock:
            Gate.running[sid] -= 1
        return True, OnDataResult(output={"seq": entry.packet.seq_no})


def test_a_session_runs_at_most_its_cap_and_the_rest_wait(serve: Any) -> None:
    Gate.running.clear()
    Gate.peak.clear()
    Gate.gate.clear()
    served = serve(Gate, workers=4, max_chunk=1, gather_s=0, max_in_flight_per_session=2)
    with BlockClient(served.address) as one, BlockClient(served.address) as two:
        greedy = one.stream(timeout=60)
        for k in range(6):
            greedy.send(make_packet({}, session_id="greedy", seq_no=k))
        wait_for(lambda: Gate.running["greedy"] == 2, what="two greedy packets running")
        other = two.stream(timeout=60)
        for k in range(2):
            other.send(make_packet({}, session_id="other", seq_no=k))
        # The other session gets the workers the greedy one may not take.
        wait_for(lambda: Gate.running["other"] == 2, what="the other session running")
        assert Gate.running["greedy"] == 2
        Gate.gate.set()
        greedy.close()
        other.close()
        got = list(greedy.results())
        rest = list(other.results())
    assert [r.data["seq"] for r in got] == list(range(6)) and all(r.ok for r in got)
    assert [r.data["seq"] for r in rest] == [0, 1]
    assert Gate.peak["greedy"] == 2 and Gate.peak["other"] == 2
    assert served.server.scheduler.session_cap.held == 0
