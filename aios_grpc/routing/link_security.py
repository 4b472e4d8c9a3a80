"""``LinkSecurity``: TLS and tokens for the links to downstream blocks (``AIOS_ROUTE_TLS``).

``AIOS_ROUTE_TLS`` is a JSON list of entries; the first whose ``pattern`` matches a
target's ``host:port`` (the allow-list's matching: a ``*`` stays within one label)
decides how this block talks to it. A target no entry matches gets a plaintext link
with no token, as before.

.. code-block:: json

    [{"pattern": "*.blocks.svc.cluster.local:50051",
      "ca_file": "/etc/aios/links/ca.crt",
      "cert_file": "/etc/aios/links/tls.crt", "key_file": "/etc/aios/links/tls.key",
      "token_file": "/etc/aios/links/token"},
     {"pattern": "10.0.0.*:50051", "token": "...", "tls": false}]

Keys: ``pattern`` (required); ``tls`` (default: true when any file is given);
``ca_file`` (PEM roots to verify the target; default: the system's); ``cert_file`` +
``key_file`` (a client certificate, for a target with mutual TLS); ``server_name``
(the name the target's certificate is checked against, when it is not the host);
``token`` or ``token_file`` (sent as ``authorization: Bearer <token>``; the file, one
token on its first line, is re-read when it changed, for each new stream). An entry for
a Redis target may give ``password`` (and ``username``) and the same TLS files.

Every entry is checked at start-up (files readable, certificate with its key, known
keys, a token not empty); a problem is one ``ConfigurationError`` line naming the
entry by its index, never showing a token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import grpc

from aios_grpc.errors import ConfigurationError
from aios_grpc.routing.policy import AllowList

_KEYS = frozenset(
    {"pattern", "tls", "ca_file", "cert_file", "key_file", "server_name", "token", "token_file", "password", "username"}
)


def _read(path: str, where: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigurationError(f"{where}: {key}={path!r}: cannot read: {exc.strerror}") from None


@dataclass
class LinkSecurity:
    """How to reach the targets of one ``AIOS_ROUTE_TLS`` entry."""

    pattern: str
    tls: bool
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    token: str = field(default="", repr=False)
    token_file: str = ""
    password: str = field(default="", repr=False)
    username: str = ""
    where: str = "AIOS_ROUTE_TLS"
    _token_stamp: tuple[int, int, int] | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, entry: Any, index: int) -> LinkSecurity:
        """One entry of ``AIOS_ROUTE_TLS``; ``ConfigurationError`` naming ``AIOS_ROUTE_TLS[index]``."""
        where = f"AIOS_ROUTE_TLS[{index}]"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where}: must be a JSON object")
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise ConfigurationError(f"{where}: unknown keys {unknown} (known: {sorted(_KEYS)})")
        for key, value in entry.items():
            if key != "tls" and not isinstance(value, str):
                raise ConfigurationError(f"{where}: {key} must be a string")
        pattern = str(entry.get("pattern", "")).strip()
        if not pattern:
            raise ConfigurationError(f'{where}: needs a "pattern" (host:port glob)')
        try:
            AllowList([pattern])
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        cert_file, key_file = entry.get("cert_file", ""), entry.get("key_file", "")
        if bool(cert_file) != bool(key_file):
            raise ConfigurationError(f"{where}: cert_file and key_file go together (a client certificate needs both)")
        ca_file = entry.get("ca_file", "")
        tls = entry.get("tls", bool(ca_file or cert_file))
        if not isinstance(tls, bool):
            raise ConfigurationError(f"{where}: tls must be true or false")
        if not tls and (ca_file or cert_file):
            raise ConfigurationError(f"{where}: TLS files are given but tls is false")
        if "token" in entry and not entry["token"].strip():
            raise ConfigurationError(f"{where}: token is empty")
        if entry.get("token") and entry.get("token_file"):
            raise ConfigurationError(f"{where}: give token or token_file, not both")
        found = cls(
            pattern=pattern,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            server_name=entry.get("server_name", ""),
            token=entry.get("token", "").strip(),
            token_file=entry.get("token_file", ""),
            password=entry.get("password", ""),
            username=entry.get("username", ""),
            where=where,
        )
        found.ca = _read(ca_file, where, "ca_file") if ca_file else None
        if cert_file:
            found.cert = _read(cert_file, where, "cert_file")
            found.key = _read(key_file, where, "key_file")
            from aios_grpc.service.tls import check_key_pair

            check_key_pair(found.cert, found.key, f"{where}: cert_file", f"{where}: key_file")
        if found.token_file:
            found.token = found._read_token()
            if not found.token:
                raise ConfigurationError(f"{where}: token_file={found.token_file!r} holds no token")
        return found

    def _read_token(self) -> str:
        try:
            st = os.stat(self.token_file)
            with open(self.token_file, encoding="utf-8") as f:
                lines = [line.strip() for line in f.read().splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigurationError(f"{self.where}: token_file={self.token_file!r}: cannot read: {reason}") from None
        self._token_stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        return next((line for line in lines if line and not line.startswith("#")), "")

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata for a new stream: the bearer token, re-read when its file changed."""
        if self.token_file:
            try:
                st = os.stat(self.token_file)
                if (st.st_mtime_ns, st.st_size, st.st_ino) != self._token_stamp:
                    self.token = self._read_token() or self.token
            except (OSError, ConfigurationError):
                pass  # the token read before goes on being sent
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials for a gRPC link; None for plaintext."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """Extra channel options (the name the target's certificate is checked against)."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def redis_options(self) -> dict[str, Any]:
        """Keyword arguments for a ``redis.asyncio.Redis`` to a Redis target of this entry."""
        options: dict[str, Any] = {}
        if self.password:
            options["password"] = self.password
        if self.username:
            options["username"] = self.username
        if self.tls:
            options["ssl"] = True
            if self.ca_file:
                options["ssl_ca_certs"] = self.ca_file
            if self.cert_file:
                options["ssl_certfile"] = self.cert_file
                options["ssl_keyfile"] = self.key_file
        return options


class LinkSecurityTable:
    """The ``AIOS_ROUTE_TLS`` entries, looked up by target address (first match wins)."""

    def __init__(self, entries: list[Any] | None = None) -> None:
        self.entries = [LinkSecurity.parse(entry, i) for i, entry in enumerate(entries or [])]
        self._lists = [AllowList([e.pattern]) for e in self.entries]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def for_address(self, address: str) -> LinkSecurity | None:
        """The entry for ``host:port``; None when no pattern matches (plaintext, no token)."""
        for entry, allow in zip(self.entries, self._lists, strict=True):
            if allow.allows_address(address):
                return entry
        return None


__all__ = ["LinkSecurity", "LinkSecurityTable"]
