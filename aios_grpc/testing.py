"""``BlockTester`` and ``TestContext``: run a block's logic without any server.

>>> class Double:
...     def __init__(self, context): pass
...     def on_preprocess(self, packet):
...         return True, [PreProcessResult(packet=packet, extra_data=packet.json())]
...     def on_data(self, entry):
...         return True, OnDataResult(output={"y": entry.extra_data["x"] * 2})
>>> BlockTester(Double).run({"x": 21})
[{'y': 42}]

The packet goes through the same ``BlockAdapter`` checks as in the server, so a
wrong return shape fails here the same way it would when served.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aios_grpc.context import Context
from aios_grpc.packet import AIOSPacket, FileInfo, OnDataResult
from aios_grpc.runtime.adapter import BlockAdapter


@dataclass
class TestContext(Context):
    """A ``Context`` with in-memory helpers, for tests; set any field before use."""

    __test__ = False  # not a pytest test class

    block_id: str = "test-block"
    instance_id: str = "test-instance"


class BlockTester:
    """Instantiate a block with a test context and run inputs through it."""

    __test__ = False

    def __init__(self, block_class: type[Any], context: Context | None = None) -> None:
        self.context = context if context is not None else TestContext()
        self.block = block_class(self.context)
        self.adapter = BlockAdapter(self.block)
        self._seq = 0

    @classmethod
    def init_with_context(cls, block_class: type[Any], context: Context) -> BlockTester:
        """A tester whose block is built with ``context`` (as in the original SDK)."""
        return cls(block_class, context)

    def run(
        self,
        data: Any = None,
        files: Sequence[tuple[dict[str, Any] | str, bytes]] | None = None,
        *,
        session_id: str = "test-session",
        seq_no: int | None = None,
        output_ptr: str = "",
    ) -> list[Any]:
        """Run one input through ``on_preprocess`` and ``on_data``; the outputs, JSON-parsed.

        ``data`` is JSON-encoded into the packet (a str is taken as JSON text already).
        ``files`` are ``(metadata, bytes)`` pairs. A failed packet raises its
        ``PacketError`` (with the gRPC code the server would answer).
        """
        if seq_no is None:
            self._seq += 1
            seq_no = self._seq
        packet = AIOSPacket(
            session_id=session_id,
            seq_no=seq_no,
            data=data if isinstance(data, str) else json.dumps({} if data is None else data),
            output_ptr=output_ptr,
            files=[FileInfo(m if isinstance(m, str) else json.dumps(m), bytes(b)) for m, b in files or ()],
        )
        self.adapter.validate_packet(packet, True, 1 << 30)
        streamed: list[OnDataResult] = []
        if self.adapter.all_sync:
            outputs = self.adapter.run_sync(packet, streamed.append)
        else:
            outputs = _run(self.adapter.run_async(packet, streamed.append, _to_thread))
        return [_parse(o.output) for o in (*streamed, *outputs)]


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run(coro)``, on a thread of its own when this thread already runs a loop (an async test)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1, thread_name_prefix="aios-tester") as pool:
        return pool.submit(asyncio.run, coro).result()


async def _to_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def _parse(output: Any) -> Any:
    return json.loads(output) if isinstance(output, str) else json.loads(json.dumps(output))


class ServedBlock:
    """A block served by a real ``BlockServer`` on its own event loop thread.

    ``address`` is ``127.0.0.1:<port>``; ``call(coro)`` runs a coroutine on the
    server's loop (to inspect or change the server from a test).
    """

    __test__ = False

    def __init__(self, block_class: type[Any], settings: Any, **server_kwargs: Any) -> None:
        import threading

        from aios_grpc.server import BlockServer

        self.server = BlockServer(block_class, settings, **server_kwargs)
        self._close_lock = threading.Lock()  # a test may close from a thread while its fixture closes too
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="aios-test-server", daemon=True)
        self._thread.start()
        try:
            self.call(self.server.start())
        except BaseException:
            self.close()
            raise

    @property
    def address(self) -> str:
        """Where the server listens."""
        return f"127.0.0.1:{self.server.port}"

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self, grace_s: float = 1.0) -> None:
        """Drain and stop the server, then its loop (idempotent, from any thread)."""
        with self._close_lock:
            if self.loop.is_closed():
                return
            if self.loop.is_running():
                try:
                    self.call(self.server.stop(grace_s))
                finally:
                    self.loop.call_soon_threadsafe(self.loop.stop)
                    self._thread.join(10)
            self.loop.close()

    def __enter__(self) -> ServedBlock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_block(block_class: type[Any], **settings: Any) -> ServedBlock:
    """Serve ``block_class`` on 127.0.0.1 port 0 in this process (for tests).

    ``settings`` override the environment's; ``gc_freeze`` is off unless given.

    >>> with serve_block(MyBlock, workers=2) as served:   # doctest: +SKIP
    ...     BlockClient(served.address).run({"value": 1})
    """
    from aios_grpc.settings import load_settings

    settings.setdefault("host", "127.0.0.1")
    settings.setdefault("port", 0)
    settings.setdefault("metrics_port", 0)  # never the shared default 9464 in tests
    # A test process starts many servers; a full collection at each start would slow the
    # suite, and freezing would keep earlier tests' objects for good.
    settings.setdefault("gc_freeze", False)
    return ServedBlock(block_class, load_settings(**settings))


__all__ = ["BlockTester", "ServedBlock", "TestContext", "serve_block"]
