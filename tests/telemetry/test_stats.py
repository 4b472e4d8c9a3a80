"""The built-in aggregates: exact totals under concurrent writers and collections, bounded memory."""

from __future__ import annotations

import math
import random
import sys
import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

import pytest

from aios_grpc import OnDataResult, PreProcessResult
from aios_grpc.job import Job, Kind, Result
from aios_grpc.packet import AIOSPacket
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.settings import load_settings
from aios_grpc.telemetry import Observability, Telemetry
from aios_grpc.telemetry._stats import FOLD_AT, Counter, Histo, Stats

BOUNDS = (0.001, 0.01, 0.1, 0.5, 1.0)


class Reference:
    """One series aggregated a sample at a time, as the metrics must read."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value
        self.min = min(self.min, value) if value == value else self.min
        self.max = max(self.max, value) if value == value else self.max


def point(h: Histo, **labels: str) -> Any:
    """The data point of ``h`` with ``labels`` (collecting now), or None."""
    for p in h.metric(0, 1).data.data_points:
        if p.attributes == labels:
            return p
    return None


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so that races show."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_buckets_sum_min_max_match_one_sample_at_a_time() -> None:
    rng = random.Random(7)
    values: list[float] = [rng.choice(BOUNDS) for _ in range(200)]  # exactly on a bound: the lower bucket
    values += [rng.uniform(0, 2) for _ in range(3000)] + [0.0, -1.0, 5, math.inf]
    rng.shuffle(values)
    h = Histo("h", "", "s", [], BOUNDS)
    ref = Reference(BOUNDS)
    for i, v in enumerate(values):
        h.observe(v)
        ref.add(v)
        if i % 777 == 0:
            assert h.count() == ref.count  # a read in the middle folds what is pending
    p = point(h)
    assert list(p.bucket_counts) == ref.counts
    assert p.count == ref.count == len(values)
    assert p.sum == pytest.approx(ref.sum, rel=1e-12)
    assert (p.min, p.max) == (ref.min, ref.max) == (-1.0, math.inf)


def test_a_nan_sample_lands_where_it_did_one_at_a_time() -> None:
    h = Histo("h", "", "s", [], BOUNDS)
    ref = Reference(BOUNDS)
    for v in (0.2, math.nan, 0.005, 3.0):
        h.observe(v)
        ref.add(v)
    p = point(h)
    assert list(p.bucket_counts) == ref.counts
    assert (p.count, p.min, p.max) == (4, 0.005, 3.0)
    assert math.isnan(p.sum)


def test_no_sample_lost_or_counted_twice_while_collections_run(busy_switching: None) -> None:
    stats = Stats()
    h = stats.histogram("h", "", "s", ["stage"], BOUNDS)
    c = stats.counter("c", "", "", ["source"])
    writers, per_writer = 4, 20_000
    # Multiples of 1/1024 below 1 add up exactly in any order, so sums compare exactly.
    samples = [[((w * 7919 + i * 104729) % 1024) / 1024 for i in range(per_writer)] for w in range(writers)]
    start = threading.Barrier(writers + 1)
    done = threading.Event()
    seen: list[float] = []

    def write(w: int) -> None:
        key = ("even" if w % 2 == 0 else "odd",)
        start.wait()
        for v in samples[w]:
            h.observe(v, key)
            c.add(key)

    def collect() -> None:
        start.wait()
        while not done.is_set():
            stats.metrics()
            h.count(("even",))
            seen.append(c.total())

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    collector = threading.Thread(target=collect)
    for t in (*threads, collector):
        t.start()
    for t in threads:
        t.join()
    done.set()
    collector.join()

    assert len(seen) > 1, "the collector never ran while the writers did"
    assert seen == sorted(seen) and seen[-1] <= writers * per_writer
    for key, ws in (("even", (0, 2)), ("odd", (1, 3))):
        ref = Reference(BOUNDS)
        for w in ws:
            for v in samples[w]:
                ref.add(v)
        p = point(h, stage=key)
        assert p.count == ref.count == len(ws) * per_writer
        assert p.sum == ref.sum
        assert list(p.bucket_counts) == ref.counts
        assert (p.min, p.max) == (ref.min, ref.max)
    assert c.total() == writers * per_writer
    assert c.values == {("even",): 2 * per_writer, ("odd",): 2 * per_writer}


def test_pending_samples_stay_bounded_when_nothing_collects() -> None:
    h = Histo("h", "", "s", ["k"], BOUNDS)
    c = Counter("c", "", "", ["k"])
    n = 10 * FOLD_AT + 3
    for _ in range(n):
        h.observe(0.05, ("a",))
        c.add(("a",))
        assert len(h.series[("a",)].pending) < FOLD_AT
        assert len(c.pending) < FOLD_AT
    assert h.count(("a",)) == n
    assert c.total() == n


def test_a_counter_adds_amounts_other_than_one() -> None:
    c = Counter("c", "", "", ["k"])
    c.add(("a",))
    c.add(("a",), 2.5)
    c.add(("b",))
    assert c.total() == 4.5
    points = {tuple(p.attributes.items()): p.value for p in c.metric(0, 1).data.data_points}
    assert points == {(("k", "a"),): 3.5, (("k", "b"),): 1.0}


def test_a_labelled_series_is_exported_from_its_first_sample_only() -> None:
    stats = Stats()
    h = stats.histogram("h", "", "s", ["stage"], BOUNDS)
    unlabelled = stats.histogram("u", "", "s", [], BOUNDS)
    h.pending_list(("queue",))  # made ahead of use, as the hooks do
    assert point(h, stage="queue") is None
    assert point(unlabelled).count == 0  # one series only: shown as 0 from the start
    h.observe(0.2, ("queue",))
    assert point(h, stage="queue").count == 1


# -- Observability's hooks ---------------------------------------------------------------


class _Block:
    def on_data(self, entry: PreProcessResult) -> Any:
        return True, OnDataResult(output={"ok": True})


def _observability() -> Observability:
    return Observability(load_settings(metrics_port=-1))


def _job() -> Job:
    return Job(AIOSPacket(session_id="s", seq_no=1, data="{}"), lambda result: None, source="grpc")


def _histogram(o: Observability, name: str) -> dict[tuple[Any, ...], int]:
    for m in o.stats.metrics():
        if m.name == name:
            return {tuple(p.attributes.values()): p.count for p in m.data.data_points}
    raise AssertionError(f"{name} not collected")


def test_hooks_fold_when_nothing_collects() -> None:
    o = _observability()
    adapter = BlockAdapter(_Block(), wrap=o.wrap)
    on_data = adapter.methods["on_data"]
    entry = PreProcessResult(packet=AIOSPacket(session_id="s", seq_no=1, data="{}"))
    n = 3 * FOLD_AT + 5
    for _ in range(n):
        job = _job()
        o.packet_received(job)
        o.stage_done(job, "queue", 0.001)
        on_data(entry)
        o.packet_answered(job, Result(Kind.OK))
    assert max(len(s.pending) for s in o.stage_seconds.series.values()) < FOLD_AT
    assert len(o.packet_seconds.series[()].pending) < FOLD_AT
    assert len(o.received.pending) < FOLD_AT and len(o.answered.pending) < FOLD_AT
    assert o.snapshot()["received"] == o.snapshot()["answered"] == n
    assert _histogram(o, "aios_stage_duration_seconds") == {("queue",): n, ("data",): n}
    assert _histogram(o, "aios_packet_duration_seconds") == {(): n}


def test_timed_on_data_counts_every_call_from_many_threads(busy_switching: None) -> None:
    o = _observability()
    adapter = BlockAdapter(_Block(), wrap=o.wrap)
    on_data = adapter.methods["on_data"]
    entry = PreProcessResult(packet=AIOSPacket(session_id="s", seq_no=1, data="{}"))
    threads, calls = 4, 5_000
    stop = threading.Event()

    def work() -> None:
        for _ in range(calls):
            on_data(entry)

    def scrape() -> None:
        while not stop.is_set():
            o.stats.metrics()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    scraper.join()
    assert _histogram(o, "aios_stage_duration_seconds") == {("data",): threads * calls}


def test_stages_done_is_stage_done_per_job() -> None:
    calls: list[tuple[Job, str, float]] = []

    class Recording(Telemetry):
        def stage_done(self, job: Job, stage: str, seconds: float) -> None:
            calls.append((job, stage, seconds))

    jobs = [_job(), _job()]
    Recording().stages_done(jobs, "queue", [0.5, 0.25])
    assert calls == [(jobs[0], "queue", 0.5), (jobs[1], "queue", 0.25)]
    with pytest.raises(ValueError):
        Recording().stages_done(jobs, "queue", [0.5])

    o = _observability()
    o.stages_done(jobs, "queue", [0.5, 0.25])
    o.stages_done(jobs, "route", [0.002, 0.003])
    o.stage_done(jobs[0], "queue", 0.1)
    assert _histogram(o, "aios_stage_duration_seconds") == {("queue",): 3, ("route",): 2}
    assert o.stage_seconds.count(("queue",)) == 3
    with pytest.raises(ValueError, match="2 jobs but 1 durations"):
        o.stages_done(jobs, "queue", [0.5])
