"""Python client for aios-grpc blocks (needs only grpcio, grpcio-health-checking and protobuf).

>>> from aios_grpc_client import BlockClient
>>> with BlockClient("127.0.0.1:50051") as block:           # doctest: +SKIP
...     for result in block.process([{"value": 0.9}, {"value": 0.1}], session_id="s1"):
...         print(result.seq_no, result.ok, result.data)
1 True {'value': 0.9, 'passed': True}
2 True {'value': 0.1, 'passed': False}

``AsyncBlockClient`` has the same methods as coroutines and async iterators.
"""

from aios_grpc_client._aio import AsyncBlockClient, AsyncProcessStream
from aios_grpc_client._client import BlockClient, ProcessStream
from aios_grpc_client._endpoints import Endpoint, RetryPolicy
from aios_grpc_client._resend import Unanswered
from aios_grpc_client._types import PacketError, Result, make_packet, pb

__all__ = [
    "AsyncBlockClient",
    "AsyncProcessStream",
    "BlockClient",
    "Endpoint",
    "PacketError",
    "ProcessStream",
    "Result",
    "RetryPolicy",
    "Unanswered",
    "make_packet",
    "pb",
]
