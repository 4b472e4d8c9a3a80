"""The bound on partial outputs produced but not yet sent (AIOS_MAX_UNSENT_PARTIALS).

A generator ``on_data`` streams partials; a client that stops reading must not make the
server hold more than the bound per packet, a client that goes away must free the
producer (its generator closed, its worker thread back in the pool), and nothing is
lost or answered twice.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aios_grpc_client import BlockClient, make_packet

from aios_grpc import *
from aios_grpc.job import Job, Kind, PartialGate, Result
from aios_grpc.packet import AIOSPacket
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.testing import BlockTester
from tests.helpers import wait_for


class _Counting:
    """Shared bookkeeping: items produced, generators closed early, per packet."""

    def __init__(self, context: Any) -> None:
        self.lock = threading.Lock()
        self.produced = 0
        self.finished = 0  # generators that ran to their end
        self.closed = 0  # generators stopped early (closed by the SDK)

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"produced": self.produced, "finished": self.finished, "closed": self.closed}

    def management(self, action: str, data: Any) -> Any:
        if action == "stats":
            return self.stats()
        raise UnknownAction(action)


class SyncStreamer(_Counting):
    """A plain generator: ``n`` partials of ``size`` bytes, numbered ``i``."""

    def on_data(self, entry: PreProcessResult) -> Any:
        data = entry.packet.json()
        pad = "x" * int(data.get("size", 0))
        done = False
        try:
            for i in range(int(data["n"])):
                with self.lock:
                    self.produced += 1
                yield True, OnDataResult(output={"i": i, "seq": entry.packet.seq_no, "pad": pad})
            done = True
        finally:
            with self.lock:
                if done:
                    self.finished += 1
                else:
                    self.closed += 1


class AsyncStreamer(_Counting):
    """The same as an async generator on the event loop."""

    async def on_data(self, entry: PreProcessResult) -> Any:
        data = entry.packet.json()
        pad = "x" * int(data.get("size", 0))
        done = False
        try:
            for i in range(int(data["n"])):
                with self.lock:
                    self.produced += 1
                yield True, OnDataResult(output={"i": i, "seq": entry.packet.seq_no, "pad": pad})
                await asyncio.sleep(0)
            done = True
        finally:
            with self.lock:
                if done:
                    self.finished += 1
                else:
                    self.closed += 1


def _stream_gates(served: Any) -> list[PartialGate]:
    """The gates of the partials now waiting in the served block's stream outboxes."""
    gates = []
    for stream in list(served.server.servicer._streams):
        for item in list(stream.out._items):
            gate = getattr(item[2], "gate", None) if isinstance(item, tuple) else None
            if gate is not None and gate not in gates:
                gates.append(gate)
    return gates


def _blocked_gate(served: Any) -> PartialGate:
    """Wait until a producer waits for a place, and return its gate."""
    found: list[PartialGate] = []

    def blocked() -> bool:
        found[:] = [g for g in _stream_gates(served) if g.waiting]
        return bool(found)

    wait_for(blocked, what="a producer waiting for a place")
    return found[0]


def _outbox_sizes(served: Any) -> list[int]:
    return [len(stream.out._items) for stream in list(served.server.servicer._streams)]


def _check_all(results: list[Any], seq_no: int, n: int) -> None:
    """``n`` partials numbered 0..n-1 of ``seq_no``, in order, then its OK."""
    assert [r.kind for r in results] == ["partial"] * n + ["ok"], [r.kind for r in results][-3:]
    assert [r.data["i"] for r in results[:-1]] == list(range(n))
    assert all(r.seq_no == seq_no for r in results)


def _stops_reading_then_reads(served: Any, limit: int) -> None:
    total, size = 4000, 16_000  # 64 MB if it were all produced at once
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=120)
        stream.send(make_packet({"n": total, "size": size}, session_id="s", seq_no=7))
        stream.close()
        results = stream.results()
        first = [next(results)]  # then the client stops reading
        gate = _blocked_gate(served)
        stats = client.management("stats")
        # The producer waits: it has at most `limit` partials unsent, and the server
        # holds no more than that for the packet.
        assert gate.peak == limit  # it reached the bound, and never went past it
        assert gate.unsent <= limit
        assert max(_outbox_sizes(served)) <= limit
        assert stats["produced"] < total // 2, stats
        assert stats["closed"] == 0
        # Reading again: every partial and the terminal result, in order.
        rest = first + list(results)
    _check_all(rest, 7, total)
    assert gate.peak <= limit
    stats = BlockClient(served.address).management("stats")
    assert stats == {"produced": total, "finished": 1, "closed": 0}


def test_sync_generator_waits_for_a_client_that_stops_reading(serve):
    limit = 8
    served = serve(SyncStreamer, workers=2, max_unsent_partials=limit, stream_window_bytes=64 * 1024)
    _stops_reading_then_reads(served, limit)


def test_async_generator_waits_for_a_client_that_stops_reading(serve):
    limit = 8
    served = serve(AsyncStreamer, workers=2, max_unsent_partials=limit, stream_window_bytes=64 * 1024)
    _stops_reading_then_reads(served, limit)


def _disconnect_frees_the_producer(served: Any) -> None:
    sched = served.server.scheduler
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=120)
        stream.send(make_packet({"n": 1_000_000, "size": 16_000}, session_id="s", seq_no=1))
        results = stream.results()
        next(results)
        gate = _blocked_gate(served)
        stream.cancel()
        # The producer woke up, its generator was closed and the packet finished.
        wait_for(lambda: gate.closed and not gate.waiting, what="the waiting producer to wake")
        wait_for(lambda: sched.in_flight == 0, what="the packet to finish")
        # With one worker thread, this is served only if that thread is free again
        # (management and on_data both run in it).
        assert client.management("stats")["closed"] == 1
        follow = list(client.process([{"n": 3}], session_id="t"))
    _check_all(follow, 1, 3)


