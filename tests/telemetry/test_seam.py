"""The ``Telemetry`` seam: bulk hooks, one per-packet path to them, ``wrap``, gauges as callables."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from aios_grpc.job import Job, Kind, Result
from aios_grpc.packet import AIOSPacket
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.settings import load_settings
from aios_grpc.telemetry import Observability, Telemetry
from aios_grpc.telemetry._base import GAUGES


def _job(seq_no: int = 0) -> Job:
    return Job(AIOSPacket(seq_no=seq_no), lambda result: None, source="grpc")


class Bulk(Telemetry):
    """Overrides only the bulk hooks."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.stages: list[tuple[int, str, float]] = []
        self.answered: list[tuple[int, Kind]] = []

    def packets_received(self, jobs: Any) -> None:
        self.received.extend(job.packet.seq_no for job in jobs)

    def stages_done(self, jobs: Any, stage: str, seconds: Any) -> None:
        self.stages.extend((job.packet.seq_no, stage, took) for job, took in zip(jobs, seconds, strict=True))

    def packets_answered(self, jobs: Any, results: Any) -> None:
        self.answered.extend((job.packet.seq_no, r.kind) for job, r in zip(jobs, results, strict=True))


def test_a_single_packet_call_reaches_the_bulk_hook() -> None:
    t = Bulk()
    t.packet_received(_job(1))
    t.packets_received([_job(2), _job(3)])
    t.stage_done(_job(1), "queue", 0.5)
    t.stages_done([_job(2)], "data", [0.25])
    t.packet_answered(_job(1), Result(Kind.OK))
    t.packets_answered([_job(2)], [Result(Kind.OK)])
    assert t.received == [1, 2, 3]
    assert t.stages == [(1, "queue", 0.5), (2, "data", 0.25)]
    assert t.answered == [(1, Kind.OK), (2, Kind.OK)]


def test_a_per_packet_override_may_call_super_without_coming_back() -> None:
    o = Observability(load_settings(metrics_port=-1))

    class Own(Observability):
        seen: list[int] = []

        def packet_received(self, job: Job) -> None:
            self.seen.append(job.packet.seq_no)
            super().packet_received(job)

    own = Own(load_settings(metrics_port=-1))
    own.packets_received([_job(1), _job(2)])
    own.packet_received(_job(3))
    o.packets_received([_job(1), _job(2)])
    o.packet_received(_job(3))
    assert Own.seen == [1, 2, 3]
    assert own.snapshot()["received"] == o.snapshot()["received"] == 3


def test_the_seam_has_no_per_packet_pairs_to_keep_in_sync() -> None:
    assert not hasattr(Telemetry, "queue_depth")
    assert not hasattr(Telemetry, "instrument")
    for single in ("packet_received", "stage_done", "packet_answered"):
        assert single not in Observability.__dict__


def test_wrap_leaves_the_block_method_to_the_adapter() -> None:
    class Block:
        def __init__(self) -> None:
            self.calls = 0

        def on_data(self, entry: Any) -> Any:
            self.calls += 1
            return True, None

        async def on_preprocess(self, packet: Any) -> Any:
            return True, [packet]

    block = Block()
    plain = BlockAdapter(block)
    assert plain.methods["on_data"] == block.on_data
    assert Telemetry().wrap("data", block.on_data) == block.on_data

    asked: list[str] = []

    class Asked(Telemetry):
        def wrap(self, stage: str, fn: Any) -> Any:
            asked.append(stage)
            return fn

    BlockAdapter(block, wrap=Asked().wrap)
    assert asked == ["preprocess", "data"]

    o = Observability(load_settings(metrics_port=-1))
    adapter = BlockAdapter(block, wrap=o.wrap)
    assert adapter.methods["on_data"] is not block.on_data
    assert adapter.is_async == {"on_data": False, "on_preprocess": True}
    assert asyncio.iscoroutinefunction(adapter.methods["on_preprocess"])
    adapter.methods["on_data"](object())
    assert block.calls == 1
    assert o.stage_seconds.count(("data",)) == 1
    assert o.wrap("batch", block.on_data) == block.on_data  # the batcher times batches; traced only


def test_gauges_are_the_callables_bind_was_given() -> None:
    reader = InMemoryMetricReader()
    o = Observability(load_settings(metrics_port=-1), metric_readers=[reader])
    assert _gauges(reader)["aios_queue_depth"] == 0.0  # nothing bound yet
    depth = [0]
    gauges = {
        "queue_depth": lambda: depth[0],
        "in_flight": lambda: 7,
        "open_streams": lambda: 2,
        "serving": lambda: True,
        "sidecar_push_failures": lambda: 3,
    }
    assert set(gauges) == set(GAUGES)
    o.bind(gauges)
    depth[0] = 4
    read = _gauges(reader)
    assert read["aios_queue_depth"] == 4.0
    assert read["aios_packets_in_flight"] == 7.0
    assert read["aios_open_streams"] == 2.0
    assert read["aios_serving"] == 1.0
    assert read["aios_muxer_open_groups"] == 0.0
    o.meter_provider.shutdown()


def _gauges(reader: InMemoryMetricReader) -> dict[str, float]:
    """One collection: each gauge's value by metric name."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        m.name: m.data.data_points[0].value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name
        in {"aios_queue_depth", "aios_packets_in_flight", "aios_open_streams", "aios_serving", "aios_muxer_open_groups"}
    }
