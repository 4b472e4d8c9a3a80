"""Telemetry: the no-op ``Telemetry`` seam and ``Observability`` (OpenTelemetry).

``from aios_grpc.telemetry import Telemetry`` is the seam the scheduler calls;
``make_telemetry(settings)`` is what ``BlockServer`` uses by default. The
OpenTelemetry implementation is imported only when it is asked for, so importing
the SDK stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aios_grpc.telemetry._base import Telemetry

if TYPE_CHECKING:
    from aios_grpc.settings import Settings
    from aios_grpc.telemetry._otel import Observability


def make_telemetry(settings: Settings, **kwargs: Any) -> Telemetry:
    """``Observability`` for ``settings`` (``kwargs`` go to its constructor)."""
    from aios_grpc.telemetry._otel import Observability

    return Observability(settings, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Observability":
        from aios_grpc.telemetry._otel import Observability

        return Observability
    if name == "OTelMetricsBackend":
        from aios_grpc.telemetry._metrics_backend import OTelMetricsBackend

        return OTelMetricsBackend
    raise AttributeError(name)


__all__ = ["OTelMetricsBackend", "Observability", "Telemetry", "make_telemetry"]
