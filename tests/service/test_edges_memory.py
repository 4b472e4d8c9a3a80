"""Memory stays bounded by bytes when callers never read their answers (issue 12, case 4).

64 streams of a served block whose every output is 100 KB, each sending 300 packets and
never reading: before the byte bound each stream held up to 256 unwritten results (the
issue measured 1.67 GB). The bound stated in docs/configuration.md (*Worst-case memory*)
is checked against the server process's RSS, measured from /proc.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from aios_grpc._pb import pb, pb_grpc
from tests.helpers import rss, stable_rss

MIB = 1024 * 1024
STREAMS = 64
PACKETS = 300
OUTPUT = 100_000
UNSENT = 1 * MIB  # AIOS_STREAM_MAX_UNSENT_BYTES for the test
WINDOW = 1 * MIB  # AIOS_STREAM_WINDOW_BYTES (the default)


def worst_case_bytes(streams: int, unsent: int, largest: int, window: int, request: int) -> int:
    """docs/configuration.md's bound over the server's memory at start (without the queued inputs)."""
    return streams * (4 * unsent + largest + window + 2 * request)


async def _never_reading(address: str, opened: list[Any]) -> None:
    async def requests() -> Any:
        for k in range(PACKETS):
            yield pb.ProcessRequest(packet=pb.Packet(session_id="s", seq_no=k + 1, data="{}"))
        await asyncio.Event().wait()  # stays open, reads nothing

    for _ in range(STREAMS):
        # A channel per caller; a small fixed receive window, as a client that stopped reading has.
        channel = grpc.aio.insecure_channel(address, options=[("grpc.http2.bdp_probe", 0)])
        call = pb_grpc.BlockServiceStub(channel).Process(requests())
        opened.append((channel, call))


def test_64_streams_that_never_read_stay_under_the_stated_bound(spawn: Any) -> None:
    server = spawn(
        "tests.blocks.edges:BigOutputBlock",
        env={
            "AIOS_TEST_OUTPUT_BYTES": str(OUTPUT),
            "AIOS_STREAM_MAX_UNSENT_BYTES": str(UNSENT),
            "AIOS_WORKERS": "2",
            "AIOS_GC_FREEZE": "false",
        },
    )
    import aios_grpc_client

    with aios_grpc_client.BlockClient(server.address) as client:
        client.wait_until_serving(20)
        assert client.run({}, timeout=20).ok  # warm: every code path loaded once
    base = rss(server.proc.pid)

    async def main() -> int:
        opened: list[Any] = []
        await _never_reading(server.address, opened)
        grown = await asyncio.to_thread(stable_rss, server.proc.pid)
        for channel, call in opened:
            call.cancel()
            await channel.close()
        return grown

    peak = asyncio.run(main())
    bound = worst_case_bytes(STREAMS, UNSENT, OUTPUT + 64, WINDOW, 64)
    grew = peak - base
    print(
        f"RSS: base {base / MIB:.0f} MiB, with {STREAMS} non-reading streams {peak / MIB:.0f} MiB "
        f"(+{grew / MIB:.0f} MiB); stated bound +{bound / MIB:.0f} MiB"
    )
    assert grew < bound, f"RSS grew {grew / MIB:.0f} MiB, over the stated bound of {bound / MIB:.0f} MiB"
    with aios_grpc_client.BlockClient(server.address) as client:
        assert client.run({}, timeout=20).ok  # still serving
