"""AIOS_GC_FREEZE: objects alive once the block is ready are kept out of later collector passes."""

from __future__ import annotations

import gc

from aios_grpc_client import BlockClient

from tests.blocks.basic import EchoBlock


def test_a_ready_server_freezes_what_is_alive_and_unfreezes_at_stop(serve):
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    served = serve(EchoBlock, gc_freeze=True)
    # The block instance, imported modules and the server's own objects are frozen.
    assert gc.get_freeze_count() > 1000
    with BlockClient(served.address) as client:
        assert [r.ok for r in client.process([{"i": i} for i in range(20)], session_id="s")] == [True] * 20
    served.close()
    assert gc.get_freeze_count() == 0


def test_garbage_of_start_up_is_collected_before_freezing(serve):
    gc.unfreeze()

    class Cyclic:
        def __init__(self) -> None:
            self.me = self

    collected = []
    item = Cyclic()
    gc.collect()  # so that the only reference cycle left is this one
    import weakref

    ref = weakref.ref(item, lambda _: collected.append(True))
    del item  # unreachable, but only a collection frees it (a reference cycle)
    serve(EchoBlock, gc_freeze=True)
    assert collected == [True]
    assert ref() is None


def test_serve_block_leaves_the_collector_alone_unless_asked(serve):
    gc.unfreeze()
    served = serve(EchoBlock)
    assert served.server.settings.gc_freeze is False
    assert gc.get_freeze_count() == 0
