"""``JsonFormatter``: one JSON object per log record and line (``AIOS_LOG_FORMAT=json``).

Fields: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``exc`` (the
traceback, when the record has one), and ``trace_id`` / ``span_id`` when the record is
about a traced packet: taken from the record's ``traceparent`` (set by the SDK on a
packet's failure, with the packet's span) or else from the OpenTelemetry span current
when the record was made. A log collector (Loki, Cloud Logging, ...) so joins a log line
to its trace. The standard library's ``json`` escapes every control character, so a
caller's string in a message cannot start a forged line.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any


def _ids(record: logging.LogRecord) -> tuple[str, str] | None:
    traceparent = getattr(record, "traceparent", None)
    if isinstance(traceparent, str):
        parts = traceparent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            return parts[1], parts[2]
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - a dependency of the SDK
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = _ids(record)
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


__all__ = ["JsonFormatter"]
