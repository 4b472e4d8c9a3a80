"""The data types a block sees: AIOSPacket, FileInfo, PreProcessResult, OnDataResult.

They keep the names and attributes of the original AIOS Instance SDK, so a block's
``on_preprocess(packet)`` and ``on_data(entry)`` read ``packet.data``,
``packet.session_id``, ``entry.extra_data`` and so on exactly as before.

>>> p = AIOSPacket(session_id="s1", seq_no=1, data='{"value": 0.9}')
>>> p.json()
{'value': 0.9}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aios_grpc._pb import pb
from aios_grpc.errors import InvalidJSON

# JSONDecoder sets scan_once (its C scanner) in __init__; typeshed does not declare it.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``, with fewer Python calls for the usual document.

    The decoder's C scanner parses a document that starts and ends without
    whitespace in one call; anything else (whitespace around it, bytes, an error)
    goes through ``json.loads``, which gives the same value or the same error.
    """
    if type(text) is str:
        try:
            value, end = _scan_once(text, 0)
        except StopIteration:
            return json.loads(text)
        if end == len(text):
            return value
    return json.loads(text)


@dataclass(slots=True)
class FileInfo:
    """A file attached to a packet: JSON ``metadata`` text and raw ``file_data``."""

    metadata: str = ""
    file_data: bytes = b""

    def meta(self) -> Any:
        """The metadata parsed from JSON (``{}`` when empty)."""
        return json.loads(self.metadata) if self.metadata else {}


@dataclass(slots=True)
class AIOSPacket:
    """One unit of work, as the block sees it.

    ``data`` is the JSON text of the payload, except after a ``Muxer`` merged several
    packets: then it is the dict ``{"inputs": [...]}``, as in the original SDK.
    """

    session_id: str = ""
    seq_no: int = 0
    data: Any = ""
    ts: float = 0.0
    output_ptr: str = ""
    files: list[FileInfo] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    deadline: float = 0.0
    # What check_json parsed, and the data it was parsed from: the next json() call
    # takes it instead of parsing the same text a second time.
    _parsed: Any = field(default=None, init=False, repr=False, compare=False)
    _parsed_from: Any = field(default=None, init=False, repr=False, compare=False)

    def json(self) -> Any:
        """``data`` parsed from JSON (returned as is when it is already a dict or list).

        Each call returns a value of its own (changing it changes nothing else).
        """
        data = self.data
        if isinstance(data, str | bytes):
            if not data:
                return {}
            if self._parsed_from is data:
                # The SDK's check parsed it already; hand that value over once.
                value, self._parsed, self._parsed_from = self._parsed, None, None
                return value
            try:
                return loads(data)
            except ValueError as exc:
                # Our validation, not the block's bug: INVALID_ARGUMENT wherever it is called.
                raise InvalidJSON(f"packet data is not valid JSON: {exc}", stage="decode") from None
        return data

    def check_json(self) -> None:
        """Raise ``ValueError`` when ``data`` (text) is not JSON; the next ``json()`` reuses the parse."""
        data = self.data
        if isinstance(data, str | bytes) and data:
            self._parsed = loads(data)
            self._parsed_from = data

    def SerializeToString(self) -> bytes:
        """The packet as protobuf bytes (``aios.block.v1.Packet``, wire-compatible with AIOSPacket)."""
        return bytes(packet_to_proto(self).SerializeToString())


@dataclass(slots=True)
class PreProcessResult:
    """What ``on_preprocess`` returns per unit of work for ``on_data``."""

    packet: AIOSPacket
    extra_data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class OnDataResult:
    """What ``on_data`` returns: ``output`` becomes the JSON ``data`` of the output packet."""

    output: Any
    files: list[FileInfo] = field(default_factory=list)


# The packet's own wire encoding lives with the type (``SerializeToString`` needs it);
# ``aios_grpc.converters`` re-exports both functions with the other conversions.
def packet_to_proto(packet: AIOSPacket) -> pb.Packet:
    """A protobuf ``Packet`` from an ``AIOSPacket`` (a dict ``data`` is JSON-encoded)."""
    msg = pb.Packet()
    fill_packet(msg, packet)
    return msg


def fill_packet(msg: pb.Packet, packet: AIOSPacket) -> None:
    """Set the fields of ``msg`` (an empty ``Packet``, possibly inside another message) from ``packet``.

    Filling a sub-message in place spares building a ``Packet`` and copying it in.
    """
    data = packet.data
    if not isinstance(data, str):
        data = data.decode() if isinstance(data, bytes) else json.dumps(data)
    msg.ts = packet.ts  # always set: it marks ``msg`` present inside its parent message
    # The other fields stay unset when at their default: the same message, fewer calls into upb.
    if packet.session_id:
        msg.session_id = packet.session_id
    if packet.seq_no:
        msg.seq_no = packet.seq_no
    if data:
        msg.data = data
    if packet.output_ptr:
        msg.output_ptr = packet.output_ptr
    if packet.deadline:
        msg.deadline = packet.deadline
    if packet.files:
        msg.files.extend(pb.FileInfo(metadata=f.metadata, file_data=f.file_data) for f in packet.files)
    if packet.headers:
        msg.headers.update(packet.headers)


__all__ = ["AIOSPacket", "FileInfo", "OnDataResult", "PreProcessResult", "fill_packet", "packet_to_proto"]
