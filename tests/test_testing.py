"""``BlockTester``: usable from plain and from async tests alike."""

from __future__ import annotations

from aios_grpc import BlockTester
from tests.blocks.basic import AsyncBlock, EchoBlock


def test_an_async_block_from_a_plain_test():
    assert BlockTester(AsyncBlock).run({"v": 1}) == [{"async": {"v": 1}}]


async def test_an_async_block_from_an_async_test():
    # A loop already runs here: the tester must not call asyncio.run() on this thread.
    assert BlockTester(AsyncBlock).run({"v": 2}) == [{"async": {"v": 2}}]
    assert BlockTester(EchoBlock).run({"v": 3}) == [{"echo": {"v": 3}}]


def test_a_served_block_can_be_closed_twice_from_two_threads():
    import threading

    from aios_grpc.testing import serve_block

    served = serve_block(EchoBlock)
    closers = [threading.Thread(target=served.close) for _ in range(2)]
    for t in closers:
        t.start()
    for t in closers:
        t.join(20)
    served.close()
    assert served.loop.is_closed()
