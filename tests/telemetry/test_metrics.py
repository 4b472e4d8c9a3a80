"""The Prometheus endpoint of a live server: built-in and user metrics match the traffic sent."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest
from aios_grpc_client import BlockClient, make_packet
from prometheus_client.parser import text_string_to_metric_families

from aios_grpc import AIOSMetrics
from aios_grpc.errors import ConfigurationError
from aios_grpc.packet import AIOSPacket
from aios_grpc.testing import serve_block
from tests.blocks.basic import EchoBlock
from tests.telemetry.blocks import MeteredBlock


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, keyed by (sample name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not exported; have {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def test_builtin_metrics_match_the_traffic(serve: Any) -> None:
    served = serve(EchoBlock)
    port = served.server.telemetry.metrics_port
    assert port > 0
    inputs = [
        *({"i": i} for i in range(5)),
        {"fail": "model said no"},
        {"fail": "again"},
        {"reject": "bad input"},
        make_packet("this is not JSON", session_id="session", seq_no=99),
    ]
    with BlockClient(served.address) as client:
        results = [r for r in client.process(inputs, timeout=30) if r.terminal]
    assert len(results) == 9
    assert sum(r.ok for r in results) == 5

    s = scrape(port)
    assert value(s, "aios_packets_received_total", source="grpc") == 9
    assert value(s, "aios_packets_answered_total", code="OK") == 5
    assert value(s, "aios_packets_answered_total", code="UNKNOWN") == 2
    assert value(s, "aios_packets_answered_total", code="INVALID_ARGUMENT") == 2
    assert value(s, "aios_packets_failed_total", stage="data", code="UNKNOWN") == 2
    assert value(s, "aios_packets_failed_total", stage="preprocess", code="INVALID_ARGUMENT") == 1
    assert value(s, "aios_packets_failed_total", stage="decode", code="INVALID_ARGUMENT") == 1
    assert value(s, "aios_packet_duration_seconds_count") == 9
    assert value(s, "aios_packet_duration_seconds_bucket", le="+Inf") == 9
    assert value(s, "aios_stage_duration_seconds_count", stage="queue") == 9
    # The bad-JSON packet is refused before on_preprocess runs.
    assert value(s, "aios_stage_duration_seconds_count", stage="preprocess") == 8
    # on_data runs for the 5 good packets and the 2 that fail in on_data.
    assert value(s, "aios_stage_duration_seconds_count", stage="data") == 7
    assert value(s, "aios_stage_duration_seconds_sum", stage="data") > 0
    assert value(s, "aios_queue_depth") == 0
    assert value(s, "aios_packets_in_flight") == 0
    assert value(s, "aios_serving") == 1


def test_in_flight_and_queue_depth_are_live(serve: Any) -> None:
    served = serve(EchoBlock, workers=1)
    port = served.server.telemetry.metrics_port
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        for i in range(3):
            stream.send(make_packet({"sleep": 0.6, "i": i}, session_id=f"s{i}", seq_no=1))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            s = scrape(port)
            if value(s, "aios_packets_in_flight") == 3:
                break
        assert value(s, "aios_packets_in_flight") == 3
        assert value(s, "aios_open_streams") == 1
        stream.close()
        assert sum(r.terminal for r in stream.results()) == 3
    s = scrape(port)
    assert value(s, "aios_packets_in_flight") == 0
    assert value(s, "aios_packets_answered_total", code="OK") == 3


def test_user_metrics_through_aiosmetrics(serve: Any) -> None:
    # One worker: a gauge keeps the last value set, and two threads may set it in either order.
    served = serve(MeteredBlock, workers=1)
    inputs = [{"camera": "front", "objects": 1}, {"camera": "front", "objects": 3}, {"camera": "rear", "objects": 7}]
    with BlockClient(served.address) as client:
        assert all(r.ok for r in client.process(inputs, timeout=30) if r.terminal)
    s = scrape(served.server.telemetry.metrics_port)
    assert value(s, "images_processed_total", camera="front") == 2
    assert value(s, "images_processed_total", camera="rear") == 1
    assert value(s, "model_temperature") == 70
    assert value(s, "objects_per_image_count") == 3
    assert value(s, "objects_per_image_sum") == 11
    assert value(s, "objects_per_image_bucket", le="2.0") == 1
    assert value(s, "objects_per_image_bucket", le="5.0") == 2
    assert value(s, "objects_per_image_bucket", le="+Inf") == 3
    # The in-memory values the seed's API reads agree with the export.
    assert served.server.context.metrics.value("images_processed_total", {"camera": "front"}) == 2


def test_registration_mistakes_are_errors_at_the_call(serve: Any) -> None:
    served = serve(MeteredBlock)
    metrics: AIOSMetrics = served.server.context.metrics
    with pytest.raises(ValueError, match="'nope' is not registered"):
        metrics.increment_counter("nope")
    with pytest.raises(ValueError, match=r"takes labels \['camera'\], got \['lens'\]"):
        metrics.increment_counter("images_processed_total", labels={"lens": "x"})
    with pytest.raises(ValueError, match="is a gauge, not a counter"):
        metrics.increment_counter("model_temperature")
    with pytest.raises(ValueError, match="already registered as a counter"):
        metrics.register_gauge("images_processed_total", "again", ["camera"])
    # None of the mistakes reached the exporter.
    s = scrape(served.server.telemetry.metrics_port)
    assert not any(name == "nope_total" for name, _ in s)


def test_metrics_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=rf"AIOS_METRICS_PORT.*{port}|{port}.*AIOS_METRICS_PORT"):
            serve_block(EchoBlock, metrics_port=port)


def test_metrics_port_minus_one_turns_the_endpoint_off(serve: Any) -> None:
    served = serve(EchoBlock, metrics_port=-1)
    assert served.server.telemetry.metrics_port == 0
    with BlockClient(served.address) as client:
        assert client.run({"x": 1}, timeout=10).ok
    assert served.server.telemetry.snapshot()["answered"] == 1


def test_muxer_groups_batch_sizes_and_loop_lag(serve: Any) -> None:
    from tests.runtime.blocks import BatchBlock, MuxBlock

    muxed = serve(MuxBlock, block_init_parameters={"n": 2, "timeout_s": 30}, loop_block_threshold_s=0.05)
    with BlockClient(muxed.address) as client:
        stream = client.stream(timeout=30)
        stream.send(make_packet({"part": 1}, session_id="g", seq_no=1))
        port = muxed.server.telemetry.metrics_port
        deadline = time.monotonic() + 10
        while value(scrape(port), "aios_muxer_open_groups") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert value(scrape(port), "aios_muxer_open_groups") == 1
        stream.send(make_packet({"part": 2}, session_id="g", seq_no=1))
        stream.close()
        assert sum(r.terminal for r in stream.results()) == 2
    s = scrape(port)
    assert value(s, "aios_muxer_open_groups") == 0
    assert value(s, "aios_packets_answered_total", code="OK") == 2
    # The watchdog ticks every 25 ms and reports each tick's lag.
    deadline = time.monotonic() + 10
    while value(scrape(port), "aios_event_loop_lag_seconds_count") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert value(scrape(port), "aios_event_loop_lag_seconds_count") > 0

    batched = serve(BatchBlock, block_init_parameters={"n": 4, "t": 2.0})
    packets = [make_packet({"i": i}, session_id=f"s{i}", seq_no=1) for i in range(8)]
    with BlockClient(batched.address) as client:
        assert sum(r.ok for r in client.process(packets, coalesce=8, timeout=30) if r.terminal) == 8
    s = scrape(batched.server.telemetry.metrics_port)
    sizes = batched.server.scheduler.block.instance.sizes
    assert value(s, "aios_batch_size_count") == len(sizes)
    assert value(s, "aios_batch_size_sum") == 8
    assert value(s, "aios_stage_duration_seconds_count", stage="batch") == 8


def _get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def test_process_and_python_metrics_pass_promtool(serve: Any) -> None:
    served = serve(EchoBlock)
    with BlockClient(served.address) as client:
        assert client.run({"i": 1}).ok
    status, content_type, text = _get(served.server.telemetry.metrics_port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"} <= names
    assert {"python_info", "python_gc_collections"} <= names
    promtool = shutil.which("promtool")  # Debian's prometheus package; the parser above otherwise
    if promtool is not None:
        checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        # Exit 0: no errors. Lint hints (naming advice) are printed but do not fail the check.
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_only_the_metrics_path_answers(serve: Any) -> None:
    served = serve(EchoBlock)
    port = served.server.telemetry.metrics_port
    for path in ("/", "/health", "/healthz", "/metrics/extra", "/favicon.ico"):
        status, _, body = _get(port, path)
        assert status == 404, path
        assert "/metrics" in body
    assert _get(port, "/metrics?name[]=x")[0] == 200


def test_control_plane_calls_are_counted_and_timed(serve: Any) -> None:
    served = serve(EchoBlock)
    with BlockClient(served.address) as client:
        client.get_info()
        client.get_info()
        client.set_parameters({"threshold": 0.7})
        with pytest.raises(grpc.RpcError):
            client.management("no.such.action", {})
    s = scrape(served.server.telemetry.metrics_port)
    assert value(s, "aios_control_requests_total", rpc="GetInfo", code="OK") == 2
    assert value(s, "aios_control_requests_total", rpc="SetParameters", code="OK") == 1
    assert value(s, "aios_control_requests_total", rpc="Management", code="UNIMPLEMENTED") == 1
    assert value(s, "aios_control_duration_seconds_count", rpc="GetInfo") == 2
    assert value(s, "aios_control_duration_seconds_sum", rpc="Management") > 0


def test_failed_side_car_pushes_are_counted_on_the_metrics_endpoint(serve: Any) -> None:
    served = serve(EchoBlock, workers=1)
    port = served.server.telemetry.metrics_port
    assert value(scrape(port), "aios_sidecar_push_failures_total") == 0
    side_cars = served.server.context.side_cars
    assert side_cars.push_to_sidecar("not-configured", AIOSPacket(session_id="s", seq_no=1)) is False
    assert value(scrape(port), "aios_sidecar_push_failures_total") == 1
