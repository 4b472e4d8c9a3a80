"""Tokens and TLS for the clients: the channel credentials and the ``authorization`` header.

Both clients take the same keywords; this module turns them into a gRPC channel and
the metadata sent with every call, so the blocking and asyncio forms stay the same.

- ``token="..."`` sends ``authorization: Bearer <token>`` with every call (over TLS
  or, for tests and private networks, over a plaintext channel).
- ``root_certificates`` (PEM bytes or a file path) verifies the server against that CA
  instead of the system's; ``tls=True`` alone uses the system's CAs.
- ``certificate_chain`` + ``private_key`` (PEM bytes or file paths) present a client
  certificate for mutual TLS.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import grpc

Pem = Union[bytes, str, "os.PathLike[str]"]
"""PEM data as bytes, or the path of a PEM file."""


def _pem(value: Pem | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {os.fspath(value)!r}: {exc.strerror}") from None


def ssl_credentials(
    tls: bool,
    root_certificates: Pem | None,
    certificate_chain: Pem | None,
    private_key: Pem | None,
) -> grpc.ChannelCredentials | None:
    """Channel credentials for these options; None when the channel is plaintext."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("certificate_chain and private_key go together (mutual TLS needs both)")
    if not (tls or root_certificates is not None or certificate_chain is not None):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(root_certificates, "root_certificates"),
        private_key=_pem(private_key, "private_key"),
        certificate_chain=_pem(certificate_chain, "certificate_chain"),
    )


def with_token(metadata: Sequence[tuple[str, str]] | None, token: str | None) -> tuple[tuple[str, str], ...]:
    """``metadata`` with ``authorization: Bearer <token>`` in front when a token is given."""
    rest = tuple(metadata or ())
    if token is None:
        return rest
    if not token or any(c in token for c in "\r\n"):
        raise ValueError("token must be a non-empty string on one line")
    return (("authorization", f"Bearer {token}"), *rest)


def make_channel(
    target: str, options: list[tuple[str, Any]], credentials: grpc.ChannelCredentials | None, *, aio: bool
) -> Any:
    """A blocking or asyncio channel to ``target``, secure when ``credentials`` are given."""
    if aio:
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, credentials, options=options)
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)
