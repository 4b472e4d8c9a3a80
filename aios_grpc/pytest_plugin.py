"""A pytest plugin for block authors (entry point ``pytest11``: on once aios-grpc is installed).

Fixtures:

- ``aios_tester``: ``aios_tester(BlockClass, **settings)`` -> a ``BlockTester``.
- ``aios_served``: ``aios_served(BlockClass, **settings)`` -> a ``ServedBlock`` (a real
  ``BlockServer`` on 127.0.0.1, port 0, in this process) whose ``client`` is a connected
  ``BlockClient``; both are closed after the test.
- ``aios_block``: ``aios_block(BlockClass, **settings)`` -> a runner with ``run(data)``
  (the outputs, JSON-parsed, as a list) and ``management(action, data)``: through a
  ``BlockTester`` by default; a test marked ``@pytest.mark.aios_both`` runs twice, once
  through the tester and once through a served block, so one test checks both paths.

>>> # in a block's own tests:
>>> # @pytest.mark.aios_both
>>> # def test_threshold(aios_block):
>>> #     assert aios_block(SimpleBlock).run({"value": 0.9}) == [{"value": 0.9, "passed": True}]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aios_grpc.errors import PacketError
from aios_grpc.testing import BlockTester, ServedBlock, serve_block

MARKER = "aios_both"


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker."""
    config.addinivalue_line("markers", f"{MARKER}: run the test through a BlockTester and a served block (aios_block)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test marked ``aios_both`` once per path."""
    if "aios_block" in metafunc.fixturenames and metafunc.definition.get_closest_marker(MARKER) is not None:
        metafunc.parametrize("aios_block", ["tester", "served"], indirect=True)


@pytest.fixture
def aios_tester() -> Callable[..., BlockTester]:
    """``aios_tester(BlockClass, **settings)``: a ``BlockTester``."""

    def make(block_class: type[Any], **settings: Any) -> BlockTester:
        return BlockTester(block_class, **settings)

    return make


@pytest.fixture
def aios_served() -> Iterator[Callable[..., ServedBlock]]:
    """``aios_served(BlockClass, **settings)``: a served block with a connected ``client``."""
    from aios_grpc_client import BlockClient

    started: list[tuple[ServedBlock, Any]] = []

    def make(block_class: type[Any], **settings: Any) -> ServedBlock:
        served = serve_block(block_class, **settings)
        client = BlockClient(served.address)
        served.client = client  # type: ignore[attr-defined]
        started.append((served, client))
        return served

    yield make
    for served, client in started:
        client.close()
        served.close()


class _Runner:
    """One block behind the same two calls, through a tester or a served block."""

    def __init__(self, tester: BlockTester | None = None, served: ServedBlock | None = None) -> None:
        self.tester = tester
        self.served = served
        self.path = "tester" if tester is not None else "served"

    def run(self, data: Any = None, **packet: Any) -> list[Any]:
        """The outputs for one input; a failed packet raises its ``PacketError`` (with its code)."""
        if self.tester is not None:
            return self.tester.run(data, **packet)
        assert self.served is not None
        result = self.served.client.run(data, **packet)  # type: ignore[attr-defined]
        if result.error is not None:
            error = PacketError(result.error.message, stage=result.error.stage, retryable=result.error.retryable)
            error.code = result.error.code
            raise error
        return [] if result.output is None else [result.data]

    def management(self, action: str, data: dict[str, Any] | None = None) -> Any:
        """A management action's result."""
        if self.tester is not None:
            return self.tester.block.management(action, data or {})
        assert self.served is not None
        return self.served.client.management(action, data or {})  # type: ignore[attr-defined]


@pytest.fixture
def aios_block(request: pytest.FixtureRequest, aios_tester: Any, aios_served: Any) -> Callable[..., _Runner]:
    """``aios_block(BlockClass, **settings)``: a runner (see the module docstring)."""
    path = getattr(request, "param", "tester")

    def make(block_class: type[Any], **settings: Any) -> _Runner:
        if path == "served":
            return _Runner(served=aios_served(block_class, **settings))
        return _Runner(tester=aios_tester(block_class, **settings))

    return make
