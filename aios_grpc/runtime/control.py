"""``ControlPlane``: parameters, management actions and instance info.

Transport-free: the gRPC servicer converts messages and calls these methods. Block
methods run in the scheduler's thread pool (or on the loop when ``async def``).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Coroutine
from typing import Any

from aios_grpc._text import cut, quote
from aios_grpc._version import __version__
from aios_grpc.errors import ParametersRejected, UnknownAction
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.runtime.typed import BlockTypes

ActionHandler = Callable[[dict[str, Any]], Coroutine[Any, Any, Any]]
Broadcast = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


class ControlPlane:
    """SetParameters, Management and GetInfo for one block instance."""

    def __init__(self, block: BlockAdapter, scheduler: Scheduler, parameters: dict[str, Any], block_class: str) -> None:
        self.block = block
        self.scheduler = scheduler
        self.parameters = copy.deepcopy(parameters)
        self.block_class = block_class
        self._lock = asyncio.Lock()
        # Actions under "aios." are the SDK's own; other parts of the runtime add theirs.
        self.actions: dict[str, ActionHandler] = {"aios.info": self._info_action}
        # Batch size, time limit and concurrency change without a restart.
        self.actions["aios.batcher"] = scheduler.configure_batching
        # Set when Redis is configured: tells the block's other instances what was applied.
        self.broadcast: Broadcast | None = None
        # Declared parameters / input types (runtime/typed.py): validation and GetInfo's schemas.
        self.types = BlockTypes.of(type(block.instance))

    async def _call(self, name: str, *args: Any) -> Any:
        method = self.block.methods[name]
        if self.block.is_async[name]:
            return await method(*args)
        return await self.scheduler.to_thread(method, *args)

    async def set_parameters(self, params: Any, *, broadcast: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
        """Apply ``params`` through ``on_update``; returns (applied, all current parameters).

        With ``broadcast`` (and Redis configured) the other instances apply them too.
        """
        if not isinstance(params, dict):
            raise ParametersRejected(f"parameters must be a JSON object, got {type(params).__name__}")
        limit = self.scheduler.settings.max_parameters_bytes
        self._check_size("the update", params, limit)
        async with self._lock:  # updates apply one at a time, in arrival order
            # Refused before on_update sees it: stored parameters travel in every GetInfo and
            # SetParameters answer, which must stay within the message limit.
            self._check_size("the parameters with the update", {**self.parameters, **params}, limit)
            typed = self.types.parameters
            value: Any = params
            if typed is not None:
                # The parameters as they would be, checked before the block sees them.
                try:
                    value = typed.validate({**self.parameters, **params}, "parameters")
                except ValueError as exc:
                    raise ParametersRejected(str(exc)) from None
            if not self.block.has("on_update"):
                applied: Any = params
            else:
                try:
                    ret = await self._call("on_update", value)
                except Exception as exc:
                    raise ParametersRejected(f"on_update raised {type(exc).__name__}: {exc}") from exc
                if not (isinstance(ret, tuple) and len(ret) == 2 and isinstance(ret[0], bool)):
                    raise ParametersRejected(
                        f"on_update must return (True, dict) or (False, 'error'), got {ret!r:.120}"
                    )
                ok, applied = ret
                if not ok:
                    raise ParametersRejected(f"on_update rejected the parameters: {applied}")
                if applied is None or applied is value:
                    applied = params
                elif typed is not None and not isinstance(applied, dict):
                    applied = typed.dump(applied)  # on_update returned its typed object
                if not isinstance(applied, dict):
                    raise ParametersRejected(f"on_update must return (True, dict), got (True, {applied!r:.120})")
            if applied is not params:
                self._check_size("the parameters with what on_update applied", {**self.parameters, **applied}, limit)
            self.parameters.update(applied)
            current = copy.deepcopy(self.parameters)
        if broadcast and self.broadcast is not None:
            await self.broadcast(dict(params))
        return dict(applied), current

    @staticmethod
    def _check_size(what: str, value: dict[str, Any], limit: int) -> None:
        """``ParametersRejected`` when ``value`` as JSON is over ``limit`` bytes."""
        size = len(json.dumps(value, default=str).encode())
        if size > limit:
            raise ParametersRejected(
                f"{what} would be {size} bytes of JSON, over the limit of {limit} (AIOS_MAX_PARAMETERS_BYTES)"
            )

    async def management(self, action: str, data: dict[str, Any]) -> Any:
        """Run ``action``: an SDK action (``aios.*``) or the block's ``management``."""
        if not action:
            raise UnknownAction("management action is empty")
        handler = self.actions.get(action)
        if handler is not None:
            return await handler(data)
        if not self.block.has("management"):
            raise UnknownAction(
                f"unknown management action {quote(action)}: block {self.block.name} has no management method"
            )
        try:
            return await self._call("management", action, data)
        except UnknownAction:
            raise
        except NotImplementedError as exc:
            raise UnknownAction(f"unknown management action {quote(action)}: {cut(str(exc))}") from exc

    async def _info_action(self, data: dict[str, Any]) -> Any:
        return self.info()

    def info(self) -> dict[str, Any]:
        """What GetInfo reports (muxer and batcher filled in by the scheduler's settings)."""
        settings = self.scheduler.settings
        return {
            "block_id": settings.block_id,
            "instance_id": settings.instance_id,
            "sdk_version": __version__,
            "block_class": self.block_class,
            "parameters": copy.deepcopy(self.parameters),
            "muxer": getattr(self.scheduler, "muxer_info", lambda: {"n": 0})(),
            "batcher": getattr(self.scheduler, "batcher_info", lambda: {"kind": "none"})(),
            **self.types.info(),
        }


__all__ = ["ControlPlane"]
