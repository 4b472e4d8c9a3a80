"""The server's path for coalesced requests (several packets per ProcessRequest), in process."""

from __future__ import annotations

import pytest

from aios_grpc._pb import pb
from aios_grpc.converters import packet_from_proto
from aios_grpc.packet import AIOSPacket, FileInfo


@pytest.mark.parametrize("files", [[], [("{}", b"a")], [("{}", b"a"), ("", b"")]])
def test_packet_from_proto_copies_every_file(files: list[tuple[str, bytes]]) -> None:
    msg = pb.Packet(
        session_id="s",
        seq_no=3,
        data="{}",
        ts=1.5,
        headers={"k": "v"},
        deadline=2.5,
        files=[pb.FileInfo(metadata=m, file_data=d) for m, d in files],
    )
    packet = packet_from_proto(msg)
    assert packet == AIOSPacket("s", 3, "{}", 1.5, "", [FileInfo(m, d) for m, d in files], {"k": "v"}, 2.5)
