"""The server's path for coalesced requests (several packets per ProcessRequest), in process.

A request whose packets all find window places has its jobs made in one loop and
queued in one step (``Scheduler.try_submit_many``); what does not fit in the queue
waits, in order, as a packet of a single-packet request does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from aios_grpc import OnDataResult
from aios_grpc._pb import pb
from aios_grpc.converters import packet_from_proto
from aios_grpc.job import Job, Kind, Result
from aios_grpc.packet import AIOSPacket, FileInfo
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.runtime.queue import JobQueue
from aios_grpc.service.servicer import BlockServicer
from aios_grpc.settings import load_settings
from aios_grpc.telemetry import Observability, Telemetry


class Gated:
    """async on_data that waits for ``gate`` (set by the test) before answering."""

    gate: asyncio.Event

    def __init__(self, context: Any) -> None:
        pass

    async def on_data(self, entry: Any) -> Any:
        await Gated.gate.wait()
        return True, OnDataResult(output={"n": entry.packet.seq_no})


class Aborted(Exception):
    """What the fake context's ``abort`` raises (grpc's raises its AbortError)."""


class Context:
    aborted: tuple[Any, str] | None = None

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: Any, details: str) -> None:
        Context.aborted = (code, details)
        raise Aborted(details)


class Counting(Telemetry):
    def __init__(self) -> None:
        self.received: list[int] = []

    def packet_received(self, job: Job) -> None:
        self.received.append(job.packet.seq_no)


def _request(seq_nos: range, session_id: str = "s", deadline: float = 0.0) -> pb.ProcessRequest:
    return pb.ProcessRequest(
        packets=[pb.Packet(session_id=session_id, seq_no=n, data="{}", deadline=deadline) for n in seq_nos]
    )


async def _scheduler(telemetry: Telemetry | None = None, **settings: Any) -> Scheduler:
    Gated.gate = asyncio.Event()
    scheduler = Scheduler(BlockAdapter(Gated(None)), load_settings(**settings), telemetry=telemetry)
    await scheduler.configure()
    await scheduler.start()
    return scheduler


async def _serve(scheduler: Scheduler, requests: list[pb.ProcessRequest], answers: list[tuple[int, int, str]]) -> None:
    servicer = BlockServicer(256)
    servicer.attach(scheduler, None)  # type: ignore[arg-type]
    _serve.servicer = servicer  # type: ignore[attr-defined]

    async def feed() -> AsyncIterator[pb.ProcessRequest]:
        for request in requests:
            yield request
        await asyncio.Event().wait()  # the caller keeps its side open

    Context.aborted = None
    try:
        async for response in servicer.Process(feed(), Context()):  # type: ignore[arg-type]
            answers.extend((r.seq_no, r.kind, r.error.code_name) for r in response.results)
    except Aborted:
        pass


async def _until(check: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.001)


async def test_a_full_queue_midway_through_a_request_makes_the_rest_wait_not_dropped() -> None:
    telemetry = Counting()
    scheduler = await _scheduler(telemetry, workers=1, max_queued=3)
    answers: list[tuple[int, int, str]] = []
    serving = asyncio.create_task(_serve(scheduler, [_request(range(1, 9)), _request(range(9, 13))], answers))
    # One packet in the block, three queued: the reader waits with the rest of the first request.
    await _until(lambda: scheduler.queue_depth == 3 and scheduler.in_flight >= 4)
    await asyncio.sleep(0.02)
    assert scheduler.in_flight < 12 and not answers
    Gated.gate.set()
    await _until(lambda: len(answers) == 12)
    assert answers == [(n, Kind.OK, "") for n in range(1, 13)]  # every packet, once, in order
    assert telemetry.received == list(range(1, 13))  # each counted once, in order
    assert scheduler.in_flight == 0
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await scheduler.stop()


async def test_draining_while_the_rest_of_a_request_waits_answers_every_packet() -> None:
    scheduler = await _scheduler(workers=1, max_queued=2)
    answers: list[tuple[int, int, str]] = []
    serving = asyncio.create_task(_serve(scheduler, [_request(range(1, 9))], answers))
    await _until(lambda: scheduler.queue_depth == 2 and scheduler.in_flight == 4)
    _serve.servicer.end_streams()  # type: ignore[attr-defined]
    await _until(lambda: scheduler.in_flight == 3)  # the packet waiting for the queue is answered
    # It and those behind it are UNAVAILABLE, sent in order once the packets before
    # them (still running) are answered.
    await asyncio.sleep(0.02)
    assert not answers
    Gated.gate.set()
    await asyncio.wait_for(serving, 5)
    assert answers == [(n, Kind.OK, "") for n in range(1, 4)] + [(n, Kind.ERROR, "UNAVAILABLE") for n in range(4, 9)]
    # The caller had not half-closed: the stream ends UNAVAILABLE, never OK (packets may be unread).
    assert Context.aborted is not None and Context.aborted[0] == grpc.StatusCode.UNAVAILABLE
    assert scheduler.in_flight == 0
    await scheduler.stop()


async def test_a_coalesced_request_is_queued_in_one_step_with_its_packets_deadlines() -> None:
    scheduler = await _scheduler(workers=1)
    queued: list[list[Job]] = []
    many = scheduler.try_submit_many

    def spy(jobs: list[Job]) -> int:
        queued.append(list(jobs))
        return many(jobs)

    scheduler.try_submit_many = spy  # type: ignore[method-assign]
    Gated.gate.set()
    answers: list[tuple[int, int, str]] = []
    in_a_minute = time.time() + 60
    serving = asyncio.create_task(
        _serve(scheduler, [_request(range(1, 5)), _request(range(5, 9), deadline=in_a_minute)], answers)
    )
    await _until(lambda: len(answers) == 8)
    assert [[job.packet.seq_no for job in jobs] for jobs in queued] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert all(job.deadline == 0.0 and job.source == "grpc" for job in queued[0])
    for job in queued[1]:
        assert abs(job.deadline - (time.monotonic() + 60)) < 5
    assert answers == [(n, Kind.OK, "") for n in range(1, 9)]
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await scheduler.stop()


async def test_try_submit_many_takes_what_fits_and_counts_it_once() -> None:
    telemetry = Counting()
    scheduler = await _scheduler(telemetry, workers=1, max_queued=3)
    scheduler._tasks[0].cancel()  # no worker: the queue only fills
    await asyncio.gather(*scheduler._tasks, return_exceptions=True)
    jobs = [Job(AIOSPacket(session_id="s", seq_no=n), lambda result: None) for n in range(1, 6)]
    assert scheduler.try_submit_many(jobs) == 3
    assert scheduler.queue_depth == 3 and scheduler.in_flight == 3 and telemetry.received == [1, 2, 3]
    assert scheduler.try_submit_many(jobs[3:]) == 0  # full: nothing done
    assert scheduler.in_flight == 3 and telemetry.received == [1, 2, 3]
    scheduler.accepting = False  # draining: one by one (try_submit answers them)
    assert scheduler.try_submit_many(jobs[3:]) == 0
    scheduler.in_flight = 0
    await scheduler.stop()


async def test_put_many_nowait_wakes_one_getter_per_job() -> None:
    queue = JobQueue(4)
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    jobs = [Job(AIOSPacket(seq_no=n), lambda result: None) for n in (1, 2)]
    queue.put_many_nowait(jobs)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [g.result() for g in getters if g.done()] == jobs
    assert not getters[2].done()
    with pytest.raises(asyncio.QueueFull):
        queue.put_many_nowait([Job(AIOSPacket(seq_no=n), lambda result: None) for n in range(5)])
    getters[2].cancel()


def test_packets_received_counts_each_packet_once_by_source() -> None:
    observability = Observability(load_settings(metrics_port=-1))
    jobs = [Job(AIOSPacket(seq_no=n), lambda result: None, source="grpc") for n in range(3)]
    observability.packets_received(jobs)
    observability.packet_received(Job(AIOSPacket(), lambda result: None, source="redis"))
    observability.received.fold()
    assert observability.received.values == {("grpc",): 3.0, ("redis",): 1.0}

    class Own(Observability):
        seen: list[int] = []

        def packet_received(self, job: Job) -> None:
            self.seen.append(job.packet.seq_no)

    Own(load_settings(metrics_port=-1)).packets_received(jobs)
    assert Own.seen == [0, 1, 2]  # an override of the per-packet hook still sees every packet


@pytest.mark.parametrize("files", [[], [("{}", b"a")], [("{}", b"a"), ("", b"")]])
def test_packet_from_proto_copies_every_file(files: list[tuple[str, bytes]]) -> None:
    msg = pb.Packet(
        session_id="s",
        seq_no=3,
        data="{}",
        ts=1.5,
        headers={"k": "v"},
        deadline=2.5,
        files=[pb.FileInfo(metadata=m, file_data=d) for m, d in files],
    )
    packet = packet_from_proto(msg)
    assert packet == AIOSPacket("s", 3, "{}", 1.5, "", [FileInfo(m, d) for m, d in files], {"k": "v"}, 2.5)


def test_results_keep_their_kind_number() -> None:
    from aios_grpc.service.stream import fill_results as _fill_results

    for kind in Kind:
        response = pb.ProcessResponse()
        _fill_results(response.results.add, [("s", 1, Result(kind))])
        _fill_results(lambda: response.result, [("s", 1, Result(kind))])  # noqa: B023  (called at once)
        assert response.results[0].kind == response.result.kind == int(kind)
