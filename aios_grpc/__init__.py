"""aios-grpc: serve a Python processing or inference block as a gRPC microservice.

Port a block written for the AIOS Instance SDK by changing its import line::

    from aios_grpc import *

    class MyBlock:
        def __init__(self, context): ...
        def on_preprocess(self, packet): ...
        def on_data(self, entry): ...

    if __name__ == "__main__":
        Block(MyBlock).run()

``json`` and ``time`` are exported too: the original SDK's star import brought them
into block modules, and its documented samples use them without importing them.
"""

from __future__ import annotations

import json
import time

from aios_grpc._version import __version__
from aios_grpc.block import Block
from aios_grpc.context import Context
from aios_grpc.errors import (
    AiosError,
    BlockCodeError,
    ConfigurationError,
    DeadlineExceeded,
    InvalidInput,
    InvalidPacket,
    PacketError,
    ParametersRejected,
    Permanent,
    PermissionDenied,
    PreprocessRejected,
    ProcessingFailed,
    ResourceExhausted,
    Transient,
    Unavailable,
    UnknownAction,
)
from aios_grpc.events import BlockEvents, BlockSideCars
from aios_grpc.grouping import Batcher, Muxer, TimeBasedBatcher
from aios_grpc.metrics import AIOSMetrics
from aios_grpc.packet import AIOSPacket, FileInfo, OnDataResult, PreProcessResult
from aios_grpc.server import BlockServer
from aios_grpc.settings import Settings, load_settings
from aios_grpc.state import SessionsManager, StateDict
from aios_grpc.testing import BlockTester, TestContext

__all__ = [
    "AIOSMetrics",
    "AIOSPacket",
    "AiosError",
    "Batcher",
    "Block",
    "BlockCodeError",
    "BlockEvents",
    "BlockServer",
    "BlockSideCars",
    "BlockTester",
    "ConfigurationError",
    "Context",
    "DeadlineExceeded",
    "FileInfo",
    "InvalidInput",
    "InvalidPacket",
    "Muxer",
    "OnDataResult",
    "PacketError",
    "ParametersRejected",
    "Permanent",
    "PermissionDenied",
    "PreProcessResult",
    "PreprocessRejected",
    "ProcessingFailed",
    "ResourceExhausted",
    "SessionsManager",
    "Settings",
    "StateDict",
    "TestContext",
    "TimeBasedBatcher",
    "Transient",
    "Unavailable",
    "UnknownAction",
    "__version__",
    "json",
    "load_settings",
    "time",
]
