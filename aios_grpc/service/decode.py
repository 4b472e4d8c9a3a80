"""Parsing request messages ourselves, so that a bad one is answered with a clear status.

grpc calls a method's request deserializer with the message bytes. With the stubs'
``FromString`` an undecodable message ends the call UNKNOWN with a Python class name,
and grpc-core itself cuts a stream whose message is over its receive limit: the
answers of the packets read before it are lost (issue 12). So the server registers
``BlockService`` with these parsers instead (``add_block_service``):

- grpc-core's receive limit is raised to ``core_receive_limit(limit)`` (twice
  ``AIOS_MAX_MESSAGE_BYTES``), and a message over ``AIOS_MAX_MESSAGE_BYTES`` is refused
  here, RESOURCE_EXHAUSTED naming the limit; a message over twice the limit is still
  cut by grpc-core (it never reaches Python; docs/configuration.md says so).
- an undecodable message is refused INVALID_ARGUMENT naming its type.

On ``Process`` the parser raises ``Refused``: grpc hands the exception to the stream's
reader at that message, which stops reading, answers every packet read before it and
then ends the stream with the refusal's code (``Stream.read``). On the unary methods
it returns the ``Refused`` instead, which the method aborts with (grpc would turn a
raised exception into UNKNOWN).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from aios_grpc._pb import SERVICE_NAME, pb


class Refused(Exception):
    """A request message that was not parsed: the status code and message to end the call with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def core_receive_limit(limit: int) -> int:
    """grpc-core's receive limit for ``AIOS_MAX_MESSAGE_BYTES`` = ``limit``: larger messages are refused here."""
    return min(2 * limit, 2**31 - 1)


def request_parser(message_type: Any, limit: int, *, raise_refusal: bool) -> Callable[[bytes], Any]:
    """A grpc request deserializer for ``message_type`` that refuses what it cannot parse."""
    from_string = message_type.FromString
    name = message_type.DESCRIPTOR.full_name

    def parse(raw: bytes) -> Any:
        if len(raw) > limit:
            refused = Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{name} message of {len(raw)} bytes is over the limit of {limit} bytes (AIOS_MAX_MESSAGE_BYTES)",
            )
        else:
            try:
                return from_string(raw)
            except DecodeError as exc:
                refused = Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{name} message could not be parsed: {exc}")
        if raise_refusal:
            raise refused
        return refused

    return parse


def add_block_service(servicer: Any, server: Any, limit: int) -> None:
    """Register ``servicer``'s BlockService methods on ``server`` with the refusing parsers.

    The same handlers as the generated ``add_BlockServiceServicer_to_server``, but for
    the request deserializers.
    """
    unary = grpc.unary_unary_rpc_method_handler
    methods = (
        ("Process", grpc.stream_stream_rpc_method_handler, pb.ProcessRequest, pb.ProcessResponse, True),
        ("SetParameters", unary, pb.SetParametersRequest, pb.SetParametersResponse, False),
        ("Management", unary, pb.ManagementRequest, pb.ManagementResponse, False),
        ("GetInfo", unary, pb.GetInfoRequest, pb.GetInfoResponse, False),
    )
    handlers = {
        name: make(
            getattr(servicer, name),
            request_deserializer=request_parser(request, limit, raise_refusal=streaming),
            response_serializer=response.SerializeToString,
        )
        for name, make, request, response, streaming in methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


__all__ = ["Refused", "add_block_service", "core_receive_limit", "request_parser"]
