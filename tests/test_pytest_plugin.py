"""The pytest plugin (entry point pytest11): its fixtures on the examples, and the aios_both marker."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from aios_grpc import PacketError
from tests.test_public_api import SimpleBlock

pytest_plugins = ["pytester"]


@pytest.mark.aios_both
def test_the_simple_block_example_through_both_paths(aios_block: Any) -> None:
    block = aios_block(SimpleBlock, block_init_parameters={"threshold": 0.5})
    assert block.run({"value": 0.9}) == [{"value": 0.9, "passed": True}]
    assert block.management("get_threshold") == {"threshold": 0.5}
    with pytest.raises(PacketError) as raised:
        block.run("{broken")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_served_fixture_has_a_connected_client(aios_served: Any, aios_tester: Any) -> None:
    served = aios_served(SimpleBlock)
    assert served.client.run({"value": 0.1}).data == {"value": 0.1, "passed": False}
    assert aios_tester(SimpleBlock).run({"value": 0.1}) == [{"value": 0.1, "passed": False}]


def test_the_plugin_is_found_by_its_entry_point(pytester: pytest.Pytester) -> None:
    # A fresh pytest run in an empty folder: no conftest, only the installed plugin.
    pytester.makepyfile(
        """
        import pytest
        from aios_grpc import OnDataResult

        class Echo:
            def __init__(self, context): pass
            def on_data(self, entry): return True, OnDataResult(output=entry.packet.json())

        @pytest.mark.aios_both
        def test_echo(aios_block):
            assert aios_block(Echo).run({"x": 1}) == [{"x": 1}]
        """
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
