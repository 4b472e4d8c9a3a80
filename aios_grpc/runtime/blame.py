"""``BlockErrorLog``: every failure of the block's own code reaches the server log.

The caller gets the packet's error; the block's author gets the log line: a raised
exception or a wrong return shape (``BlockCodeError``) at ERROR, with the block method,
the packet and the traceback of the block's own exception; a ``(False, message)``
answer (``PreprocessRejected``, ``ProcessingFailed``) at WARNING. Other errors (deadlines,
a full queue, a downstream block's answer) are the caller's or the network's, not the
author's, and are not logged here.

A block failing on every packet must not flood the log, so reports are rate-limited per
call site (the block method and, for an exception, the file and line that raised it):
the first ``burst`` of a window are logged in full, the rest are counted and one line
per ``interval_s`` says how many more there were and the last message.

Only the failure path calls it (``Scheduler._finish``); a packet answered OK costs
nothing here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aios_grpc
from aios_grpc._text import quote
from aios_grpc.errors import BlockCodeError, PacketError, PreprocessRejected, ProcessingFailed

log = logging.getLogger("aios_grpc.block")
_SDK_DIR = os.path.dirname(aios_grpc.__file__) + os.sep

Site = tuple[str, str, str, int]
"""(error class, block method, file, line) of one call site; file and line empty when unknown."""


def _shown(value: object, limit: int = 64) -> str:
    """A caller's string (or an exception's message) on one line, escaped and cut: ``_text.quote``."""
    return quote(str(value), limit)


@dataclass
class _Window:
    started: float
    logged: int = 0
    suppressed: int = 0
    last: str = ""
    timer: asyncio.TimerHandle | None = None


class BlockErrorLog:
    """Logs failures of block code, the first ``burst`` per call site and interval in full."""

    def __init__(
        self,
        block_name: str,
        *,
        burst: int = 5,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.block_name = block_name
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[Site, _Window] = {}
        self._last: BaseException | None = None

    def report(self, exc: BaseException, session_id: str, seq_no: int, traceparent: str | None = None) -> None:
        """Log ``exc``, the error a packet is answered with, when block code caused it.

        ``traceparent`` (the packet's W3C trace context) goes on the record, so that JSON
        logs carry the packet's trace and span ids.
        """
        if isinstance(exc, BlockCodeError):
            level = logging.ERROR
        elif isinstance(exc, PreprocessRejected | ProcessingFailed):
            level = logging.WARNING
        else:
            return
        if exc is self._last:
            return  # one failed on_batch call answers each of its packets with the same error
        self._last = exc
        stage = exc.stage if isinstance(exc, PacketError) else ""
        method = f"{self.block_name}.on_{stage}" if stage else self.block_name
        cause = exc.__cause__
        where = _raised_at(cause.__traceback__) if cause is not None else None
        site: Site = (type(exc).__name__, method, *(where or ("", 0)))
        now = self._clock()
        window = self._windows.get(site)
        if window is None or now - window.started >= self.interval_s:
            if window is not None:
                self._summary(site, window)
            window = self._windows[site] = _Window(started=now)
        if window.logged >= self.burst:
            window.suppressed += 1
            window.last = _shown(exc, 500)
            if window.timer is None:
                window.timer = _later(window.started + self.interval_s - now, self._flush, site)
            return
        window.logged += 1
        more = " (further failures here are counted)" if window.logged == self.burst else ""
        packet = f"session {_shown(session_id)} seq_no {seq_no}"
        extra = {"traceparent": traceparent} if traceparent else None
        if level == logging.ERROR:
            origin = f" at {where[0]}:{where[1]}" if where else ""
            trace = f"\n{_traceback(cause)}" if cause is not None else ""
            log.error(
                "block code failed in %s%s on packet %s: %s%s%s",
                method,
                origin,
                packet,
                _shown(exc, 500),
                more,
                trace,
                extra=extra,
            )
        else:
            log.warning("%s refused packet %s: %s%s", method, packet, _shown(exc, 500), more, extra=extra)

    def flush(self) -> None:
        """Log the counts not reported yet (at shutdown)."""
        for site in list(self._windows):
            self._flush(site)

    def _flush(self, site: Site) -> None:
        window = self._windows.pop(site, None)
        if window is not None:
            self._summary(site, window)

    def _summary(self, site: Site, window: _Window) -> None:
        if window.timer is not None:
            window.timer.cancel()
            window.timer = None
        if not window.suppressed:
            return
        name, method, path, line = site
        origin = f" at {path}:{line}" if path else ""
        level = logging.ERROR if name == BlockCodeError.__name__ else logging.WARNING
        log.log(
            level,
            "%s%s failed %d more times (%s) in the last %.0fs, not logged one by one; last: %s",
            method,
            origin,
            window.suppressed,
            name,
            self._clock() - window.started,
            window.last,
        )


def _raised_at(tb: TracebackType | None) -> tuple[str, int] | None:
    """File and line in the block's own file where its exception came from.

    The traceback starts in the SDK (the adapter, the telemetry wrapper); the first frame
    outside the SDK's folder is the block method, and the deepest frame still in that
    method's file is the block's line (a ``json.loads`` that raised is reported at the
    block's call, not inside json).
    """
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_SDK_DIR):
        tb = tb.tb_next
    if tb is None:
        return None
    path, line = tb.tb_frame.f_code.co_filename, tb.tb_lineno
    inner = tb.tb_next
    while inner is not None:
        if inner.tb_frame.f_code.co_filename == path:
            line = inner.tb_lineno
        inner = inner.tb_next
    return path, line


def _traceback(exc: BaseException) -> str:
    """The traceback of ``exc``, indented, its message escaped onto one line.

    The message may carry the caller's data (a block that echoes its input into an
    error): unescaped, a newline in it would start a forged log line.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__))
    last = f"{type(exc).__qualname__}: {_shown(exc, 500)}"
    return textwrap.indent(f"Traceback (most recent call last):\n{frames}{last}", "  ")


def _later(delay: float, fn: Callable[..., Any], *args: Any) -> asyncio.TimerHandle | None:
    """``loop.call_later`` when a loop runs in this thread; None otherwise (the next report flushes)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(max(0.0, delay), fn, *args)


__all__ = ["BlockErrorLog"]
