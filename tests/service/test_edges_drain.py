"""A drain never ends a stream OK with packets unanswered, and never drops a packet it read
(issue 12, case 2); past AIOS_MAX_STREAMS a stream is refused, not queued (case 4)."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import grpc
import pytest
from aios_grpc_client import BlockClient, Unanswered, make_packet

from tests.blocks.basic import EchoBlock


def test_sigterm_under_load_answers_every_packet_read_and_ends_unavailable(spawn: Any) -> None:
    server = spawn("tests.blocks.basic:EchoBlock", env={"AIOS_GRACE_PERIOD_S": "5", "AIOS_WORKERS": "2"})
    terminal: dict[int, int] = {}
    codes: dict[str, int] = {}
    ended: list[grpc.RpcError] = []
    with BlockClient(server.address) as client:
        client.wait_until_serving(10)
        stream = client.stream(timeout=60)

        def read() -> None:
            try:
                for r in stream.results():
                    if r.terminal:
                        terminal[r.seq_no] = terminal.get(r.seq_no, 0) + 1
                        name = "OK" if r.ok else r.error.code.name
                        codes[name] = codes.get(name, 0) + 1
            except grpc.RpcError as exc:
                ended.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        sent = 0
        signalled_at = 0
        start = time.monotonic()
        while time.monotonic() - start < 20:
            if sent == 300:
                server.proc.send_signal(signal.SIGTERM)
                signalled_at = sent
            try:
                stream.send(make_packet({"sleep": 0.002}, session_id=f"s{sent % 4}", seq_no=sent + 1))
            except RuntimeError:
                break  # the stream ended: the server stopped reading it
            sent += 1
            time.sleep(0.001)  # a steady load, not one burst
        reader.join(30)
        assert not reader.is_alive()
        assert server.proc.wait(15) == 0
    assert signalled_at == 300 and sent > 300
    assert all(n == 1 for n in terminal.values()), "a packet answered twice"
    # The server reads in order and answers every packet it read: the answered packets are
    # the first ones sent, with no gap (a gap would be a packet read and dropped).
    assert set(terminal) == set(range(1, len(terminal) + 1)), "a packet read was not answered"
    assert codes.get("OK", 0) > 0
    # The caller kept sending: whatever was unread is told by the status, never an OK end.
    assert [e.code() for e in ended] == [grpc.StatusCode.UNAVAILABLE]
    assert "resend" in (ended[0].details() or "")
    unanswered = sent - len(terminal)
    print(f"drain figures: sent {sent}, answered {len(terminal)} {codes}, unanswered {unanswered} (stream UNAVAILABLE)")


def test_the_grace_period_ending_with_packets_unanswered_ends_the_stream_unavailable_naming_them(
    serve: Any,
) -> None:
    served = serve(EchoBlock, workers=2)
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        stream.send(make_packet({"sleep": 3}, session_id="slow", seq_no=1))
        stream.send(make_packet({}, session_id="fast", seq_no=2))
        stream.close()  # half-closed: nothing is unread, but packet 1 outlives the grace period
        time.sleep(0.3)
        stopper = threading.Thread(target=served.close, kwargs={"grace_s": 0.5})
        stopper.start()
        got = []
        with pytest.raises(grpc.RpcError) as ended:
            for r in stream.results():
                got.append((r.seq_no, r.ok))
        stopper.join(15)
    assert got == [(2, True)]
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "grace period ended with 1 packet(s) of this stream unanswered" in (ended.value.details() or "")


def test_process_without_retries_raises_naming_how_many_inputs_went_unanswered(serve: Any) -> None:
    served = serve(EchoBlock, workers=2)

    def packets() -> Any:
        yield make_packet({"sleep": 3}, session_id="slow", seq_no=1)
        for k in range(2, 6):
            yield make_packet({}, session_id=f"fast{k}", seq_no=k)
        time.sleep(0.3)
        threading.Thread(target=served.close, kwargs={"grace_s": 0.5}).start()
        time.sleep(5)  # keeps the stream open for sending past the drain

    results = []
    with BlockClient(served.address, retries=0) as client:
        with pytest.raises(Unanswered) as unanswered:
            for r in client.process(packets(), timeout=30):
                results.append(r.seq_no)
    assert sorted(results) == [2, 3, 4, 5]
    assert unanswered.value.count == 1
    assert "1 packet(s) unanswered" in str(unanswered.value) and "UNAVAILABLE" in str(unanswered.value)


def test_streams_past_max_streams_are_refused_resource_exhausted(serve: Any) -> None:
    served = serve(EchoBlock, max_streams=2)
    with BlockClient(served.address) as client:
        open_streams = [client.stream(timeout=30) for _ in range(2)]
        for k, s in enumerate(open_streams):
            s.send(make_packet({}, session_id="s", seq_no=k + 1))
        for s in open_streams:
            assert next(iter(s.results())).ok  # both are open and served
        with pytest.raises(Unanswered) as refused:
            BlockClient(served.address, retries=0).run({}, timeout=10)
        assert refused.value.count == 1 and "RESOURCE_EXHAUSTED" in str(refused.value)
        cause = refused.value.__cause__
        assert isinstance(cause, grpc.RpcError) and cause.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "AIOS_MAX_STREAMS" in (cause.details() or "")
        for s in open_streams:
            s.close()
            list(s.results())
        assert client.run({"again": 1}, timeout=10).ok  # a place is free again
