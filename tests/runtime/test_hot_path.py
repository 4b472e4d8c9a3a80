"""The Process stream's fast path: chunk gathering for fast blocks, and one JSON parse per packet."""

from __future__ import annotations

import json
import threading
import time

import pytest
from aios_grpc_client import BlockClient, make_packet

from aios_grpc import AIOSPacket, OnDataResult
from aios_grpc.errors import InvalidPacket
from aios_grpc.runtime.adapter import BlockAdapter


class FastBlock:
    """Answers at once with the parsed input."""

    def __init__(self, context):
        pass

    def on_data(self, entry):
        return True, OnDataResult(output=entry.packet.json())


class StuckOnceBlock:
    """Fast, except the packet {"stick": true}, which waits until {"release": true} arrives."""

    released = threading.Event()

    def __init__(self, context):
        pass

    def on_data(self, entry):
        data = entry.packet.json()
        if data.get("stick"):
            if not StuckOnceBlock.released.wait(10):
                return False, "never released"
        if data.get("release"):
            StuckOnceBlock.released.set()
        return True, OnDataResult(output=data)


def test_pipelined_packets_of_a_fast_block_share_chunks_and_keep_their_order(serve):
    served = serve(FastBlock, workers=4)
    scheduler_chunks: list[int] = []
    with BlockClient(served.address) as client:
        client.run({"warm": True})  # the block's time per packet is known from here on
        scheduler = served.server.scheduler
        original = scheduler._run_chunk_sync

        def counting(jobs):
            scheduler_chunks.append(len(jobs))
            return original(jobs)

        scheduler._run_chunk_sync = counting
        results = list(client.process([{"i": i} for i in range(300)], session_id="p", timeout=30))
    assert [r.data["i"] for r in results] == list(range(300))
    assert all(r.ok for r in results)
    # A client that sends without waiting is seen as such, and its packets travel
    # to the threads several at a time rather than one hop each.
    assert scheduler.pipelined_arrivals > 0
    assert sum(scheduler_chunks) == 300
    assert len(scheduler_chunks) < 150


def test_one_packet_at_a_time_is_not_taken_for_a_pipelining_client(serve):
    served = serve(FastBlock, workers=2)
    with BlockClient(served.address) as client:
        for i in range(20):
            assert client.run({"i": i}, session_id="q", seq_no=i).data == {"i": i}
    assert served.server.scheduler.pipelined_arrivals == 0


def test_a_shallow_pipeline_is_not_held_for_the_whole_gather_time(serve):
    # AIOS_GATHER_S is set far above anything the test does otherwise: a client that
    # pipelines a few packets and then waits for their answers sends nothing more, so
    # the chunk must go once no packet came for a fifth of it, not after all of it.
    gather_s = 1.0
    served = serve(FastBlock, workers=2, gather_s=gather_s)
    with BlockClient(served.address) as client:
        client.run({"warm": True})
        rounds = []
        for r in range(4):
            start = time.monotonic()
            results = list(client.process([{"r": r, "i": i} for i in range(4)], session_id=f"g{r}", timeout=30))
            rounds.append(time.monotonic() - start)
            assert [x.data for x in results] == [{"r": r, "i": i} for i in range(4)]
    assert served.server.scheduler.pipelined_arrivals > 0  # the gather did apply
    # Without the early end each round takes about gather_s; with it, about two fifths.
    assert max(rounds) < gather_s * 0.75, rounds


def test_a_stuck_packet_of_a_fast_block_does_not_hold_other_streams(serve):
    StuckOnceBlock.released.clear()
    served = serve(StuckOnceBlock, workers=2)
    with BlockClient(served.address) as client:
        for i in range(50):
            client.run({"i": i}, session_id="warm", seq_no=i)  # a fast block from the start
        stuck = client.stream(timeout=30)
        stuck.send(make_packet({"stick": True}, session_id="a", seq_no=1))
        time.sleep(0.1)  # its chunk is in the pool now
        # Another stream's packet goes to the other thread instead of waiting behind it.
        release = client.run({"release": True}, session_id="b", seq_no=1, timeout=5)
        stuck.close()
        held = list(stuck.results())
    assert release.ok
    assert [r.data for r in held] == [{"stick": True}]


def test_the_json_check_parses_once_and_json_still_gives_each_caller_its_own_value():
    packet = AIOSPacket(session_id="s", seq_no=1, data=json.dumps({"values": [1, 2]}))
    BlockAdapter.validate_packet(packet, True, 8)
    first = packet.json()
    first["values"].append(3)
    assert packet.json() == {"values": [1, 2]}
    # Data replaced after the check is parsed from the new text.
    packet.check_json()
    packet.data = json.dumps({"other": True})
    assert packet.json() == {"other": True}
    assert AIOSPacket(data="").json() == {}
    with pytest.raises(InvalidPacket, match="not valid JSON"):
        BlockAdapter.validate_packet(AIOSPacket(data="{nope"), True, 8)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        ' {"a": 1}',
        '{"a": 1}\n',
        "[1, 2.5, null]",
        '"text"',
        "7",
        "NaN",
        '{"a": 1e400}',
        b'{"b": 2}',
        '{"a": 1}x',
        '{"a": 1}{"b": 2}',
        "{",
        "tru",
        "",
        "   ",
    ],
)
def test_the_fast_json_parse_gives_what_json_loads_gives(text):
    from aios_grpc.packet import loads

    def outcome(parse):
        try:
            return "value", repr(parse(text))
        except ValueError as exc:
            return type(exc).__name__, str(exc)

    assert outcome(loads) == outcome(json.loads)
