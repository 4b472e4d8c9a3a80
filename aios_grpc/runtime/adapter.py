"""How the SDK calls a user's block class: ``BlockAdapter``.

The worker thread's hot path: the code here runs per packet, in the scheduler's worker
threads (a chunk's ``run_sync``: ``on_preprocess``, ``on_data`` and every check of what
they return), so a line added here is paid once per packet; keep per-packet frames out
of it (where a loop is spelled out instead of calling a helper, a comment says why).
The loop thread's per-packet path is ``service/stream.py``.

The adapter finds the block's methods once, checks what is required, and checks
every return value against the shapes the SDK documents, turning a wrong shape into
a ``BlockCodeError`` that names the method and what it returned. Plain methods are
called where the caller stands (the scheduler runs them in its worker threads);
``async def`` methods are awaited on the event loop.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Generator
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from types import GeneratorType
from typing import Any

from aios_grpc.errors import (
    BlockCodeError,
    ConfigurationError,
    InvalidPacket,
    PacketError,
    PreprocessRejected,
    ProcessingFailed,
)
from aios_grpc.grouping import Batcher, Muxer
from aios_grpc.json_depth import text_too_deep, too_deep_message
from aios_grpc.packet import AIOSPacket, OnDataResult, PreProcessResult

BLOCK_METHODS = (
    "on_preprocess",
    "on_data",
    "on_batch",
    "on_update",
    "health",
    "management",
    "get_muxer",
    "get_batcher",
)


def _json_encoder() -> Callable[[Any, int], list[str]] | None:
    """The C encoder ``json.dumps`` builds on every call with its default options, built once."""
    if c_make_encoder is None:  # pragma: no cover - CPython has _json
        return None
    defaults = json.JSONEncoder()
    # No markers dict for cycles: one dict would be shared by every thread. A cycle
    # ends in RecursionError instead, and output_text then lets json.dumps report it.
    encoder: Callable[[Any, int], list[str]] = c_make_encoder(
        None,
        defaults.default,
        encode_basestring_ascii,
        None,
        defaults.key_separator,
        defaults.item_separator,
        defaults.sort_keys,
        defaults.skipkeys,
        defaults.allow_nan,
    )
    return encoder


_ENCODE = _json_encoder()


def _staged(error: PacketError, stage: str) -> PacketError:
    """``error`` with ``stage`` filled in when the block left it empty."""
    if not error.stage:
        error.stage = stage
    return error


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class BlockAdapter:
    """Wraps one instance of a user's block class."""

    def __init__(
        self, instance: Any, wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]] | None = None
    ) -> None:
        # wrap(stage, method), e.g. Telemetry.wrap: what the table holds for on_preprocess/on_data/on_batch.
        self.instance = instance
        self.name = type(instance).__qualname__
        self.methods: dict[str, Callable[..., Any]] = {}
        self.is_async: dict[str, bool] = {}
        for name in BLOCK_METHODS:
            method = getattr(instance, name, None)
            if method is None:
                continue
            if not callable(method):
                raise ConfigurationError(f"{self.name}.{name} is not callable")
            self.methods[name] = method
            self.is_async[name] = inspect.iscoroutinefunction(method)
        if "on_data" not in self.methods and "on_batch" not in self.methods:
            raise ConfigurationError(f"block class {self.name} defines neither on_data nor on_batch")
        if inspect.isasyncgenfunction(self.methods.get("on_data")):
            self.is_async["on_data"] = True
        if wrap is not None:
            for name in ("on_preprocess", "on_data", "on_batch"):
                if name in self.methods:
                    self.methods[name] = wrap(name[3:], self.methods[name])

    def has(self, name: str) -> bool:
        """Whether the block defines method ``name``."""
        return name in self.methods

    @property
    def all_sync(self) -> bool:
        """True when the data-path methods are plain functions (run in threads)."""
        return not any(self.is_async.get(m) for m in ("on_preprocess", "on_data", "on_batch"))

    # -- start-up ----------------------------------------------------------------------

    def muxer(self) -> Muxer | None:
        """The block's ``Muxer`` (``get_muxer()``), checked; None when it has none."""
        mux = self._call_config("get_muxer")
        if mux is not None and not isinstance(mux, Muxer):
            raise ConfigurationError(f"{self.name}.get_muxer() must return a Muxer or None, got {_short(mux)}")
        if mux is None or (mux.N <= 1 and type(mux).process_packet is Muxer.process_packet):
            return None  # nothing to merge (a subclass's own process_packet runs even at N=1)
        return mux

    def batcher(self) -> Batcher | None:
        """The block's scheduler batcher (``get_batcher()``), checked; None when it has none."""
        batcher = self._call_config("get_batcher")
        if batcher is None:
            return None
        if not isinstance(batcher, Batcher):
            raise ConfigurationError(
                f"{self.name}.get_batcher() must return a Batcher, TimeBasedBatcher or None, got {_short(batcher)}"
            )
        if "on_batch" not in self.methods:
            raise ConfigurationError(f"{self.name}.get_batcher() returned a batcher but the block has no on_batch")
        return batcher

    def _call_config(self, name: str) -> Any:
        method = self.methods.get(name)
        if method is None:
            return None
        if self.is_async.get(name):
            raise ConfigurationError(f"{self.name}.{name} must be a plain method, not async def")
        return method()

    # -- result checks -------------------------------------------------------------------

    @staticmethod
    def validate_packet(packet: AIOSPacket, validate_json: bool, max_files: int, limits: Any = None) -> None:
        """Reject a packet whose ``data`` is not JSON or nests too deep, that has too many
        files, or whose session id is too long (``limits``: the ``Settings`` with
        ``max_json_depth`` and ``max_session_id_bytes``; None: those two unchecked)."""
        if len(packet.files) > max_files:
            raise InvalidPacket(
                f"packet has {len(packet.files)} files; at most {max_files} are allowed (AIOS_MAX_FILES_PER_PACKET)",
                stage="decode",
            )
        if limits is not None and 4 * len(packet.session_id) > limits.max_session_id_bytes:
            size = len(packet.session_id.encode("utf-8", "surrogatepass"))
            if size > limits.max_session_id_bytes:
                raise InvalidPacket(
                    f"session_id is {size} bytes; at most {limits.max_session_id_bytes} are allowed"
                    " (AIOS_MAX_SESSION_ID_BYTES)",
                    stage="decode",
                )
        data = packet.data
        if validate_json and isinstance(data, str) and data:
            try:
                packet.check_json()  # kept for the block's own packet.json(): one parse, not two
            except RecursionError:
                depth = limits.max_json_depth if limits is not None else 0
                raise InvalidPacket(too_deep_message("packet data", depth), stage="decode") from None
            except ValueError as exc:
                raise InvalidPacket(f"packet data is not valid JSON: {exc}", stage="decode") from None
            if limits is not None and text_too_deep(data, packet._parsed, limits.max_json_depth):
                raise InvalidPacket(too_deep_message("packet data", limits.max_json_depth), stage="decode")

    def check_preprocess(self, ret: Any) -> list[PreProcessResult]:
        """The entries from an ``on_preprocess`` return value, or the error it stands for."""
        ok, value = self._pair("on_preprocess", ret, "(True, [PreProcessResult, ...]) or (False, 'error')")
        if not ok:
            if isinstance(value, PacketError):  # (False, Transient("...")): the block names the kind
                raise _staged(value, "preprocess")
            raise PreprocessRejected(f"on_preprocess rejected the packet: {value}", stage="preprocess")
        if isinstance(value, PreProcessResult):
            return [value]
        if isinstance(value, list | tuple) and all(isinstance(e, PreProcessResult) for e in value):
            return list(value)
        raise BlockCodeError(
            f"on_preprocess must return (True, [PreProcessResult, ...]), got (True, {_short(value)})",
            stage="preprocess",
        )

    def check_data(self, ret: Any, stage: str = "data") -> Any:
        """The output of one ``on_data`` result (``OnDataResult`` or None), or its error."""
        ok, value = self._pair(f"on_{stage}", ret, "(True, OnDataResult), (True, None) or (False, 'error')")
        if not ok:
            if isinstance(value, PacketError):  # (False, Transient("...")): the block names the kind
                raise _staged(value, stage)
            raise ProcessingFailed(f"on_{stage} failed: {value}", stage=stage)
        if value is None or isinstance(value, OnDataResult):
            return value
        if isinstance(value, dict):
            return OnDataResult(output=value)
        raise BlockCodeError(
            f"on_{stage} must return (True, OnDataResult(output=...)) or (True, None), got (True, {_short(value)})",
            stage=stage,
        )

    @staticmethod
    def output_text(value: Any) -> str:
        """``json.dumps(value)``, the text of an output packet; ``BlockCodeError`` when it is not JSON.

        The encoder is built once instead of per call (about 1.5 us per output); any
        error is left to ``json.dumps``, so the message is the one it gives.
        """
        if _ENCODE is not None:
            try:
                return "".join(_ENCODE(value, 0))
            except Exception:  # json.dumps below raises the error to report
                pass
        try:
            return json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise BlockCodeError(f"output is not JSON-serializable: {exc}", stage="data") from None

    def _pair(self, method: str, ret: Any, expected: str) -> tuple[bool, Any]:
        if isinstance(ret, tuple) and len(ret) == 2 and isinstance(ret[0], bool):
            return ret[0], ret[1]
        raise BlockCodeError(
            f"{method} must return {expected}, got {_short(ret)}",
            stage=method.removeprefix("on_"),
        )

    # -- sync data path (called from worker threads) -------------------------------------

    def run_sync(
        self,
        packet: AIOSPacket,
        emit_partial: Callable[[OnDataResult], Any] | None,
    ) -> list[OnDataResult]:
        """Run ``on_preprocess`` then ``on_data`` per entry, in this thread.

        Returns the outputs; a generator returned by ``on_data`` streams each item
        through ``emit_partial`` as it comes (and adds nothing to the list).
        """
        methods = self.methods
        entries = [PreProcessResult(packet)] if "on_preprocess" not in methods else self.preprocess_sync(packet)
        on_data = methods["on_data"]
        outputs: list[OnDataResult] = []
        for entry in entries:
            try:
                ret = on_data(entry)
            except PacketError:
                raise
            except Exception as exc:
                raise BlockCodeError(f"on_data raised {type(exc).__name__}: {exc}", stage="data") from exc
            # The common answer, (True, OnDataResult), checked inline: this runs per packet.
            if type(ret) is tuple and len(ret) == 2 and ret[0] is True and type(ret[1]) is OnDataResult:
                outputs.append(ret[1])
                continue
            if isinstance(ret, GeneratorType):
                self._stream(ret, emit_partial)
                continue
            out = self.check_data(ret)
            if out is not None:
                outputs.append(out)
        return outputs

    def preprocess_sync(self, packet: AIOSPacket) -> list[PreProcessResult]:
        """``on_preprocess`` (or one entry with the packet when the block has none)."""
        method = self.methods.get("on_preprocess")
        if method is None:
            return [PreProcessResult(packet=packet)]
        try:
            ret = method(packet)
        except PacketError:
            raise
        except Exception as exc:
            raise BlockCodeError(f"on_preprocess raised {type(exc).__name__}: {exc}", stage="preprocess") from exc
        # The common answer, (True, [one PreProcessResult]), checked inline: this runs per packet.
        if type(ret) is tuple and len(ret) == 2 and ret[0] is True:
            value = ret[1]
            if type(value) is list and len(value) == 1 and type(value[0]) is PreProcessResult:
                return [value[0]]
        return self.check_preprocess(ret)

    def _stream(self, gen: Generator[Any, Any, Any], emit: Callable[[OnDataResult], Any] | None) -> None:
        """Run a generator returned by ``on_data`` in this thread, each item through ``emit``.

        ``emit`` may block (the scheduler's bound on unsent partials) or raise (the caller
        is gone); the generator is closed however the loop ends, so its ``finally`` runs.
        """
        try:
            for item in gen:
                out = self.check_data(item)
                if out is not None and emit is not None:
                    emit(out)
        except PacketError:
            raise
        except Exception as exc:
            raise BlockCodeError(f"on_data raised {type(exc).__name__}: {exc}", stage="data") from exc
        finally:
            gen.close()

    # -- async data path (on the event loop) ---------------------------------------------

    async def run_async(
        self,
        packet: AIOSPacket,
        emit_partial: Callable[[OnDataResult], Awaitable[None] | None],
        to_thread: Callable[..., Any],
    ) -> list[OnDataResult]:
        """The data path when some methods are ``async def``; plain ones go to ``to_thread``.

        ``emit_partial`` takes each streamed item; called on the loop (an async generator)
        it may return an awaitable, awaited before the generator is asked for the next item
        (the scheduler's bound on unsent partials). A sync generator runs in ``to_thread``,
        where ``emit_partial`` blocks instead.
        """
        method = self.methods.get("on_preprocess")
        if method is None:
            entries = [PreProcessResult(packet=packet)]
        elif self.is_async["on_preprocess"]:
            try:
                ret = await method(packet)
            except PacketError:
                raise
            except Exception as exc:
                raise BlockCodeError(f"on_preprocess raised {type(exc).__name__}: {exc}", stage="preprocess") from exc
            entries = self.check_preprocess(ret)
        else:
            entries = await to_thread(self.preprocess_sync, packet)
        on_data = self.methods["on_data"]
        outputs: list[OnDataResult] = []
        for entry in entries:
            try:
                if inspect.isasyncgenfunction(on_data):
                    agen = on_data(entry)
                    try:
                        async for item in agen:
                            out = self.check_data(item)
                            if out is not None:
                                waiting = emit_partial(out)
                                if waiting is not None:
                                    await waiting
                    finally:
                        await agen.aclose()  # runs the generator's finally when it stopped early
                    continue
                if self.is_async["on_data"]:
                    ret = await on_data(entry)
                else:
                    ret = await to_thread(on_data, entry)
            except PacketError:
                raise
            except Exception as exc:
                raise BlockCodeError(f"on_data raised {type(exc).__name__}: {exc}", stage="data") from exc
            if inspect.isgenerator(ret):
                await to_thread(self._stream, ret, emit_partial)
                continue
            out = self.check_data(ret)
            if out is not None:
                outputs.append(out)
        return outputs


__all__ = ["BlockAdapter"]
