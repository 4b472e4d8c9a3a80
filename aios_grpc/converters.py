"""Conversions between protobuf messages and the SDK's own types.

Transports (the gRPC servicer, Redis adapters) call these and nothing else touches
protobuf packets.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from aios_grpc._pb import pb
from aios_grpc.errors import PacketError, status_of
from aios_grpc.packet import AIOSPacket, FileInfo
from aios_grpc.packet import fill_packet as fill_packet  # re-exported: the packet encoding lives with the type
from aios_grpc.packet import packet_to_proto as packet_to_proto


def packet_from_proto(msg: pb.Packet) -> AIOSPacket:
    """An ``AIOSPacket`` with the fields of a protobuf ``Packet``."""
    files = msg.files
    n = len(files)
    if n == 1:
        # The usual file packet: no comprehension (a frame of its own) for one item.
        f = files[0]
        infos = [FileInfo(f.metadata, f.file_data)]
    else:
        infos = [FileInfo(f.metadata, f.file_data) for f in files] if n else []
    headers = msg.headers
    # Positional, in field order: this runs once per packet read.
    return AIOSPacket(
        msg.session_id,
        msg.seq_no,
        msg.data,
        msg.ts,
        msg.output_ptr,
        infos,
        dict(headers) if headers else {},
        msg.deadline,
    )


def error_to_proto(exc: BaseException) -> pb.PacketError:
    """A ``PacketError`` message naming the gRPC code, message, retryability and stage."""
    code, retryable = status_of(exc)
    stage = exc.stage if isinstance(exc, PacketError) else ""
    message = exc.message if isinstance(exc, PacketError) else f"{type(exc).__name__}: {exc}"
    return pb.PacketError(
        code=code.value[0],
        code_name=code.name,
        message=message,
        retryable=retryable,
        stage=stage,
    )


def code_from_number(number: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` with the given number (UNKNOWN when out of range)."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def struct_to_dict(msg: struct_pb2.Struct) -> dict[str, Any]:
    """A protobuf ``Struct`` as a plain dict (whole numbers stay ints)."""
    return _ints(json_format.MessageToDict(msg))  # type: ignore[no-any-return]


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    """A plain JSON-able dict as a protobuf ``Struct``."""
    msg = struct_pb2.Struct()
    msg.update(json.loads(json.dumps(value, default=str)))
    return msg


def to_value(value: Any) -> struct_pb2.Value:
    """Any JSON-able value as a protobuf ``Value`` (non-JSON types go through ``str``)."""
    msg = struct_pb2.Value()
    json_format.Parse(json.dumps(value, default=str), msg)
    return msg


def _ints(value: Any) -> Any:
    # Struct stores every number as a double; give back ints where nothing was lost so
    # that {"n": 3} set from grpcurl reaches on_update as 3, not 3.0.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value
