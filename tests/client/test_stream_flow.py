"""An open client stream applies flow control: ``send`` waits instead of buffering without bound."""

from __future__ import annotations

import asyncio
import threading
import time

from aios_grpc_client import AsyncBlockClient, BlockClient, make_packet

from aios_grpc import OnDataResult

GATE = threading.Event()


class GateBlock:
    """Holds every packet until ``GATE`` is set."""

    def __init__(self, context: object) -> None:
        pass

    def on_data(self, entry: object) -> object:
        GATE.wait(30)
        return True, OnDataResult(output={"ok": True})


BIG = "x" * 50_000  # a few of these fill the server's 1 MB stream window
N = 60


def _serve(serve):
    GATE.clear()
    return serve(GateBlock, workers=1, stream_max_in_flight=1)


def test_send_waits_while_the_server_is_behind(serve):
    served = _serve(serve)
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=60, max_pending=8)
        sent: list[int] = []

        def send_all() -> None:
            for i in range(N):
                stream.send(make_packet({"big": BIG}, session_id="s", seq_no=i))
                sent.append(i)
            stream.close()

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        time.sleep(1.0)
        try:
            assert sender.is_alive() and len(sent) < N, "send() buffered everything while the server was stuck"
            assert stream._queue.qsize() <= 8
        finally:
            GATE.set()
        results = [r for r in stream.results() if r.terminal]
        sender.join(10)
    assert len(results) == N and all(r.ok for r in results)


def test_async_send_waits_while_the_server_is_behind(serve):
    served = _serve(serve)

    async def run() -> list:
        async with AsyncBlockClient(served.address) as client:
            stream = client.stream(timeout=60, max_pending=8)
            sent: list[int] = []

            async def send_all() -> None:
                for i in range(N):
                    await stream.send(make_packet({"big": BIG}, session_id="s", seq_no=i))
                    sent.append(i)
                await stream.close()

            sender = asyncio.create_task(send_all())
            await asyncio.sleep(1.0)
            try:
                assert not sender.done() and len(sent) < N, "send() buffered everything while the server was stuck"
                assert stream._pending <= 8
            finally:
                GATE.set()
            results = [r async for r in stream.results() if r.terminal]
            await asyncio.wait_for(sender, 10)
            return results

    results = asyncio.run(run())
    assert len(results) == N and all(r.ok for r in results)
