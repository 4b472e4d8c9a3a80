"""``BlockTester`` runs the server's paths: on_batch through the batcher, the block's Muxer, the same errors."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from aios_grpc_client import BlockClient, make_packet

from aios_grpc import (
    Batcher,
    BlockCodeError,
    BlockTester,
    Muxer,
    OnDataResult,
    PreProcessResult,
    ProcessingFailed,
    Unavailable,
)


class BatchOnly:
    """Only on_batch (no on_data, no get_batcher): the server batches for it."""

    def __init__(self, context: Any) -> None:
        self.sizes: list[int] = []

    def on_batch(self, entries: list[PreProcessResult]) -> list[tuple[bool, Any]]:
        self.sizes.append(len(entries))
        return [(True, OnDataResult(output={"y": e.packet.json()["x"] * 10})) for e in entries]


class PairBatches(BatchOnly):
    def get_batcher(self) -> Batcher:
        return Batcher(N=2)


class WrongLength(BatchOnly):
    def on_batch(self, entries: list[PreProcessResult]) -> list[tuple[bool, Any]]:
        return []


class Merge2:
    def __init__(self, context: Any) -> None:
        pass

    def get_muxer(self) -> Muxer:
        return Muxer(N=2)

    def on_preprocess(self, packet: Any) -> tuple[bool, list[PreProcessResult]]:
        return True, [PreProcessResult(packet=packet, extra_data=packet.json())]

    def on_data(self, entry: PreProcessResult) -> tuple[bool, Any]:
        return True, OnDataResult(output=entry.extra_data)


class Refuses:
    def __init__(self, context: Any) -> None:
        pass

    def on_data(self, entry: PreProcessResult) -> tuple[bool, Any]:
        return False, "no model"


class TextOutput:
    def __init__(self, context: Any) -> None:
        pass

    def on_data(self, entry: PreProcessResult) -> tuple[bool, Any]:
        return True, OnDataResult(output=entry.packet.json()["say"])


def test_a_block_with_only_on_batch() -> None:
    tester = BlockTester(BatchOnly)
    assert tester.run({"x": 1}) == [{"y": 10}]
    assert tester.run_many([{"x": i} for i in range(5)]) == [{"y": 10 * i} for i in range(5)]


def test_batches_are_formed_by_the_blocks_batcher() -> None:
    tester = BlockTester(PairBatches)
    assert tester.run_many([{"x": i} for i in range(4)]) == [{"y": 0}, {"y": 10}, {"y": 20}, {"y": 30}]
    assert sum(tester.block.sizes) == 4 and max(tester.block.sizes) == 2


def test_on_batch_errors_are_the_servers() -> None:
    with pytest.raises(BlockCodeError, match="on_batch returned 0 results for 1 entries") as raised:
        BlockTester(WrongLength).run({"x": 1})
    assert raised.value.code == grpc.StatusCode.INTERNAL
    with pytest.raises(ProcessingFailed, match="no model") as failed:
        BlockTester(Refuses).run({})
    assert failed.value.code == grpc.StatusCode.UNKNOWN


def test_the_blocks_muxer_merges_what_run_many_gives_it(serve: Any) -> None:
    tester = BlockTester(Merge2)
    merged = tester.run_many([{"a": 1}, {"b": 2}])
    assert merged == [{"inputs": [{"a": 1}, {"b": 2}]}]
    # The server answers the same group the same way.
    served = serve(Merge2)
    with BlockClient(served.address) as client:
        packets = [make_packet(d, session_id="s", seq_no=1) for d in ({"a": 1}, {"b": 2})]
        assert [r.data for r in client.process(packets, timeout=30) if r.output is not None] == merged
    # A group the inputs leave incomplete fails at once, saying so.
    with pytest.raises(Unavailable, match="had 1 of 2 packets") as raised:
        tester.run({"a": 1})
    assert raised.value.retryable
    outcomes = tester.outcomes([{"a": 1}, {"b": 2}, {"c": 3}])
    assert outcomes[0] == [] and outcomes[1] == [{"inputs": [{"a": 1}, {"b": 2}]}]
    assert isinstance(outcomes[2], Unavailable)


def test_a_text_output_is_a_json_string_in_both(serve: Any) -> None:
    assert BlockTester(TextOutput).run({"say": "text"}) == ["text"]
    served = serve(TextOutput)
    with BlockClient(served.address) as client:
        result = client.run({"say": "text"}, timeout=30)
    assert result.ok and result.output.data == '"text"' and result.data == "text"
