"""The exception tree of aios-grpc and its one mapping to gRPC status codes.

::

    AiosError
    ├── ConfigurationError       bad settings or block class; raised at start-up
    │   └── BlockLoadError       MODULE:CLASS cannot be imported
    ├── PacketError              one packet failed; answered on that packet only
    │   ├── InvalidPacket        INVALID_ARGUMENT (bad JSON, too many files, ...)
    │   │   └── InvalidJSON         packet.json() on data that is not JSON (also a ValueError)
    │   ├── PreprocessRejected   INVALID_ARGUMENT (on_preprocess returned False)
    │   ├── ProcessingFailed     UNKNOWN (on_data / on_batch returned False)
    │   ├── BlockCodeError       INTERNAL (block code raised or returned a bad shape)
    │   ├── DeadlineExceeded     DEADLINE_EXCEEDED (retryable)
    │   ├── ResourceExhausted    RESOURCE_EXHAUSTED (retryable)
    │   ├── Unavailable          UNAVAILABLE (retryable)
    │   │   ├── LinkUnavailable     a downstream target stayed unreachable (routing)
    │   │   └── PartialsAbandoned   a streaming producer's partials go nowhere any more
    │   ├── DownstreamError      a downstream block's error, its code passed on (routing)
    │   ├── PermissionDenied     PERMISSION_DENIED
    │   ├── Transient            UNAVAILABLE (retryable): the block says "try again"
    │   ├── Permanent            FAILED_PRECONDITION: the block says "this input will fail again"
    │   └── InvalidInput         INVALID_ARGUMENT: the block says "this input is wrong"
    ├── ParametersRejected       SetParameters: on_update refused (INVALID_ARGUMENT)
    └── UnknownAction            Management: action not handled (UNIMPLEMENTED)

A block may raise ``UnknownAction`` from ``management`` to say that it does not know an
action; any ``PacketError`` raised from block code keeps its own code.

The three error kinds a block names itself (``Transient``, ``Permanent``,
``InvalidInput``) can be raised or returned in place of the message:
``return False, Transient("upstream timeout")`` from ``on_preprocess``, ``on_data`` or
an ``on_batch`` entry. A plain ``(False, "message")`` stays ``ProcessingFailed``
(UNKNOWN, not retried) or, from ``on_preprocess``, ``PreprocessRejected``.
"""

from __future__ import annotations

import grpc


class AiosError(Exception):
    """Base of every error raised by aios-grpc."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    retryable: bool = False


class ConfigurationError(AiosError):
    """Invalid settings or block class, found at start-up."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class BlockLoadError(ConfigurationError):
    """A ``MODULE:CLASS`` reference that cannot be imported."""


class PacketError(AiosError):
    """One packet failed; only that packet is answered with this error.

    ``stage`` names where it failed ("decode", "mux", "preprocess", "data", "batch",
    "route", "deadline", "queue").
    """

    def __init__(self, message: str, *, stage: str = "", retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        if retryable is not None:
            self.retryable = retryable


class InvalidPacket(PacketError):
    """The packet itself is malformed (bad JSON, too many files, bad routing pointer)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidJSON(InvalidPacket, ValueError):
    """``AIOSPacket.json()`` met data that is not JSON: INVALID_ARGUMENT, not the INTERNAL of
    a block's own bug (a ``ValueError`` too, so a block's ``except ValueError`` still works)."""


class PreprocessRejected(PacketError):
    """``on_preprocess`` returned ``(False, message)``."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ProcessingFailed(PacketError):
    """``on_data`` or ``on_batch`` returned ``(False, message)`` for the packet."""

    code = grpc.StatusCode.UNKNOWN


class BlockCodeError(PacketError):
    """Block code raised an exception or returned a value of the wrong shape."""

    code = grpc.StatusCode.INTERNAL


class DeadlineExceeded(PacketError):
    """The packet's deadline passed before it could be processed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True


class ResourceExhausted(PacketError):
    """A bounded queue or limit is full; sending again later may succeed."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = True


class Unavailable(PacketError):
    """The block or a downstream target is not available right now."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class LinkUnavailable(Unavailable):
    """A routing target could not take the packet within the retry time."""

    def __init__(self, message: str, *, stage: str = "route", retryable: bool | None = None) -> None:
        super().__init__(message, stage=stage, retryable=retryable)


class PartialsAbandoned(Unavailable):
    """Raised in a streaming ``on_data`` producer whose packet's partials go nowhere any more
    (the caller's stream closed, or the packet was answered); the generator is closed."""


class DownstreamError(PacketError):
    """A downstream block answered an output with an error; its code is passed on."""

    def __init__(self, message: str, code: grpc.StatusCode, retryable: bool) -> None:
        super().__init__(message, stage="route", retryable=retryable)
        self.code = code


class PermissionDenied(PacketError):
    """The packet asks for something it is not allowed (a routing target off the allow-list)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Transient(PacketError):
    """The block failed for now and the same packet may succeed later (UNAVAILABLE, retried).

    >>> Transient("upstream timeout").retryable
    True
    """

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class Permanent(PacketError):
    """The block cannot process this packet and never will (FAILED_PRECONDITION, not retried)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class InvalidInput(PacketError):
    """The packet's input is wrong for this block (INVALID_ARGUMENT, not retried)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ParametersRejected(AiosError):
    """``on_update`` refused the parameters, or they were not a JSON object."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class UnknownAction(AiosError):
    """A management action that neither the block nor the SDK handles."""

    code = grpc.StatusCode.UNIMPLEMENTED


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, bool]:
    """The gRPC status code and retryability that ``exc`` is reported with."""
    if isinstance(exc, AiosError):
        return exc.code, exc.retryable
    return grpc.StatusCode.INTERNAL, False


__all__ = [
    "AiosError",
    "BlockCodeError",
    "BlockLoadError",
    "ConfigurationError",
    "DeadlineExceeded",
    "InvalidInput",
    "InvalidJSON",
    "InvalidPacket",
    "PacketError",
    "ParametersRejected",
    "Permanent",
    "PermissionDenied",
    "PreprocessRejected",
    "ProcessingFailed",
    "ResourceExhausted",
    "Transient",
    "Unavailable",
    "UnknownAction",
    "status_of",
]
