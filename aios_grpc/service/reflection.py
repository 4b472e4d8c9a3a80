"""Server reflection that keeps the .proto comments.

grpcio-reflection serves descriptors rebuilt from the generated modules, which have
lost the comments. This servicer swaps in our file's descriptor from the descriptor
set generated with ``--include_source_info``, so ``grpcurl describe`` shows the
comments written in ``protos/``.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from aios_grpc._pb import PROTO_FILE, descriptor_set_bytes


class _CommentedReflection(ReflectionServicer):  # type: ignore[misc]
    def __init__(self, service_names: list[str]) -> None:
        super().__init__(service_names)
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set_bytes())
        self._with_comments = {f.name: f.SerializeToString() for f in files.file}

    def _swap(self, response: Any) -> Any:
        if not response.HasField("file_descriptor_response"):
            return response
        protos = response.file_descriptor_response.file_descriptor_proto
        for i, raw in enumerate(protos):
            name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
            if name in self._with_comments:
                protos[i] = self._with_comments[name]
        return response

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._swap(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        return self._swap(super()._file_containing_symbol(request, fully_qualified_name))


def enable_reflection(server: grpc.aio.Server, service_names: list[str]) -> None:
    """Serve reflection for ``service_names`` (and itself) on ``server``."""
    names = [*service_names, reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(_CommentedReflection(names), server)


__all__ = ["PROTO_FILE", "enable_reflection"]
