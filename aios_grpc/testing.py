"""``BlockTester`` and ``TestContext``: run a block's logic without any server.

>>> class Double:
...     def __init__(self, context): pass
...     def on_preprocess(self, packet):
...         return True, [PreProcessResult(packet=packet, extra_data=packet.json())]
...     def on_data(self, entry):
...         return True, OnDataResult(output={"y": entry.extra_data["x"] * 2})
>>> BlockTester(Double).run({"x": 21})
[{'y': 42}]

The packets go through the server's own runtime (the ``Scheduler``, on an event loop
of the tester's own, with no transport): the same checks and errors, batches for
``on_batch`` formed by the block's batcher, and groups merged by the block's
``Muxer`` (give a group's packets to ``run_many``). A wrong return shape fails here
the same way it would when served.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aios_grpc.context import Context
from aios_grpc.errors import PacketError
from aios_grpc.job import Job, Kind, Result
from aios_grpc.packet import AIOSPacket, FileInfo
from aios_grpc.runtime.adapter import BlockAdapter

Files = Sequence[tuple[dict[str, Any] | str, bytes]]


@dataclass
class TestContext(Context):
    """A ``Context`` with in-memory helpers, for tests; set any field before use."""

    __test__ = False  # not a pytest test class

    block_id: str = "test-block"
    instance_id: str = "test-instance"


class BlockTester:
    """Instantiate a block with a test context and run inputs through it.

    ``settings`` override the environment's (``AIOS_*``) runtime settings for the
    tester (``workers``, ``max_chunk``, ``mux_timeout_s``, ...), as for a server.
    """

    __test__ = False

    def __init__(self, block_class: type[Any], context: Context | None = None, **settings: Any) -> None:
        from aios_grpc.settings import load_settings

        self.settings = load_settings(**settings)
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
        files: Files | None = None,
        *,
        session_id: str = "test-session",
        seq_no: int | None = None,
        output_ptr: str = "",
    ) -> list[Any]:
        """Run one input through the block; its outputs (``on_data`` or ``on_batch``), JSON-parsed.

        ``data`` is JSON-encoded into the packet (a str is taken as JSON text already).
        ``files`` are ``(metadata, bytes)`` pairs. A failed packet raises its
        ``PacketError`` (with the gRPC code the server would answer).
        """
        return self.run_many([data], files=files, session_id=session_id, seq_no=seq_no, output_ptr=output_ptr)

    def run_many(
        self,
        inputs: Iterable[Any],
        *,
        files: Files | None = None,
        session_id: str = "test-session",
        seq_no: int | None = None,
        output_ptr: str = "",
        timeout_s: float = 60.0,
    ) -> list[Any]:
        """Run several inputs together, as concurrent callers would; every output, in input order.

        All inputs are queued at once, so a batcher sees them together and a ``Muxer``
        merges them: with a muxer they share one ``seq_no`` (the next one, or
        ``seq_no``), so ``N`` inputs make one merged packet. An input may also be an
        ``AIOSPacket``, sent as it is. The first failed input raises its ``PacketError``;
        a muxer group still incomplete when the inputs end fails with UNAVAILABLE.
        """
        outcomes = self.outcomes(
            inputs, files=files, session_id=session_id, seq_no=seq_no, output_ptr=output_ptr, timeout_s=timeout_s
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [o for outcome in outcomes if not isinstance(outcome, BaseException) for o in outcome]

    def outcomes(
        self,
        inputs: Iterable[Any],
        *,
        files: Files | None = None,
        session_id: str = "test-session",
        seq_no: int | None = None,
        output_ptr: str = "",
        timeout_s: float = 60.0,
    ) -> list[list[Any] | PacketError]:
        """Like ``run_many``, without raising: per input, its outputs or its ``PacketError``."""
        muxed = self.adapter.muxer() is not None
        packets: list[AIOSPacket] = []
        for item in inputs:
            if isinstance(item, AIOSPacket):
                packets.append(item)
                continue
            if seq_no is None or not muxed:
                if not (muxed and packets):
                    self._seq += 1
                number = self._seq if seq_no is None else seq_no
            else:
                number = seq_no
            packets.append(
                AIOSPacket(
                    session_id=session_id,
                    seq_no=number,
                    data=item if isinstance(item, str) else json.dumps({} if item is None else item),
                    output_ptr=output_ptr,
                    files=[FileInfo(m if isinstance(m, str) else json.dumps(m), bytes(b)) for m, b in files or ()],
                )
            )
        done: list[list[Any] | PacketError] = _run(self._process(packets, timeout_s))
        return done

    async def _process(self, packets: list[AIOSPacket], timeout_s: float) -> list[list[Any] | PacketError]:
        from aios_grpc.runtime.scheduler import Scheduler

        scheduler = Scheduler(self.adapter, self.settings)
        await scheduler.configure()
        await scheduler.start()
        outputs: list[list[Any]] = [[] for _ in packets]
        errors: list[PacketError | None] = [None] * len(packets)
        answered = asyncio.Event()
        left = [len(packets)]

        def reply_to(i: int) -> Callable[[Result], None]:
            def reply(result: Result) -> None:
                if result.output is not None:
                    outputs[i].append(_parse(result.output.data))
                if result.kind is Kind.ERROR:
                    error = result.error
                    errors[i] = error if isinstance(error, PacketError) else PacketError(str(error))
                if result.terminal:
                    left[0] -= 1
                    answered.set()

            return reply

        try:
            for i, packet in enumerate(packets):
                await scheduler.submit(Job(packet=packet, reply=reply_to(i)))
            async with asyncio.timeout(timeout_s):
                stage = scheduler.mux_stage
                # Done when every packet is answered but those a muxer group still holds.
                while left[0] > (stage.held if stage is not None else 0):
                    answered.clear()
                    await answered.wait()
            if stage is not None and stage.held:
                stage.flush("BlockTester: no more inputs")
        finally:
            await scheduler.stop()
        return [error if error is not None else out for out, error in zip(outputs, errors, strict=True)]


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run(coro)``, on a thread of its own when this thread already runs a loop (an async test)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1, thread_name_prefix="aios-tester") as pool:
        return pool.submit(asyncio.run, coro).result()


def _parse(data: Any) -> Any:
    """An output packet's data as a value (JSON text parsed)."""
    return json.loads(data) if isinstance(data, str | bytes) else data


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
