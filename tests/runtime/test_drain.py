"""Drain: SIGTERM and server.stop() answer what was sent, refuse what is new, and exit."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest
from aios_grpc_client import BlockClient, Unanswered, make_packet

from tests.runtime.blocks import BatchBlock


def _collect(stream, into: list, errors: list) -> threading.Thread:
    def run() -> None:
        try:
            for r in stream.results():
                into.append(r)
        except grpc.RpcError as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_sigterm_mid_load_answers_every_packet_sent_before_it(spawn):
    server = spawn("tests.blocks.basic:EchoBlock", env={"AIOS_GRACE_PERIOD_S": "10", "AIOS_WORKERS": "2"})
    results: list = []
    errors: list = []
    with BlockClient(server.address) as client:
        client.wait_until_serving(10)
        stream = client.stream(timeout=60)
        reader = _collect(stream, results, errors)
        for k in range(60):
            stream.send(make_packet({"i": k, "sleep": 0.02}, session_id=f"s{k % 3}", seq_no=k))
            time.sleep(0.003)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        sent_before = 60
        # The stream stays open (no half-close): the server must end it itself.
        for k in range(60, 70):
            try:
                stream.send(make_packet({"i": k}, session_id="late", seq_no=k))
            except RuntimeError:
                break
        reader.join(30)
        assert not reader.is_alive()
        rc = server.proc.wait(15)
        exited_after = time.monotonic() - signalled
    # The stream was open for sending: it ends UNAVAILABLE (resend what got no answer), not
    # OK, which would say every packet sent was answered, and not cancelled.
    assert [e.code() for e in errors] == [grpc.StatusCode.UNAVAILABLE], errors
    assert "resend" in (errors[0].details() or "")
    assert rc == 0
    assert exited_after < 10  # within the grace period
    terminal: dict[int, list] = {}
    for r in results:
        if r.terminal:
            terminal.setdefault(r.seq_no, []).append(r)
    for k in range(sent_before):
        assert len(terminal.get(k, [])) == 1, f"packet {k} got {terminal.get(k)}"
    assert all(len(v) == 1 for v in terminal.values())
    oks = [k for k in range(sent_before) if terminal[k][0].ok]
    assert oks, "packets in flight when the signal came must be finished, not dropped"
    for k in range(sent_before):
        r = terminal[k][0]
        if not r.ok:
            assert r.error.code == grpc.StatusCode.UNAVAILABLE and r.error.retryable
    log = server.rest_of_log()
    assert "draining" in log and "stopped" in log


def test_second_sigterm_exits_at_once(spawn):
    server = spawn("tests.blocks.basic:EchoBlock", env={"AIOS_GRACE_PERIOD_S": "60"})
    with BlockClient(server.address) as client:
        client.wait_until_serving(10)
        stream = client.stream(timeout=60)
        stream.send(make_packet({"sleep": 30}, session_id="s", seq_no=1))
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert server.proc.poll() is None, "the first SIGTERM drains: the packet is still running"
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(5) == 1
        stream.cancel()


def test_stuck_block_code_does_not_hold_the_exit_past_the_grace_period(spawn):
    server = spawn("tests.blocks.basic:EchoBlock", env={"AIOS_GRACE_PERIOD_S": "1"})
    with BlockClient(server.address) as client:
        client.wait_until_serving(10)
        stream = client.stream(timeout=60)
        stream.send(make_packet({"sleep": 30}, session_id="s", seq_no=1))
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(10)  # raises TimeoutExpired if it waited for the 30 s call
        stream.cancel()
    assert "still running after the grace period" in server.rest_of_log()


def test_stop_flushes_the_open_batch_refuses_new_streams_and_reports_not_serving(serve):
    served = serve(BatchBlock, block_init_parameters={"n": 32, "t": 60.0})
    results: list = []
    errors: list = []
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        reader = _collect(stream, results, errors)
        stream.send(make_packet({"i": 0, "sleep": 0.6}, session_id="s", seq_no=0))
        time.sleep(0.1)
        for k in range(1, 4):  # an open batch: the slot is busy and T is a minute
            stream.send(make_packet({"i": k}, session_id="s", seq_no=k))
        time.sleep(0.1)
        stopper = threading.Thread(target=served.close, kwargs={"grace_s": 10})
        started = time.monotonic()
        stopper.start()
        deadline = time.monotonic() + 2
        while served.server.health.serving and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not served.server.health.serving
        with BlockClient(served.address, retries=0) as once, pytest.raises(Unanswered) as err:
            once.run({"i": 99}, timeout=5)  # refused: the client names it unanswered
        cause = err.value.__cause__
        assert isinstance(cause, grpc.RpcError) and cause.code() == grpc.StatusCode.UNAVAILABLE
        reader.join(15)
        stopper.join(15)
        took = time.monotonic() - started
    assert [e.code() for e in errors] == [grpc.StatusCode.UNAVAILABLE]  # open for sending: never OK
    assert [r.seq_no for r in results] == [0, 1, 2, 3] and all(r.ok for r in results)
    assert results[1].data["size"] == 3  # the open batch ran whole, without waiting T
    assert took < 10


def test_stop_answers_a_batch_cancelled_before_it_started():
    import asyncio

    from aios_grpc import TestContext
    from aios_grpc.job import Job
    from aios_grpc.packet import AIOSPacket
    from aios_grpc.runtime import Scheduler
    from aios_grpc.runtime.adapter import BlockAdapter
    from aios_grpc.settings import load_settings

    async def main() -> list:
        ctx = TestContext()
        ctx.block_init_parameters = {"n": 4, "t": 0.0}
        sched = Scheduler(BlockAdapter(BatchBlock(ctx)), load_settings(loop_block_threshold_s=0))
        await sched.configure()
        await sched.start()
        answers: list = []
        for k in range(3):
            await sched.submit(Job(AIOSPacket(session_id="s", seq_no=k, data="{}"), answers.append))
        await asyncio.sleep(0)  # the former forms the batch and creates its task
        assert sched.batch_stage.running == 1
        await sched.batch_stage.cancel()  # before the task's first step
        assert sched.batch_stage.running == 0
        await sched.stop()
        return answers

    answers = asyncio.run(main())
    assert len(answers) == 3
    assert all(a.error is not None and "shutting down" in str(a.error) for a in answers)