def test_sync_generator_closed_and_its_thread_freed_when_the_client_goes_away(serve):
    served = serve(SyncStreamer, workers=1, max_unsent_partials=4, stream_window_bytes=64 * 1024)
    _disconnect_frees_the_producer(served)


def test_async_generator_closed_when_the_client_goes_away(serve):
    served = serve(AsyncStreamer, workers=1, max_unsent_partials=4, stream_window_bytes=64 * 1024)
    _disconnect_frees_the_producer(served)


def _two_packets_of_one_session(served: Any, n: int) -> None:
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=20)
        # One message with both packets: both are queued before a worker takes any.
        stream.send([make_packet({"n": n}, session_id="s", seq_no=1), make_packet({"n": n}, session_id="s", seq_no=2)])
        stream.close()
        results = list(stream.results())
    _check_all(results[: n + 1], 1, n)
    _check_all(results[n + 1 :], 2, n)


def test_two_streaming_packets_of_one_session_do_not_deadlock(serve):
    # Packet 2 runs alongside packet 1; its partials are held until packet 1 is answered,
    # and keep their places meanwhile: it waits, packet 1 does not.
    served = serve(SyncStreamer, workers=2, max_unsent_partials=4)
    _two_packets_of_one_session(served, 200)


def test_two_streaming_packets_of_one_session_in_one_chunk_do_not_deadlock(serve):
    # One worker thread and a block taken for fast: both packets run in one chunk, one
    # after the other. Packet 1 must be answered when it ends, not with the chunk.
    served = serve(SyncStreamer, workers=1, max_unsent_partials=4, max_chunk=8)
    served.server.scheduler._job_time_s = 1e-6
    _two_packets_of_one_session(served, 200)


def test_two_streaming_async_packets_of_one_session_do_not_deadlock(serve):
    served = serve(AsyncStreamer, workers=1, max_unsent_partials=4)
    _two_packets_of_one_session(served, 200)


def test_server_stop_frees_a_waiting_producer(serve):
    served = serve(SyncStreamer, workers=1, max_unsent_partials=4, stream_window_bytes=64 * 1024)
    block = served.server.scheduler.block.instance
    threads = served.server.scheduler.executor._threads
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=120)
        stream.send(make_packet({"n": 1_000_000, "size": 16_000}, session_id="s", seq_no=1))
        next(stream.results())
        _blocked_gate(served)
        served.close(grace_s=0.2)
    wait_for(lambda: block.stats()["closed"] == 1, what="the generator to be closed")
    wait_for(lambda: not any(t.is_alive() for t in threads), what="the worker thread to end")
    assert served.server.scheduler.in_flight == 0  # answered exactly once (-1 if twice)


def test_other_consumers_free_places_on_delivery(serve):
    # A reply callable (as the Redis ingresses use) never writes anything: the place is
    # free as soon as it took the partial, so a long generator runs through.
    served = serve(SyncStreamer, workers=1, max_unsent_partials=2)
    sched = served.server.scheduler
    got: list[Result] = []
    done = threading.Event()

    def reply(result: Result) -> None:
        got.append(result)
        if result.kind is not Kind.PARTIAL:
            done.set()

    packet = AIOSPacket(session_id="r", seq_no=1, data='{"n": 500}')
    served.call(sched.submit(Job(packet, reply)))
    assert done.wait(30)
    assert [r.kind for r in got] == [Kind.PARTIAL] * 500 + [Kind.OK]
    assert [r.output.json()["i"] for r in got[:-1]] == list(range(500))  # type: ignore[union-attr]


def test_block_tester_streams_past_the_bound():
    class Many:
        def __init__(self, context: Any) -> None:
            pass

        def on_data(self, entry: PreProcessResult) -> Any:
            for i in range(500):
                yield True, OnDataResult(output={"i": i})

    assert [o["i"] for o in BlockTester(Many).run({})] == list(range(500))


def test_gate_counts_places_and_wakes_waiters_on_close():
    gate = PartialGate(2)
    assert gate.take() and gate.try_take()
    assert not gate.try_take() and gate.unsent == 2
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(gate.take()))
    waiter.start()
    wait_for(lambda: gate.waiting == 1, what="the thread to wait")
    gate.release()
    waiter.join(5)
    assert woke == [True] and gate.unsent == 2 and gate.peak == 2
    waiter = threading.Thread(target=lambda: woke.append(gate.take()))
    waiter.start()
    wait_for(lambda: gate.waiting == 1, what="the thread to wait")
    gate.close()
    waiter.join(5)
    assert woke == [True, False] and not waiter.is_alive()
    assert not gate.finish() and gate.finish()  # answered once: the second says so


def test_adapter_closes_a_generator_that_stops_early():
    closed: list[bool] = []

    class Gen:
        def __init__(self, context: Any) -> None:
            pass

        def on_data(self, entry: PreProcessResult) -> Any:
            try:
                for i in range(10):
                    yield True, OnDataResult(output={"i": i})
            finally:
                closed.append(True)

    def emit(out: OnDataResult) -> None:
        if out.output["i"] == 2:
            raise PacketError("stop here", stage="data")

    adapter = BlockAdapter(Gen(None))
    try:
        adapter.run_sync(AIOSPacket(session_id="s", seq_no=1, data="{}"), emit)
    except PacketError as exc:
        assert exc.message == "stop here"
    else:
        raise AssertionError("the emit error did not reach the caller")
    assert closed == [True]
