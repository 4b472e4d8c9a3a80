"""Muxer(N): merging packets with the same (session_id, seq_no), across streams."""

from __future__ import annotations

import re
import threading
import time

import grpc
import pytest
from aios_grpc_client import BlockClient, make_packet

from tests.runtime.blocks import MuxBlock


def _params(**p):
    return {"block_init_parameters": p}


def test_packets_from_two_streams_are_merged_in_arrival_order(serve):
    served = serve(MuxBlock)
    with BlockClient(served.address) as first, BlockClient(served.address) as second:
        a = first.stream(timeout=30)
        a.send(make_packet({"from": "a"}, session_id="s", seq_no=7, files=[({"n": 1}, b"fa")]))
        time.sleep(0.2)
        b = second.stream(timeout=30)
        b.send(make_packet({"from": "b"}, session_id="s", seq_no=7, files=[({"n": 2}, b"fb")]))
        a.close()
        b.close()
        got_a = list(a.results())
        got_b = list(b.results())
    # The completing member (b) gets the output; a gets OK without output.
    assert len(got_a) == 1 and got_a[0].ok and got_a[0].output is None
    assert len(got_b) == 1 and got_b[0].ok
    assert got_b[0].data == {"inputs": [{"from": "a"}, {"from": "b"}], "files": ["fa", "fb"]}
    assert (got_b[0].session_id, got_b[0].seq_no) == ("s", 7)


def test_members_on_one_stream_and_many_groups(serve):
    served = serve(MuxBlock, **_params(n=3))
    packets = [make_packet({"k": k, "part": p}, session_id="s", seq_no=k) for k in range(20) for p in range(3)]
    with BlockClient(served.address) as client:
        results = list(client.process(packets, coalesce=16))
    assert len(results) == 60 and all(r.ok for r in results)
    outputs = [r for r in results if r.output is not None]
    assert [r.seq_no for r in outputs] == list(range(20))
    for r in outputs:
        assert r.data["inputs"] == [{"k": r.seq_no, "part": p} for p in range(3)]


def test_incomplete_group_is_evicted_with_how_many_arrived(serve):
    served = serve(MuxBlock, **_params(n=3, timeout_s=0.3))
    packets = [make_packet({"x": 1}, session_id="s", seq_no=1), make_packet({"x": 2}, session_id="s", seq_no=1)]
    with BlockClient(served.address) as client:
        results = list(client.process(packets, timeout=20))
    assert len(results) == 2
    for r in results:
        assert r.error.code == grpc.StatusCode.DEADLINE_EXCEEDED and r.error.stage == "mux"
        assert "2 of 3 packets arrived" in r.error.message
    assert served.server.scheduler.mux_stage.open_groups == 0


def test_open_groups_are_bounded_and_refused_not_dropped(serve):
    served = serve(MuxBlock, **_params(n=2, max_open_groups=2, timeout_s=20))
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        for k in range(3):
            stream.send(make_packet({"k": k}, session_id="s", seq_no=k))
        # The third opening packet is refused at once; the first two groups then complete.
        time.sleep(0.3)
        for k in range(2):
            stream.send(make_packet({"k": k, "second": True}, session_id="s", seq_no=k))
        stream.close()
        results = list(stream.results())
    by_key = {}
    for r in results:
        by_key.setdefault(r.seq_no, []).append(r)
    assert by_key[2][0].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert by_key[2][0].error.retryable and "open groups" in by_key[2][0].error.message
    for k in (0, 1):
        assert [r.ok for r in by_key[k]] == [True, True]
        assert by_key[k][1].data["inputs"] == [{"k": k}, {"k": k, "second": True}]


def test_a_bad_member_fails_alone(serve):
    served = serve(MuxBlock)
    packets = [
        make_packet({"x": 1}, session_id="s", seq_no=1),
        make_packet("not json", session_id="s", seq_no=1),
        make_packet({"x": 2}, session_id="s", seq_no=1),
    ]
    with BlockClient(served.address) as client:
        results = list(client.process(packets))
    assert results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert results[0].ok and results[2].data["inputs"] == [{"x": 1}, {"x": 2}]


def test_getinfo_reports_the_muxer(serve):
    served = serve(MuxBlock, **_params(n=2, timeout_s=1.5, max_open_groups=7))
    with BlockClient(served.address) as client:
        info = client.get_info()["muxer"]
    assert info == {"n": 2, "timeout_s": 1.5, "max_open_groups": 7}


def test_many_streams_feed_one_muxer(serve):
    served = serve(MuxBlock, **_params(n=4))
    got: dict[int, list] = {}

    def feed(stream: int) -> None:
        with BlockClient(served.address) as client:
            packets = [make_packet({"stream": stream, "k": k}, session_id="s", seq_no=k) for k in range(30)]
            got[stream] = list(client.process(packets, timeout=30))

    threads = [threading.Thread(target=feed, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    results = [r for rs in got.values() for r in rs]
    assert len(results) == 120 and all(r.ok for r in results)
    outputs = [r for r in results if r.output is not None]
    assert sorted(r.seq_no for r in outputs) == list(range(30))
    for r in outputs:
        assert sorted(x["stream"] for x in r.data["inputs"]) == [0, 1, 2, 3]


def test_telemetry_sees_open_groups_rise_and_fall_on_eviction():
    from aios_grpc.settings import load_settings
    from aios_grpc.telemetry import Telemetry
    from aios_grpc.testing import ServedBlock

    class Groups(Telemetry):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def muxer_groups(self, open_groups: int) -> None:
            self.seen.append(open_groups)

    telemetry = Groups()
    settings = load_settings(host="127.0.0.1", port=0, workers=1, block_init_parameters={"n": 2, "timeout_s": 0.2})
    with ServedBlock(MuxBlock, settings, telemetry=telemetry) as served:
        packets = [make_packet({"x": k}, session_id="s", seq_no=k) for k in range(2)]
        with BlockClient(served.address) as client:
            results = list(client.process(packets, timeout=20))
    assert all(r.error.code == grpc.StatusCode.DEADLINE_EXCEEDED for r in results)
    assert max(telemetry.seen) == 2 and telemetry.seen[-1] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"N": 0}, "Muxer N must be 1 or more, got 0"),
        ({"N": 2, "timeout_s": -1}, "Muxer timeout_s must be more than 0 (or None for AIOS_MUX_TIMEOUT_S), got -1"),
        ({"N": 2, "timeout_s": 0}, "Muxer timeout_s must be more than 0"),
        (
            {"N": 2, "max_open_groups": 0},
            "Muxer max_open_groups must be 1 or more (or None for AIOS_MUX_MAX_OPEN_GROUPS)",
        ),
    ],
)
def test_a_muxer_with_a_bad_setting_fails_when_built(kwargs, message):
    from aios_grpc import Muxer

    with pytest.raises(ValueError, match=re.escape(message)):
        Muxer(**kwargs)
