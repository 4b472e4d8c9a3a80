"""The one place in aios_grpc that imports the generated protobuf stubs.

Every other module imports ``pb`` (messages) and ``pb_grpc`` (service glue) from here,
so a change of generated layout touches one file. The stubs are the package
``aios_block_stubs`` of the aios-grpc-client distribution (clients/python), which the
server depends on.
"""

from __future__ import annotations

from importlib import resources

from aios_block_stubs.v1 import block_pb2 as pb
from aios_block_stubs.v1 import block_pb2_grpc as pb_grpc

SERVICE_NAME = "aios.block.v1.BlockService"
PROTO_FILE = "aios/block/v1/block.proto"


def descriptor_set_bytes() -> bytes:
    """The serialized FileDescriptorSet of the contract, with its comments."""
    return (resources.files("aios_block_stubs.v1") / "descriptor_set.binpb").read_bytes()


__all__ = ["PROTO_FILE", "SERVICE_NAME", "descriptor_set_bytes", "pb", "pb_grpc"]
