"""``Packet`` is wire-compatible with the original SDK's ``AIOSPacket``.

The original layout is built here at run time from a descriptor (as the seed's
.proto declares it: fields 1, 2, 4, 5, 6, 7 and ``FileInfo`` 1, 2), so the test does
not depend on our own .proto to describe the other side.
"""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from aios_grpc._pb import pb
from aios_grpc.converters import packet_from_proto, packet_to_proto

F = descriptor_pb2.FieldDescriptorProto


def _original_classes() -> tuple[type, type]:
    file = descriptor_pb2.FileDescriptorProto(name="original_aios.proto", package="original", syntax="proto3")
    info = file.message_type.add(name="FileInfo")
    info.field.add(name="metadata", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    info.field.add(name="file_data", number=2, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    packet = file.message_type.add(name="AIOSPacket")
    packet.field.add(name="session_id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    packet.field.add(name="seq_no", number=2, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL)
    packet.field.add(name="data", number=4, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    packet.field.add(name="ts", number=5, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    packet.field.add(name="output_ptr", number=6, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    packet.field.add(
        name="files", number=7, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".original.FileInfo"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    classes = message_factory.GetMessages([file], pool=pool)
    return classes["original.AIOSPacket"], classes["original.FileInfo"]


AIOSPacket, FileInfo = _original_classes()


def _original_packet(**overrides: object):
    fields = dict(
        session_id="session-42",
        seq_no=2**40 + 7,
        data='{"value": 0.9, "text": "h\\u00e9llo"}',
        ts=1732262400.125,
        output_ptr='{"outputs": [{"host": "b2", "port": 50051, "queue_name": "q", "block_id": "b2"}]}',
        files=[FileInfo(metadata='{"name": "a.png"}', file_data=b"\x89PNG\x00\xff"), FileInfo(file_data=b"")],
    )
    fields.update(overrides)
    return AIOSPacket(**fields)


def test_the_original_layout_is_what_the_seed_declares():
    numbers = {f.name: f.number for f in AIOSPacket.DESCRIPTOR.fields}
    assert numbers == {"session_id": 1, "seq_no": 2, "data": 4, "ts": 5, "output_ptr": 6, "files": 7}
    ours = {f.name: f.number for f in pb.Packet.DESCRIPTOR.fields}
    assert {k: ours[k] for k in numbers} == numbers
    assert all(n >= 8 for k, n in ours.items() if k not in numbers)
    assert 3 not in ours.values()


@pytest.mark.parametrize("overrides", [{}, {"files": []}, {"data": "", "seq_no": 0}, {"session_id": "ünï"}])
def test_original_bytes_parse_as_ours_and_back_unchanged(overrides):
    original = _original_packet(**overrides)
    wire = original.SerializeToString()
    ours = pb.Packet.FromString(wire)
    assert ours.session_id == original.session_id and ours.seq_no == original.seq_no
    assert ours.data == original.data and ours.ts == original.ts and ours.output_ptr == original.output_ptr
    assert [(f.metadata, f.file_data) for f in ours.files] == [(f.metadata, f.file_data) for f in original.files]
    assert ours.SerializeToString() == wire
    # Through the SDK's own packet type too, as the server converts it.
    assert packet_to_proto(packet_from_proto(ours)).SerializeToString() == wire


def test_our_bytes_parse_as_the_original_and_back_unchanged():
    ours = pb.Packet(
        session_id="s", seq_no=3, data='{"a": 1}', ts=1.5, output_ptr="",
        files=[pb.FileInfo(metadata="{}", file_data=b"abc")],
    )  # fmt: skip
    wire = ours.SerializeToString()
    original = AIOSPacket.FromString(wire)
    assert (original.session_id, original.seq_no, original.data, original.ts) == ("s", 3, '{"a": 1}', 1.5)
    assert original.files[0].file_data == b"abc"
    assert original.SerializeToString() == wire


def test_new_fields_are_skipped_by_the_original_and_kept_as_unknown():
    ours = pb.Packet(session_id="s", seq_no=1, data="{}", headers={"traceparent": "00-abc-def-01"}, deadline=9.5)
    original = AIOSPacket.FromString(ours.SerializeToString())
    assert (original.session_id, original.seq_no, original.data) == ("s", 1, "{}")
    # An original hop that forwards the packet keeps our new fields for the next hop.
    again = pb.Packet.FromString(original.SerializeToString())
    assert dict(again.headers) == {"traceparent": "00-abc-def-01"} and again.deadline == 9.5
