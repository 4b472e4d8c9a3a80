"""Property test: malformed packets, request messages and control-plane calls never break the
answer contract (issue 12), next to a canary stream of valid packets.

Hypothesis generates Process streams of raw request messages (valid ones, coalesced ones,
empty ones, random bytes, valid bytes with a byte changed; packets with long session ids,
text that is not JSON, JSON nested too deep, odd routing pointers and files) and raw
control-plane calls. For each stream: the packets of the messages before the first one
that does not parse get exactly one terminal result each, our own packets by name, and
the stream ends OK, or INVALID_ARGUMENT at that message. Throughout, a canary stream
sends valid packets and checks every answer; at the end the server is still SERVING.
Bounded to about half a minute (``max_examples``).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import grpc
from aios_grpc_client import BlockClient, make_packet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios_grpc._pb import pb
from tests.blocks.edges import SizedBlock

_seq = itertools.count(1)

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
_data = st.one_of(
    _json_values.map(json.dumps),
    st.text(max_size=40),  # mostly not JSON
    st.integers(60, 2000).map(lambda d: "[" * d + "]" * d),  # nested past AIOS_MAX_JSON_DEPTH
    st.integers(1, 30).map(lambda d: '{"a":' * d + "1" + "}" * d),
    st.just(""),
)
_pointer = st.one_of(st.just(""), st.text(max_size=30), st.just('{"outputs": [{"host": "x", "port": 1}]}'))


@st.composite
def _packet(draw: Any) -> pb.Packet:
    packet = pb.Packet(
        session_id=draw(st.one_of(st.text(max_size=6), st.text(min_size=250, max_size=300))),
        seq_no=next(_seq),  # unique: the answer is matched by (session_id, seq_no)
        data=draw(_data),
        output_ptr=draw(_pointer),
    )
    for _ in range(draw(st.integers(0, 2))):
        packet.files.add(metadata=draw(st.text(max_size=10)), file_data=draw(st.binary(max_size=20)))
    return packet


@st.composite
def _message(draw: Any) -> tuple[bytes, list[tuple[str, int]]]:
    """A raw request message and the (session_id, seq_no) of our packets in it."""
    kind = draw(st.sampled_from(["lone", "coalesced", "empty", "random", "mutated"]))
    if kind == "lone":
        packet = draw(_packet())
        return pb.ProcessRequest(packet=packet).SerializeToString(), [(packet.session_id, packet.seq_no)]
    if kind == "coalesced":
        packets = draw(st.lists(_packet(), min_size=1, max_size=5))
        raw = pb.ProcessRequest(packets=packets).SerializeToString()
        return raw, [(p.session_id, p.seq_no) for p in packets]
    if kind == "empty":
        return b"", []
    if kind == "random":
        return draw(st.binary(max_size=48)), []
    raw = bytearray(pb.ProcessRequest(packet=draw(_packet())).SerializeToString())
    at = draw(st.integers(0, len(raw) - 1))
    raw[at] = draw(st.integers(0, 255))
    return bytes(raw), []


def _answers_expected(messages: list[bytes]) -> tuple[int, int | None]:
    """How many terminal results the messages before the first unparsable one get, and its index."""
    count = 0
    for i, raw in enumerate(messages):
        try:
            request = pb.ProcessRequest.FromString(raw)
        except Exception:
            return count, i
        count += max(1, len(request.packets) + request.HasField("packet"))
    return count, None


class Canary:
    """A stream of valid packets in a thread; every answer checked."""

    def __init__(self, address: str) -> None:
        self.client = BlockClient(address, retries=0)
        self.sent = 0
        self.wrong: list[str] = []
        self.answered: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def packets(self) -> Any:
        while not self.stop.is_set():
            self.sent += 1
            yield make_packet({"i": self.sent}, session_id="canary", seq_no=self.sent)
            time.sleep(0.005)

    def run(self) -> None:
        try:
            for r in self.client.process(self.packets(), timeout=300):
                self.answered[r.seq_no] = self.answered.get(r.seq_no, 0) + 1
                if not r.ok or r.data != {"echo": {"i": r.seq_no}}:
                    self.wrong.append(f"{r.seq_no}: {r}")
        except Exception as exc:  # any end but a clean one is a failure
            self.wrong.append(f"canary stream ended: {exc!r}")

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self.client.close()


def test_malformed_input_never_breaks_the_answer_contract(serve: Any) -> None:
    served = serve(SizedBlock, workers=2, route_allow=["127.0.0.1:1"])
    channel = grpc.insecure_channel(served.address)
    process = channel.stream_stream(
        "/aios.block.v1.BlockService/Process", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    unary = {
        m: channel.unary_unary(
            f"/aios.block.v1.BlockService/{m}", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        for m in ("SetParameters", "Management", "GetInfo")
    }
    canary = Canary(served.address)
    control_codes: set[str] = set()

    @settings(
        max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
    )
    @given(
        stream=st.lists(_message(), max_size=6),
        control=st.lists(
            st.tuples(
                st.sampled_from(sorted(unary)),
                st.one_of(
                    st.binary(max_size=40),
                    st.builds(
                        lambda a, d: pb.ManagementRequest(action=a, data=d).SerializeToString(),
                        st.text(max_size=8).filter(lambda a: a != "size"),
                        st.dictionaries(st.text(max_size=4), _json_values, max_size=3).map(_struct),
                    ),
                ),
            ),
            max_size=2,
        ),
    )
    def one(stream: list[tuple[bytes, list[tuple[str, int]]]], control: list[tuple[str, bytes]]) -> None:
        messages = [raw for raw, _ in stream]
        expected, bad_at = _answers_expected(messages)
        results: list[pb.PacketResult] = []
        status = grpc.StatusCode.OK
        try:
            for raw in process(iter(messages), timeout=60):
                response = pb.ProcessResponse.FromString(raw)
                results.extend([response.result] if response.HasField("result") else response.results)
        except grpc.RpcError as exc:
            status = exc.code()
            details = exc.details() or ""
            assert status == grpc.StatusCode.INVALID_ARGUMENT, details
            assert bad_at is not None and f"request message {bad_at + 1} of the stream" in details
        if bad_at is None:
            assert status == grpc.StatusCode.OK
        assert all(r.kind in (pb.RESULT_KIND_OK, pb.RESULT_KIND_ERROR) for r in results)
        assert len(results) == expected, "every packet read gets exactly one terminal result"
        keys = [(r.session_id, r.seq_no) for r in results]
        mine = [k for _, ks in stream[: bad_at if bad_at is not None else len(stream)] for k in ks]
        for key in mine:
            assert keys.count(key) == 1, f"packet {key!r:.60} answered {keys.count(key)} times"
        for r in results:
            if r.kind == pb.RESULT_KIND_ERROR:
                assert r.error.code_name not in ("UNKNOWN", "INTERNAL"), r.error.message
        for method, raw in control:
            try:
                unary[method](raw, timeout=30)
                control_codes.add("OK")
            except grpc.RpcError as exc:
                control_codes.add(exc.code().name)
                assert exc.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.UNIMPLEMENTED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                ), f"{method}: {exc.code().name} {exc.details()}"

    try:
        one()
    finally:
        canary.finish()
    with BlockClient(served.address) as client:
        assert client.health() == "SERVING"
    assert not canary.wrong, canary.wrong[:5]
    assert canary.answered and all(n == 1 for n in canary.answered.values())
    assert set(canary.answered) == set(range(1, len(canary.answered) + 1))
    channel.close()


def _struct(value: dict[str, Any]) -> Any:
    from google.protobuf import struct_pb2

    msg = struct_pb2.Struct()
    msg.update(value)
    return msg
