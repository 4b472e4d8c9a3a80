"""A batch's or a chunk's answers in one step (``Scheduler.answer_each``/``answer_outcomes``):
the same answers, counts and telemetry as ``answer`` per job."""

from __future__ import annotations

from typing import Any

from aios_grpc import OnDataResult
from aios_grpc.errors import InvalidPacket
from aios_grpc.job import Job, Kind, Result
from aios_grpc.packet import AIOSPacket
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.settings import load_settings
from aios_grpc.telemetry import Observability, Telemetry


class Echo:
    def __init__(self, context: Any) -> None:
        pass

    def on_data(self, entry: Any) -> Any:
        return True, OnDataResult(output={})


class Counting(Telemetry):
    def __init__(self) -> None:
        self.answered: list[tuple[int, Kind]] = []

    def packet_answered(self, job: Job, result: Result) -> None:
        self.answered.append((job.packet.seq_no, result.kind))


async def _scheduler(telemetry: Telemetry) -> Scheduler:
    scheduler = Scheduler(BlockAdapter(Echo(None)), load_settings(workers=1), telemetry=telemetry)
    await scheduler.configure()
    await scheduler.start()
    return scheduler


def _jobs(got: list[tuple[int, Result]], n: int) -> list[Job]:
    def reply_for(seq_no: int) -> Any:
        return lambda result: got.append((seq_no, result))

    return [Job(AIOSPacket(session_id="s", seq_no=k), reply_for(k)) for k in range(1, n + 1)]


async def test_answer_each_answers_in_order_and_counts_each_packet_once() -> None:
    telemetry = Counting()
    scheduler = await _scheduler(telemetry)
    got: list[tuple[int, Result]] = []
    jobs = _jobs(got, 4)
    merged = Job(AIOSPacket(session_id="m", seq_no=9), lambda result: None, members=jobs[:2])
    scheduler.in_flight = 2 + 2  # as submit counted them: jobs 3 and 4, and the merged job's two members
    scheduler.answer(jobs[2], Result(Kind.OK))  # answered already: not answered or counted again
    assert scheduler.in_flight == 3
    scheduler._idle.clear()  # type: ignore[union-attr]
    results = [Result(Kind.OK, AIOSPacket(seq_no=n)) for n in (9, 3, 4)]
    scheduler.answer_each([merged, jobs[2], jobs[3]], results)
    assert [(n, r.kind) for n, r in got] == [(3, Kind.OK), (4, Kind.OK)]
    assert got[1][1] is results[2]
    assert telemetry.answered == [(3, Kind.OK), (9, Kind.OK), (4, Kind.OK)]
    assert scheduler.in_flight == 0 and scheduler._idle.is_set()  # type: ignore[union-attr]
    assert scheduler.completed == 3
    await scheduler.stop()


async def test_answer_outcomes_sends_a_lot_with_any_other_outcome_through_finish() -> None:
    telemetry = Counting()
    scheduler = await _scheduler(telemetry)
    got: list[tuple[int, Result]] = []
    jobs = _jobs(got, 5)
    scheduler.in_flight = 5
    outputs = [AIOSPacket(seq_no=n) for n in range(6)]
    scheduler.answer_outcomes(jobs[:2], [[outputs[1]], [outputs[2]]])
    # An error, two outputs (each a partial, then OK without output), none (answered already).
    scheduler.answer_outcomes(jobs[2:], [InvalidPacket("bad", stage="data"), [outputs[4], outputs[5]], None])
    assert [(n, r.kind) for n, r in got] == [
        (1, Kind.OK),
        (2, Kind.OK),
        (3, Kind.ERROR),
        (4, Kind.PARTIAL),
        (4, Kind.PARTIAL),
        (4, Kind.OK),
    ]
    assert [r.output for _, r in got] == [outputs[1], outputs[2], None, outputs[4], outputs[5], None]
    assert telemetry.answered == [(1, Kind.OK), (2, Kind.OK), (3, Kind.ERROR), (4, Kind.OK)]
    assert scheduler.in_flight == 1  # job 5's answer came from elsewhere (its thread)
    scheduler.in_flight = 0
    await scheduler.stop()


def test_packets_answered_records_what_packet_answered_records() -> None:
    jobs = [Job(AIOSPacket(seq_no=n), lambda result: None) for n in range(5)]
    results = [Result(Kind.OK), Result(Kind.ERROR, error=InvalidPacket("bad", stage="decode"))] + [
        Result(Kind.OK) for _ in range(3)
    ]
    one_step = Observability(load_settings(metrics_port=-1))
    one_step.packets_answered(jobs, results)
    each = Observability(load_settings(metrics_port=-1))
    for job, result in zip(jobs, results, strict=True):
        each.packet_answered(job, result)
    for telemetry in (one_step, each):
        telemetry.answered.fold()
        telemetry.failed.fold()
    assert one_step.answered.values == each.answered.values == {("OK",): 4.0, ("INVALID_ARGUMENT",): 1.0}
    assert one_step.failed.values == each.failed.values == {("decode", "INVALID_ARGUMENT"): 1.0}
    assert one_step.packet_seconds.count() == each.packet_seconds.count() == 5
    assert one_step.snapshot()["last_answered_at"] > 0

    class Own(Observability):
        seen: list[int] = []

        def packet_answered(self, job: Job, result: Result) -> None:
            self.seen.append(job.packet.seq_no)

    Own(load_settings(metrics_port=-1)).packets_answered(jobs, results)
    assert Own.seen == [0, 1, 2, 3, 4]  # an override of the per-packet hook still sees every packet


def test_a_served_block_with_its_graph_router_answers_a_chunk_in_one_step(serve, monkeypatch) -> None:
    """BlockServer installs GraphRouter; packets with an empty output_ptr still take the bulk path."""
    from aios_grpc_client import BlockClient, make_packet

    from aios_grpc.routing import GraphRouter

    lots: list[int] = []
    original = Scheduler.answer_each

    def counting(self: Scheduler, jobs: Any, results: Any) -> None:
        lots.append(len(jobs))
        original(self, jobs, results)

    monkeypatch.setattr(Scheduler, "answer_each", counting)
    served = serve(Echo)
    assert isinstance(served.server.router, GraphRouter)
    with BlockClient(served.address) as client:
        packets = [make_packet({"n": k}, session_id="s", seq_no=k) for k in range(1, 41)]
        results = [r for r in client.process(packets, timeout=60) if r.terminal]
    assert len(results) == 40 and all(r.ok for r in results)
    assert sum(lots) == 40  # every packet answered through answer_each, none one by one
