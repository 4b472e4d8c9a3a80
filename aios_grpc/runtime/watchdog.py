"""``LoopWatchdog``: notices user code that blocks the event loop.

A sync call inside ``async def`` (``time.sleep``, a blocking HTTP client, a model
call) stalls every stream, health check and timer of the instance. The watchdog has
two halves: a task on the loop that ticks every ``threshold_s / 2`` and reports how
late each tick woke (the loop lag, through ``on_lag``, e.g. ``Telemetry.loop_lag``),
and a daemon thread that, when the loop has not ticked for ``threshold_s``, looks at
the loop thread's stack and logs the innermost frame of user code, once per call
site (file and line), with the stack leading to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("aios_grpc.watchdog")

_SDK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIB_DIRS = tuple(
    os.path.abspath(p)
    for p in {sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    if p
)


def _is_user_frame(frame: FrameType) -> bool:
    path = os.path.abspath(frame.f_code.co_filename)
    if path.startswith(_SDK_DIR + os.sep) or path.startswith("<"):
        return False
    return not any(path.startswith(d + os.sep) for d in _LIB_DIRS)


def _waiting_for_io(frame: FrameType) -> bool:
    """Whether the innermost frame is the selector's wait of an idle event loop."""
    code = frame.f_code
    return code.co_name in {"select", "poll"} and os.path.basename(code.co_filename) == "selectors.py"


def user_frame(frame: FrameType | None) -> FrameType | None:
    """The innermost frame of user code on the stack that ends in ``frame``.

    The bottom frame (the program's script, which only started the loop) does not
    count: when the loop is busy in the SDK or a library, that frame is the innermost
    frame itself rather than the script that called ``asyncio.run``.
    """
    innermost = frame
    while frame is not None and frame.f_back is not None:
        if _is_user_frame(frame):
            return frame
        frame = frame.f_back
    return innermost


class LoopWatchdog:
    """Measures event-loop lag and reports where the loop is blocked."""

    def __init__(self, threshold_s: float, on_lag: Callable[[float], None] | None = None) -> None:
        self.threshold_s = threshold_s
        self.on_lag = on_lag
        self.lag_s = 0.0
        self.max_lag_s = 0.0
        self.reported: set[tuple[str, int]] = set()
        self._last_tick = time.monotonic()
        self._loop_thread = 0
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Start both halves; call on the loop's thread."""
        if self.threshold_s <= 0:
            return
        self._loop_thread = threading.get_ident()
        self._last_tick = time.monotonic()
        self._task = asyncio.create_task(self._tick(), name="aios-loop-watchdog")
        self._thread = threading.Thread(target=self._watch, name="aios-loop-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop both halves."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._thread is not None:
            self._thread.join(1.0)

    async def _tick(self) -> None:
        interval = self.threshold_s / 2
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            now = time.monotonic()
            self._last_tick = now
            self.lag_s = max(0.0, now - before - interval)
            self.max_lag_s = max(self.max_lag_s, self.lag_s)
            if self.on_lag is not None:
                try:
                    self.on_lag(self.lag_s)
                except Exception:
                    log.exception("loop lag hook failed")

    def _watch(self) -> None:
        reported_this_stall = False
        while not self._stop.wait(self.threshold_s / 4):
            stalled = time.monotonic() - self._last_tick
            if stalled < self.threshold_s:
                reported_this_stall = False
                continue
            if reported_this_stall:
                continue
            reported_this_stall = self._report(stalled)

    def _report(self, stalled: float) -> bool:
        """Log where the loop thread is, once per call site; False when nothing blocks it."""
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None or _waiting_for_io(frame):
            # The loop is idle in select(): its tick is late because the process got no
            # CPU (busy worker threads, a loaded machine), not because code blocks it.
            return False
        site = user_frame(frame)
        if site is None:
            return False
        key = (site.f_code.co_filename, site.f_lineno)
        if key in self.reported:
            return True
        self.reported.add(key)
        stack = "".join(traceback.format_stack(site, limit=6))
        if _is_user_frame(site):
            hint = (
                "a blocking call inside async def? Make the method a plain def (it then runs in the "
                "worker threads) or wrap the call in `await asyncio.to_thread(...)`"
            )
        else:
            hint = "not in block code (the SDK or a library held the loop; a busy or starved CPU?)"
        log.warning(
            "event loop blocked for %.2fs or more at %s:%d in %s(): %s. Stack:\n%s",
            stalled,
            key[0],
            key[1],
            site.f_code.co_name,
            hint,
            stack,
        )
        return True
