"""Custom muxers (the seed's "Designing Custom Muxers"): process_packet, store, counts, _merge_packets."""

from __future__ import annotations

import json
import time

import grpc
from aios_grpc_client import BlockClient, make_packet

from aios_grpc import Muxer, OnDataResult, PreProcessResult
from aios_grpc.packet import AIOSPacket, FileInfo


class DropOdd(Muxer):
    """The seed's Muxer, but packets whose value is odd are filtered out."""

    def process_packet(self, packet):
        if json.loads(packet.data).get("v", 0) % 2:
            return None  # not kept in store: dropped
        return super().process_packet(packet)


class Reversed(Muxer):
    """Groups formed by the server; merged newest first with a marker."""

    def _merge_packets(self, packets):
        merged = super()._merge_packets(list(reversed(packets)))
        merged.data["by"] = "custom"
        return merged


class Raises(Muxer):
    def process_packet(self, packet):
        if json.loads(packet.data).get("boom"):
            raise RuntimeError("muxer broke")
        return super().process_packet(packet)


class EchoMux:
    """Outputs what reached on_preprocess."""

    muxer_class: type[Muxer] = Muxer

    def __init__(self, context):
        self.muxer = type(self).muxer_class(N=int(context.block_init_parameters.get("n", 2)))

    def get_muxer(self):
        return self.muxer

    def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet, extra_data=packet.json())]

    def on_data(self, entry):
        return True, OnDataResult(output=entry.extra_data)


def _block(muxer_class):
    return type(f"Echo{muxer_class.__name__}", (EchoMux,), {"muxer_class": muxer_class})


def test_the_seed_muxer_methods_work_by_hand():
    m = Muxer(N=2)
    a = AIOSPacket(session_id="s", seq_no=1, data='{"x": 1}', files=[FileInfo("{}", b"a")])
    assert m.process_packet(a) is None
    assert m.counts[("s", 1)] == 1 and m.store[("s", 1)] == [a]
    merged = m.process_packet(AIOSPacket(session_id="s", seq_no=1, data='{"x": 2}', files=[FileInfo("{}", b"b")]))
    assert merged.data == {"inputs": [{"x": 1}, {"x": 2}]}
    assert [f.file_data for f in merged.files] == [b"a", b"b"]
    assert ("s", 1) not in m.store and ("s", 1) not in m.counts
    assert a.data == '{"x": 1}'  # the first packet is copied, not changed
    assert Muxer(N=1).process_packet(a) is a


def test_an_overridden_process_packet_decides_and_dropped_packets_are_answered(serve):
    served = serve(_block(DropOdd))
    packets = [make_packet({"v": v}, session_id="s", seq_no=1) for v in (1, 2, 3, 4)]
    with BlockClient(served.address) as client:
        results = list(client.process(packets, timeout=30))
    assert len(results) == 4 and all(r.ok for r in results)
    outputs = [r.data for r in results if r.output is not None]
    # The odd ones never reached on_preprocess; the two even ones were merged.
    assert outputs == [{"inputs": [{"v": 2}, {"v": 4}]}]
    assert served.server.scheduler.mux_stage.open_groups == 0


def test_a_custom_process_packet_at_n_1_still_filters(serve):
    served = serve(_block(DropOdd), block_init_parameters={"n": 1})
    packets = [make_packet({"v": v}, session_id="s", seq_no=v) for v in (1, 2)]
    with BlockClient(served.address) as client:
        results = list(client.process(packets, timeout=30))
    assert [r.data if r.output is not None else None for r in results] == [None, {"v": 2}]


def test_an_overridden_merge_is_used_for_groups_the_server_forms(serve):
    served = serve(_block(Reversed))
    with BlockClient(served.address) as one, BlockClient(served.address) as two:
        a = one.stream(timeout=30)
        a.send(make_packet({"k": "a"}, session_id="s", seq_no=3))
        # The two streams are two connections: b goes only once a is held in its group,
        # so the arrival order the merge reverses is known.
        deadline = time.monotonic() + 30
        while served.server.scheduler.mux_stage.open_groups != 1:
            assert time.monotonic() < deadline, "the first packet never reached the muxer"
            time.sleep(0.01)
        b = two.stream(timeout=30)
        b.send(make_packet({"k": "b"}, session_id="s", seq_no=3))
        a.close()
        b.close()
        got = [*a.results(), *b.results()]
    outputs = [r.data for r in got if r.output is not None]
    assert outputs == [{"inputs": [{"k": "b"}, {"k": "a"}], "by": "custom"}]
    assert all(r.ok for r in got) and len(got) == 2


def test_a_custom_muxer_group_is_evicted_and_forgotten(serve):
    served = serve(_block(Raises), block_init_parameters={"n": 3}, mux_timeout_s=0.3)
    with BlockClient(served.address) as client:
        results = list(client.process([make_packet({"x": 1}, session_id="s", seq_no=1)], timeout=30))
    assert results[0].error.code == grpc.StatusCode.DEADLINE_EXCEEDED and "1 of 3" in results[0].error.message
    muxer = served.server.scheduler.mux_stage.muxer
    assert dict(muxer.store) == {} and dict(muxer.counts) == {}


def test_a_raising_custom_muxer_fails_only_that_packet(serve):
    served = serve(_block(Raises))
    packets = [
        make_packet({"x": 1}, session_id="s", seq_no=1),
        make_packet({"boom": True}, session_id="t", seq_no=1),
        make_packet({"x": 2}, session_id="s", seq_no=1),
    ]
    with BlockClient(served.address) as client:
        results = list(client.process(packets, timeout=30))
    assert len(results) == 3
    boom = next(r for r in results if r.session_id == "t")
    assert boom.error.code == grpc.StatusCode.INTERNAL and "muxer broke" in boom.error.message
    assert [r.data for r in results if r.output is not None] == [{"inputs": [{"x": 1}, {"x": 2}]}]
