"""The Process stream end to end: a real server on 127.0.0.1:0 and the Python client."""

from __future__ import annotations

import threading

import grpc
import pytest
from aios_grpc_client import BlockClient, make_packet

from tests.blocks.basic import AsyncBlock, EchoBlock, StreamingBlock


def test_each_packet_gets_one_terminal_result_in_order(serve):
    served = serve(EchoBlock)
    with BlockClient(served.address) as client:
        results = list(client.process([{"i": i} for i in range(50)], session_id="s"))
    assert [r.seq_no for r in results] == list(range(1, 51))
    assert all(r.ok for r in results)
    assert [r.data["echo"]["i"] for r in results] == list(range(50))


def test_bad_packets_mixed_with_good_ones_do_not_touch_the_others(serve):
    served = serve(EchoBlock)
    inputs = []
    for i in range(40):
        inputs.append(
            [
                make_packet({"i": i}, session_id="s", seq_no=i),
                make_packet("not json", session_id="s", seq_no=i),
                make_packet({"fail": "nope"}, session_id="s", seq_no=i),
                make_packet({"raise": "boom"}, session_id="s", seq_no=i),
                make_packet({"reject": "bad input"}, session_id="s", seq_no=i),
                make_packet({"none": True}, session_id="s", seq_no=i),
            ][i % 6]
        )
    with BlockClient(served.address) as client:
        results = list(client.process(inputs))
    assert len(results) == 40
    by_kind = {}
    for i, r in enumerate(results):
        by_kind.setdefault(i % 6, []).append(r)
    assert all(r.ok and r.data == {"echo": {"i": r.seq_no}} for r in by_kind[0])
    for r in by_kind[1]:
        assert r.error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "not valid JSON" in r.error.message and r.error.stage == "decode"
    for r in by_kind[2]:
        assert r.error.code == grpc.StatusCode.UNKNOWN and "on_data failed: nope" in r.error.message
    for r in by_kind[3]:
        assert r.error.code == grpc.StatusCode.INTERNAL
        assert "on_data raised ValueError: boom" in r.error.message
    for r in by_kind[4]:
        assert r.error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "on_preprocess rejected the packet: bad input" in r.error.message
    for r in by_kind[5]:
        assert r.ok and r.output is None
    assert not any(r.error.retryable for k in (1, 2, 3, 4) for r in by_kind[k])


def test_ten_thousand_packets_pipelined_on_one_stream(serve):
    served = serve(EchoBlock, workers=2)
    n = 10_000
    with BlockClient(served.address) as client:
        seen = [0] * n
        for r in client.process(({"i": i} for i in range(n)), session_id="big", first_seq_no=0):
            assert r.ok
            seen[r.seq_no] += 1
    assert seen == [1] * n


def test_eight_concurrent_streams(serve):
    served = serve(EchoBlock, workers=4)
    errors: list[BaseException] = []
    counts: dict[int, list[int]] = {}

    def run(stream: int) -> None:
        try:
            with BlockClient(served.address) as client:
                counts[stream] = [
                    r.data["echo"]["i"] for r in client.process(({"i": i} for i in range(500)), session_id=f"s{stream}")
                ]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert counts == {k: list(range(500)) for k in range(8)}


def test_order_per_session_holds_when_a_slow_packet_comes_first(serve):
    served = serve(EchoBlock, workers=4)
    packets = [make_packet({"sleep": 0.3}, session_id="a", seq_no=1)]
    packets += [make_packet({"i": i}, session_id="a", seq_no=i) for i in range(2, 20)]
    packets += [make_packet({"i": i}, session_id="b", seq_no=i) for i in range(1, 5)]
    with BlockClient(served.address) as client:
        results = list(client.process(packets))
    a = [r.seq_no for r in results if r.session_id == "a"]
    assert a == list(range(1, 20))
    # Session b is not held behind session a's slow packet.
    first_a = next(i for i, r in enumerate(results) if r.session_id == "a")
    assert any(r.session_id == "b" for r in results[:first_a])


def test_generator_streams_partials_before_the_terminal_result(serve):
    served = serve(StreamingBlock)
    with BlockClient(served.address) as client:
        results = list(client.process([{"text": "a b c"}], session_id="t"))
    assert [r.kind for r in results] == ["partial", "partial", "partial", "ok"]
    assert [r.data["token"] for r in results[:3]] == ["a", "b", "c"]
    assert results[-1].output is None


def test_async_block_methods_run_on_the_loop(serve):
    served = serve(AsyncBlock)
    with BlockClient(served.address) as client:
        results = list(client.process([{"x": i, "sleep": 0.01} for i in range(20)]))
    assert [r.data["async"]["x"] for r in results] == list(range(20))


def test_coalesced_requests_get_every_packet_answered(serve):
    served = serve(EchoBlock)
    with BlockClient(served.address) as client:
        results = list(client.process(({"i": i} for i in range(1000)), coalesce=64, first_seq_no=0))
    assert sorted(r.seq_no for r in results) == list(range(1000))


@pytest.mark.parametrize("bad", ["empty"])
def test_a_request_without_packet_is_answered_with_an_error(serve, bad):
    from aios_grpc_client import pb

    served = serve(EchoBlock)
    with BlockClient(served.address) as client:
        stream = client.stream()
        stream.send(make_packet({"i": 1}, session_id="s", seq_no=1))
        stream._queue.put(pb.ProcessRequest())
        stream.send(make_packet({"i": 2}, session_id="s", seq_no=2))
        stream.close()
        results = list(stream.results())
    assert [r.ok for r in results].count(True) == 2
    errors = [r for r in results if not r.ok]
    assert len(errors) == 1 and "carries no packet" in errors[0].error.message
