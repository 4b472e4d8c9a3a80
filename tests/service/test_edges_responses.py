"""Responses within the message limit, whatever the results (issue 12, case 1).

A real server and a raw gRPC stub whose receive limit is the server's send limit: a
response over it would end the client's stream, so every answer arriving proves the
response fitted.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc

from aios_grpc._pb import pb, pb_grpc
from tests.blocks.edges import SizedBlock

LIMIT = 1024 * 1024


def _stub(address: str) -> pb_grpc.BlockServiceStub:
    channel = grpc.insecure_channel(
        address,
        options=[("grpc.max_receive_message_length", LIMIT), ("grpc.max_send_message_length", 64 * LIMIT)],
    )
    return pb_grpc.BlockServiceStub(channel)


def _packet(seq: int, data: Any, session_id: str = "s") -> pb.Packet:
    return pb.Packet(session_id=session_id, seq_no=seq, data=json.dumps(data))


def _results(responses: Any) -> list[pb.PacketResult]:
    out = []
    for response in responses:
        if response.HasField("result"):
            out.append(response.result)
        out.extend(response.results)
    return out


def test_a_late_reader_of_big_outputs_gets_every_answer_in_responses_within_the_limit(serve: Any) -> None:
    served = serve(SizedBlock, max_message_bytes=LIMIT, workers=2)
    stub = _stub(served.address)
    # 60 outputs of 100 KB read late: coalesced, they would make a 6 MB response.
    requests = [
        pb.ProcessRequest(packets=[_packet(i * 20 + j + 1, {"size": 100_000}) for j in range(20)]) for i in range(3)
    ]
    call = stub.Process(iter(requests), timeout=60)
    time.sleep(2.0)  # the caller reads late: results pile up in the server's outbox
    results = _results(call)
    assert call.code() == grpc.StatusCode.OK
    assert sorted(r.seq_no for r in results) == list(range(1, 61))
    assert all(r.kind == pb.RESULT_KIND_OK and len(r.output.data) > 100_000 for r in results)


def test_a_result_too_large_for_any_response_is_answered_with_its_own_error_and_the_stream_goes_on(
    serve: Any,
) -> None:
    served = serve(SizedBlock, max_message_bytes=LIMIT, workers=2)
    stub = _stub(served.address)
    requests = [
        pb.ProcessRequest(packet=_packet(1, {"size": 10})),
        pb.ProcessRequest(packet=_packet(2, {"size": 2 * LIMIT})),
        pb.ProcessRequest(packet=_packet(3, {"size": 10})),
    ]
    results = {r.seq_no: r for r in _results(stub.Process(iter(requests), timeout=60))}
    assert sorted(results) == [1, 2, 3]
    assert results[1].kind == results[3].kind == pb.RESULT_KIND_OK
    error = results[2]
    assert error.kind == pb.RESULT_KIND_ERROR and error.session_id == "s"
    assert error.error.code_name == "RESOURCE_EXHAUSTED" and error.error.stage == "reply"
    assert f"over the message limit of {LIMIT} bytes" in error.error.message
    assert "the result is 2097" in error.error.message  # its size, in bytes


def test_a_coalesced_response_with_one_result_too_large_answers_the_others(serve: Any) -> None:
    served = serve(SizedBlock, max_message_bytes=LIMIT, workers=1)
    stub = _stub(served.address)
    sizes = [10, 2 * LIMIT, 10, 600_000, 600_000]
    requests = [pb.ProcessRequest(packets=[_packet(i + 1, {"size": n}) for i, n in enumerate(sizes)])]
    call = stub.Process(iter(requests), timeout=60)
    time.sleep(1.0)
    results = {r.seq_no: r for r in _results(call)}
    assert sorted(results) == [1, 2, 3, 4, 5]
    assert [results[i].kind for i in (1, 3, 4, 5)] == [pb.RESULT_KIND_OK] * 4
    assert results[2].error.code_name == "RESOURCE_EXHAUSTED" and results[2].error.stage == "reply"


def test_a_session_id_over_the_limit_is_invalid_argument_at_decode_and_the_stream_goes_on(serve: Any) -> None:
    served = serve(SizedBlock, max_session_id_bytes=256)
    stub = _stub(served.address)
    long_id = "é" * 200  # 200 characters, 400 bytes
    requests = [
        pb.ProcessRequest(packet=_packet(1, {}, session_id=long_id)),
        pb.ProcessRequest(packet=_packet(2, {}, session_id="x" * 256)),
    ]
    results = _results(stub.Process(iter(requests), timeout=60))
    assert [r.seq_no for r in results] == [1, 2]
    assert results[0].error.code_name == "INVALID_ARGUMENT" and results[0].error.stage == "decode"
    assert "session_id is 400 bytes; at most 256" in results[0].error.message
    assert results[1].kind == pb.RESULT_KIND_OK


def test_a_9_mib_session_id_is_answered_without_breaking_the_limit(serve: Any) -> None:
    served = serve(SizedBlock, max_message_bytes=16 * LIMIT)
    channel = grpc.insecure_channel(
        served.address,
        options=[("grpc.max_receive_message_length", 16 * LIMIT), ("grpc.max_send_message_length", 64 * LIMIT)],
    )
    stub = pb_grpc.BlockServiceStub(channel)
    requests = [pb.ProcessRequest(packet=_packet(i, {}, session_id="k" * (9 * LIMIT))) for i in (1, 2, 3)]
    results = _results(stub.Process(iter(requests), timeout=60))
    assert [r.seq_no for r in results] == [1, 2, 3]
    assert all(r.error.code_name == "INVALID_ARGUMENT" and r.error.stage == "decode" for r in results)
