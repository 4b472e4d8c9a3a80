"""Flow control, bounded queues and per-packet deadlines on the unbatched path."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from aios_grpc_client import BlockClient, make_packet

from tests.blocks.basic import EchoBlock
from tests.runtime.blocks import SlowBlock


def test_slow_block_fast_sender_bounded_and_every_packet_answered(serve):
    window, queued = 8, 4
    served = serve(
        SlowBlock,
        workers=1,
        stream_max_in_flight=window,
        max_queued=queued,
        stream_window_bytes=256 * 1024,
        block_init_parameters={"delay": 0.003},
    )
    sched = served.server.scheduler
    total = 400
    payload = "x" * 16_000
    produced = 0
    peaks = {"in_flight": 0, "queue": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peaks["in_flight"] = max(peaks["in_flight"], sched.in_flight)
            peaks["queue"] = max(peaks["queue"], sched.queue_depth)
            time.sleep(0.002)

    def packets():
        nonlocal produced
        for k in range(total):
            produced += 1
            yield make_packet({"p": payload}, session_id="s", seq_no=k)

    sampler = threading.Thread(target=sample)
    sampler.start()
    gaps = []
    answered = 0
    try:
        with BlockClient(served.address) as client:
            for r in client.process(packets(), timeout=60):
                assert r.ok and r.seq_no == answered
                answered += 1
                gaps.append(produced - answered)
    finally:
        stop.set()
        sampler.join(5)
    assert answered == total
    # The server never holds more than its window of packets; queues stay within bounds.
    assert peaks["in_flight"] <= window
    assert peaks["queue"] <= queued
    # The sender was held back: it was never far ahead of the answers, although it
    # could have produced all 400 at once. Ahead of the answers can be: the window (8),
    # the 256 KiB HTTP/2 window (16 packets of 16 kB) and a few in the client's buffers.
    assert max(gaps) < 60, max(gaps)
    with BlockClient(served.address) as client:
        assert client.management("calls") == {"calls": total}


def test_packet_deadline_passed_in_the_queue_is_not_run(serve):
    served = serve(EchoBlock, workers=1)
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        stream.send(make_packet({"sleep": 0.5}, session_id="s", seq_no=0))
        stream.send(make_packet({"i": 1}, session_id="s", seq_no=1, deadline=time.time() + 0.2))
        stream.send(make_packet({"i": 2}, session_id="s", seq_no=2, deadline=time.time() - 5))
        stream.send(make_packet({"i": 3}, session_id="s", seq_no=3, deadline=time.time() + 30))
        stream.close()
        results = list(stream.results())
        calls = client.management("calls")["calls"]
    assert [r.seq_no for r in results] == [0, 1, 2, 3]
    assert results[0].ok and results[3].ok
    for r in results[1:3]:
        assert r.error.code == grpc.StatusCode.DEADLINE_EXCEEDED and r.error.retryable
    assert calls == 2


def test_stream_deadline_applies_to_its_packets(serve):
    served = serve(EchoBlock, workers=1)
    with BlockClient(served.address) as client:
        with pytest.raises(grpc.RpcError) as err:
            list(client.process([{"sleep": 0.8}, {"i": 1}, {"i": 2}], timeout=0.4))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.8)  # let the first packet finish and the others reach a worker
        assert client.management("calls")["calls"] == 1
