"""Instance health tells the truth: start-up, health(), scheduler progress, drain; Watch sees each change."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import Any

import grpc
from aios_grpc_client import BlockClient, make_packet
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.blocks.basic import EchoBlock
from tests.helpers import wait_for
from tests.telemetry.blocks import StallBlock

SERVICE = "aios.block.v1.BlockService"


class Watcher:
    """Collects every status a Health/Watch stream sends, in a thread."""

    def __init__(self, address: str, service: str = "") -> None:
        self.statuses: list[str] = []
        self.code: grpc.StatusCode | None = None  # how the stream ended
        self.channel = grpc.insecure_channel(address)
        stub = health_pb2_grpc.HealthStub(self.channel)
        self.call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=60)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for response in self.call:
                self.statuses.append(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
            self.code = self.call.code()
        except grpc.RpcError as exc:
            self.code = exc.code()

    def wait(self, count: int) -> list[str]:
        wait_for(lambda: len(self.statuses) >= count, what=f"{count} statuses, have {self.statuses}")
        return self.statuses

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()
        self.thread.join(5)


def cli_health(address: str, service: str = "") -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "aios_grpc", "health", address, "--timeout", "5"]
    if service:
        args += ["--service", service]
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def check(address: str, service: str) -> str:
    with BlockClient(address) as client:
        return client.health(service)


def test_transitions_start_unhealthy_healthy_drain(spawn: Any) -> None:
    proc = spawn(
        "tests.telemetry.blocks:SwitchableHealth",
        env={
            "AIOS_HEALTH_INTERVAL_S": "0.1",
            "AIOS_GRACE_PERIOD_S": "1",
            "AIOS_BLOCK_INIT_PARAMETERS": '{"init_s": 1.0}',
        },
    )
    watchers = [Watcher(proc.address), Watcher(proc.address, SERVICE)]
    try:
        # Starting: __init__ still runs.
        assert watchers[0].wait(1)[0] == "NOT_SERVING"
        assert check(proc.address, "") == check(proc.address, SERVICE) == "NOT_SERVING"
        for w in watchers:
            w.wait(2)
        assert all(w.statuses == ["NOT_SERVING", "SERVING"] for w in watchers)
        assert cli_health(proc.address).returncode == 0
        assert cli_health(proc.address, SERVICE).returncode == 0

        with BlockClient(proc.address) as client:
            client.management("health", {"status": "Down", "gpu": "hot"})
            for w in watchers:
                w.wait(3)
            assert check(proc.address, "") == check(proc.address, SERVICE) == "NOT_SERVING"
            probe = cli_health(proc.address)
            assert probe.returncode == 1 and "NOT_SERVING" in probe.stdout
            # An exception is unhealthy too (no new status: it already is NOT_SERVING).
            client.management("health", {"raise": "GPU lost"})
            time.sleep(0.4)
            client.management("health", {"status": "healthy"})
            for w in watchers:
                w.wait(4)
            assert cli_health(proc.address).returncode == 0
            # The Process path still works while health changes.
            assert client.run({"x": 1}, timeout=10).ok

        proc.proc.send_signal(signal.SIGTERM)
        for w in watchers:
            w.wait(5)
        assert all(
            w.statuses == ["NOT_SERVING", "SERVING", "NOT_SERVING", "SERVING", "NOT_SERVING"] for w in watchers
        ), [w.statuses for w in watchers]
        proc.proc.wait(20)
    finally:
        for w in watchers:
            w.close()
    log = proc.rest_of_log()
    assert "health() reported status 'Down'" in log
    assert "health() raised RuntimeError: GPU lost" in log
    assert "NOT_SERVING (draining)" in log


def test_an_open_watch_ends_on_drain_instead_of_holding_the_grace_period(spawn: Any) -> None:
    # A client-side load balancer keeps a Watch open for as long as the server lives. On
    # SIGTERM it must read NOT_SERVING, then the stream ends (OK) and the process exits
    # long before the grace period, which is for packets in flight, not for watchers.
    grace = 30.0
    proc = spawn("tests.blocks.basic:EchoBlock", env={"AIOS_GRACE_PERIOD_S": str(grace)})
    watchers = [Watcher(proc.address), Watcher(proc.address, SERVICE)]
    try:
        for w in watchers:
            wait_for(lambda w=w: w.statuses[-1:] == ["SERVING"], what=f"SERVING, have {w.statuses}")
        start = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        try:
            proc.proc.wait(grace / 6)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {grace / 6:g}s after SIGTERM (grace period {grace:g}s)") from None
        elapsed = time.monotonic() - start
        for w in watchers:
            w.thread.join(5)
            assert not w.thread.is_alive()
            assert w.statuses[-1] == "NOT_SERVING" and w.code == grpc.StatusCode.OK, (w.statuses, w.code)
    finally:
        for w in watchers:
            w.close()
    assert proc.proc.returncode == 0
    assert elapsed < grace / 6
    assert "NOT_SERVING (draining)" in proc.rest_of_log()


def test_watch_of_an_unknown_service_and_after_the_watches_ended(serve: Any) -> None:
    served = serve(EchoBlock)
    unknown, open_one = Watcher(served.address, "no.such.Service"), Watcher(served.address)
    try:
        assert unknown.wait(1) == ["SERVICE_UNKNOWN"]
        assert open_one.wait(1) == ["SERVING"]
        with grpc.insecure_channel(served.address) as channel:
            listed = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=10)
        assert {name: s.status for name, s in listed.statuses.items()} == {
            "": health_pb2.HealthCheckResponse.SERVING,
            SERVICE: health_pb2.HealthCheckResponse.SERVING,
            "aios.liveness": health_pb2.HealthCheckResponse.SERVING,
        }

        async def drained() -> None:
            served.server.health.end_watches()  # not draining: the status stays SERVING

        served.call(drained())
        for w in (unknown, open_one):
            w.thread.join(5)
            assert w.code == grpc.StatusCode.OK
        assert open_one.statuses == ["SERVING"]
        late = Watcher(served.address, SERVICE)
        late.thread.join(5)
        assert late.statuses == ["SERVING"] and late.code == grpc.StatusCode.OK
        late.close()
    finally:
        unknown.close()
        open_one.close()


def test_stalled_scheduler_is_not_serving_until_it_moves(serve: Any) -> None:
    StallBlock.release.clear()
    served = serve(StallBlock, workers=1, health_interval_s=0.1, health_stall_s=0.5)
    health = served.server.health
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        stream.send(make_packet({}, session_id="s", seq_no=1))
        wait_for(lambda: not health.serving, what="NOT_SERVING on a stall")
        assert "scheduler stalled: 1 packets in flight" in health.reason
        assert client.health() == "NOT_SERVING"
        StallBlock.release.set()
        stream.close()
        assert [r.ok for r in stream.results() if r.terminal] == [True]
        wait_for(lambda: health.serving, what="SERVING once packets are answered again")
        assert client.health() == "SERVING"


def test_a_busy_pool_does_not_make_a_healthy_block_unhealthy(serve: Any) -> None:
    # health() runs in its own thread: two slow packets holding every worker do not delay it.
    served = serve(EchoBlock, workers=1, health_interval_s=0.1, health_timeout_s=0.3, health_stall_s=0)
    health = served.server.health
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        for i in range(2):
            stream.send(make_packet({"sleep": 0.8}, session_id=f"s{i}", seq_no=1))
        samples = []
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            samples.append(health.serving)
            time.sleep(0.05)
        stream.close()
        assert sum(r.ok for r in stream.results() if r.terminal) == 2
    assert all(samples), health.reason


def test_a_hung_health_call_is_reported_not_stacked(serve: Any) -> None:
    class Hangs(EchoBlock):
        gate = threading.Event()

        def health(self) -> dict[str, str]:
            Hangs.gate.wait(10)
            return {"status": "healthy"}

    Hangs.gate.set()
    served = serve(Hangs, health_interval_s=0.1, health_timeout_s=0.2)
    health = served.server.health
    assert health.serving
    Hangs.gate.clear()
    wait_for(lambda: not health.serving, what="NOT_SERVING on a hung health()")
    assert "took longer than 0.2s" in health.reason or "has not returned" in health.reason
    wait_for(lambda: "has not returned" in health.reason, what="the still-running report")
    Hangs.gate.set()
    wait_for(lambda: health.serving, what="SERVING once health() returns")
