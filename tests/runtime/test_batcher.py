"""Scheduler batching: on_batch with Batcher / TimeBasedBatcher over real streams."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from aios_grpc_client import BlockClient, make_packet

from tests.runtime.blocks import AsyncBatchBlock, BatchBlock, SeedMuxerAndBatcherBlock


def _params(**p):
    return {"block_init_parameters": p}


def _stats(client):
    return client.management("stats")


def test_burst_across_streams_is_batched_and_every_packet_answered(serve):
    served = serve(BatchBlock, **_params(n=16, t=0.05))
    results: dict[int, list] = {}

    def run(stream: int) -> None:
        with BlockClient(served.address) as client:
            packets = [{"i": stream * 100 + k, "sleep": 0.01} for k in range(40)]
            results[stream] = list(client.process(packets, session_id=f"s{stream}"))

    threads = [threading.Thread(target=run, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for stream, res in results.items():
        assert [r.seq_no for r in res] == list(range(1, 41))  # per-session order
        assert [r.data["i"] for r in res] == [stream * 100 + k for k in range(40)]
    assert len(results) == 4
    with BlockClient(served.address) as client:
        sizes = _stats(client)["sizes"]
    assert sum(sizes) == 160
    assert max(sizes) > 1, "packets queued while a batch ran must be batched together"
    assert max(sizes) <= 16


def test_a_lone_request_does_not_wait_for_t(serve):
    served = serve(BatchBlock, **_params(n=32, t=30.0))
    with BlockClient(served.address) as client:
        # If the lone packet waited T (30 s) the 10 s deadline would fail the call.
        result = client.run({"i": 1}, timeout=10)
        assert result.ok and result.data == {"i": 1, "size": 1}
        result = client.run({"i": 2}, timeout=10)
        assert result.ok


def _send_while_busy(served, gaps, **first):
    """A slow first batch, then packets spaced by ``gaps`` seconds; returns the call sizes."""
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        stream.send(make_packet({"i": 0, "sleep": 0.6, **first}, session_id="a", seq_no=0))
        time.sleep(0.1)
        for k, gap in enumerate(gaps, start=1):
            stream.send(make_packet({"i": k}, session_id=f"b{k}", seq_no=k))
            time.sleep(gap)
        stream.close()
        results = list(stream.results())
        assert len(results) == len(gaps) + 1 and all(r.ok for r in results)
        return _stats(client)["sizes"]


def test_time_based_batch_closes_t_after_its_first_entry(serve):
    served = serve(BatchBlock, **_params(n=32, t=0.05))
    # The second packet comes 0.2 s after the first of its batch: past T, so a new batch.
    assert _send_while_busy(served, [0.2, 0.0]) == [1, 1, 1]


def test_plain_batcher_keeps_collecting_while_the_slot_is_busy(serve):
    served = serve(BatchBlock, **_params(n=32, kind="plain"))
    assert _send_while_busy(served, [0.2, 0.0]) == [1, 2]


def test_batch_closes_at_n(serve):
    served = serve(BatchBlock, **_params(n=3, t=5.0))
    sizes = _send_while_busy(served, [0.0] * 7)
    assert sizes[0] == 1 and sum(sizes) == 8
    assert max(sizes[1:]) == 3 and all(s <= 3 for s in sizes)


def test_a_failing_batch_answers_only_its_own_packets(serve):
    served = serve(BatchBlock, **_params(n=3, t=5.0))
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        stream.send(make_packet({"i": 0, "sleep": 0.4}, session_id="s", seq_no=0))
        time.sleep(0.1)
        # These three arrive while the slot is busy: one batch of 3 that raises.
        stream.send([make_packet({"i": k, "raise": k == 2}, session_id="s", seq_no=k) for k in (1, 2, 3)])
        time.sleep(0.5)
        # Next: a batch with a wrong-length result, then one with a per-entry failure.
        stream.send(make_packet({"i": 9, "sleep": 0.3}, session_id="t", seq_no=9))
        time.sleep(0.1)
        stream.send([make_packet({"i": k, "short": k == 4}, session_id="s", seq_no=k) for k in (4, 5)])
        time.sleep(0.5)
        stream.send(
            [
                make_packet({"i": 6}, session_id="s", seq_no=6),
                make_packet({"i": 7, "fail": "bad"}, session_id="s", seq_no=7),
                make_packet({"i": 8}, session_id="s", seq_no=8),
            ]
        )
        stream.close()
        results = {(r.session_id, r.seq_no): r for r in stream.results()}
    assert len(results) == 10
    assert results[("s", 0)].ok and results[("t", 9)].ok
    for k in (1, 2, 3):
        err = results[("s", k)].error
        assert err.code == grpc.StatusCode.INTERNAL and "on_batch raised RuntimeError: batch exploded" in err.message
        assert err.stage == "batch"
    for k in (4, 5):
        err = results[("s", k)].error
        assert err.code == grpc.StatusCode.INTERNAL and "returned 1 results for 2 entries" in err.message
    assert results[("s", 6)].ok and results[("s", 8)].ok
    err = results[("s", 7)].error
    assert err.code == grpc.StatusCode.UNKNOWN and "on_batch failed: bad" in err.message


def test_batch_settings_change_at_run_time_and_getinfo_reports_them(serve):
    served = serve(BatchBlock, **_params(n=8, t=0.01))
    with BlockClient(served.address) as client:
        info = client.get_info()["batcher"]
        assert info == {"kind": "time", "n": 8, "t": 0.01, "max_concurrent_batches": 1}
        applied = client.management("aios.batcher", {"n": 2, "max_concurrent_batches": 3})
        assert applied["n"] == 2 and applied["max_concurrent_batches"] == 3 and applied["histogram"] == {}
        assert client.get_info()["batcher"]["max_concurrent_batches"] == 3
        packets = [make_packet({"i": k, "sleep": 0.2}, session_id=f"s{k}", seq_no=1) for k in range(12)]
        results = list(client.process(packets, coalesce=12))
        assert all(r.ok for r in results) and len(results) == 12
        stats = _stats(client)
        assert max(stats["sizes"]) <= 2
        assert stats["max_running"] >= 2, "three batches may run at once now"
        histogram = client.management("aios.batcher")["histogram"]
        assert sum(int(size) * calls for size, calls in histogram.items()) == 12
        for bad in ({"n": 0}, {"t": -1}, {"max_concurrent_batches": "x"}, {"size": 3}):
            with pytest.raises(grpc.RpcError) as err:
                client.management("aios.batcher", bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "aios.batcher" in err.value.details()
        assert client.get_info()["batcher"]["n"] == 2


def test_order_per_session_holds_with_concurrent_batches(serve):
    served = serve(BatchBlock, **_params(n=2, t=0.0))
    with BlockClient(served.address) as client:
        client.management("aios.batcher", {"max_concurrent_batches": 4})
        # Early packets sleep longer, so later batches finish first.
        packets = [
            make_packet({"i": k, "sleep": max(0.0, 0.12 - 0.01 * k)}, session_id=f"s{k % 2}", seq_no=k)
            for k in range(16)
        ]
        results = list(client.process(packets, coalesce=16))
        assert _stats(client)["max_running"] >= 2
    for session in ("s0", "s1"):
        seqs = [r.seq_no for r in results if r.session_id == session]
        assert seqs == sorted(seqs) and len(seqs) == 8


def test_packet_whose_deadline_passed_is_not_batched(serve):
    served = serve(BatchBlock, **_params(n=8, t=0.0))
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        stream.send(make_packet({"i": 0, "sleep": 0.5}, session_id="s", seq_no=0))
        time.sleep(0.1)
        # Deadline 0.2 s from now: it passes while the first batch holds the only slot.
        stream.send(make_packet({"i": 1}, session_id="s", seq_no=1, deadline=time.time() + 0.2))
        stream.send(make_packet({"i": 2}, session_id="s", seq_no=2, deadline=time.time() - 1))
        stream.send(make_packet({"i": 3}, session_id="s", seq_no=3))
        stream.close()
        results = list(stream.results())
        seen = _stats(client)["seen"]
    assert [r.seq_no for r in results] == [0, 1, 2, 3]
    assert results[0].ok and results[3].ok
    for r in results[1:3]:
        assert r.error.code == grpc.StatusCode.DEADLINE_EXCEEDED and r.error.stage == "deadline"
    assert sorted(seen) == [0, 3], "on_batch must never see an expired packet"


def test_async_on_batch(serve):
    served = serve(AsyncBatchBlock, **_params(n=4, t=0.0))
    with BlockClient(served.address) as client:
        results = list(client.process([{"i": k} for k in range(10)], coalesce=10))
    assert [r.data["i"] for r in results] == list(range(10))


def test_seed_manual_batcher_inside_on_data_still_works(serve):
    served = serve(SeedMuxerAndBatcherBlock, workers=1)
    with BlockClient(served.address) as client:
        results = list(client.process([{"value": v / 10} for v in range(8)]))
    assert all(r.ok for r in results)
    outputs = [r.data for r in results if r.output is not None]
    assert len(outputs) == 2
    assert [x["value"] for x in outputs[0]["batch"]] == [0.0, 0.1, 0.2, 0.3]
    assert outputs[1]["batch"][3] == {"value": 0.7, "passed": True}
