"""The router's pool of links stays bounded: idle links to old targets are closed."""

from __future__ import annotations

from tests.blocks.graph import StageBlock
from tests.routing.test_routing import ALLOW, grpc_target, run_one


def test_links_to_many_targets_are_capped_by_closing_idle_ones(serve) -> None:
    downstream = [serve(StageBlock, block_id=f"d{i}") for i in range(4)]
    a = serve(StageBlock, block_id="a", route_allow=ALLOW)
    router = a.server.router
    router.max_links = 2
    for round_ in range(2):
        for i, d in enumerate(downstream):
            result = run_one(a.address, {"x": i}, {"outputs": [grpc_target(d.address)]}, session_id=f"s{round_}{i}")
            assert result.ok, result.error
            assert len(router.grpc_links) <= 2
    # The most recent targets are the ones kept.
    assert set(router.grpc_links) == {downstream[2].address, downstream[3].address}
