"""``ServerTls``: the server's TLS and mutual-TLS credentials, re-read when the files rotate.

``AIOS_TLS_CERT_FILE`` + ``AIOS_TLS_KEY_FILE`` make the port TLS only;
``AIOS_TLS_CLIENT_CA_FILE`` adds mutual TLS (a client certificate signed by one of
those CAs is required). The credentials are grpc's dynamic ones: before each new
connection's handshake grpc asks ``fetch()``, which looks at the files' size,
modification time and inode at most every ``reload_s`` seconds and, when one changed,
reads and checks them again; a new certificate is used from the next connection on
(open connections keep theirs). Files caught half-written, or a new key that does not
match the new certificate, keep the old credentials (logged as a warning) until the
next change.

Every problem found at start-up is one ``ConfigurationError`` line: a certificate
without its key, an unreadable or non-PEM file, a key that does not match the
certificate (checked with the ``cryptography`` package when installed, else with
``ssl.SSLContext.load_cert_chain``), a client CA without a server certificate.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from aios_grpc.errors import ConfigurationError

log = logging.getLogger("aios_grpc.tls")


@dataclass(frozen=True)
class _Files:
    cert: bytes
    key: bytes
    client_ca: bytes | None


def _read(path: str, variable: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigurationError(f"{variable}={path!r}: cannot read: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigurationError(f"{variable}={path!r}: not a PEM file")
    return data


def check_key_pair(cert: bytes, key: bytes, cert_variable: str, key_variable: str) -> None:
    """Raise ``ConfigurationError`` unless ``key`` (PEM) is the private key of ``cert``'s first certificate."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        _check_with_ssl(cert, key, cert_variable, key_variable)
        return
    try:
        certificate = x509.load_pem_x509_certificates(cert)[0]
    except ValueError as exc:
        raise ConfigurationError(f"{cert_variable}: not a PEM certificate ({exc})") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except TypeError:
        raise ConfigurationError(f"{key_variable}: the key is encrypted (give it unencrypted)") from None
    except ValueError as exc:
        raise ConfigurationError(f"{key_variable}: not a PEM private key ({exc})") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
        raise ConfigurationError(f"{key_variable} does not match the certificate in {cert_variable}")


def _check_with_ssl(cert: bytes, key: bytes, cert_variable: str, key_variable: str) -> None:
    # load_cert_chain reads files only: the bytes go to private temporary files.
    with tempfile.TemporaryDirectory(prefix="aios-tls-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise ConfigurationError(
                f"{key_variable} and {cert_variable} are not a matching key and certificate ({exc.reason})"
            ) from None


def _check_ca(ca: bytes, variable: str) -> None:
    try:
        from cryptography import x509
    except ImportError:
        return  # the PEM marker was checked; grpc reports the rest at the handshake
    try:
        x509.load_pem_x509_certificates(ca)
    except ValueError as exc:
        raise ConfigurationError(f"{variable}: not PEM certificates ({exc})") from None


class ServerTls:
    """The TLS files of one server; ``credentials()`` for ``add_secure_port``."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "", *, reload_s: float = 5.0) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self.reload_s = reload_s
        self.reloads = 0  # certificate configurations handed to grpc after the first
        self._lock = threading.Lock()  # fetch() runs on grpc's threads
        self._next_check = 0.0
        self._stamps = self._file_stamps()
        self._files = self._load()

    @classmethod
    def from_settings(cls, settings: Any) -> ServerTls | None:
        """The TLS the settings ask for; None for a plaintext port; ``ConfigurationError`` when half set."""
        cert, key, ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        if not cert and not key:
            if ca:
                raise ConfigurationError(
                    "AIOS_TLS_CLIENT_CA_FILE needs AIOS_TLS_CERT_FILE and AIOS_TLS_KEY_FILE (mutual TLS is TLS)"
                )
            return None
        if not key:
            raise ConfigurationError("AIOS_TLS_CERT_FILE is set without AIOS_TLS_KEY_FILE")
        if not cert:
            raise ConfigurationError("AIOS_TLS_KEY_FILE is set without AIOS_TLS_CERT_FILE")
        return cls(cert, key, ca, reload_s=settings.tls_reload_s)

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate."""
        return bool(self.client_ca_file)

    def _paths(self) -> list[str]:
        return [p for p in (self.cert_file, self.key_file, self.client_ca_file) if p]

    def _file_stamps(self) -> list[tuple[int, int, int] | None]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._paths():
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
                continue
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return stamps

    def _load(self) -> _Files:
        cert = _read(self.cert_file, "AIOS_TLS_CERT_FILE")
        key = _read(self.key_file, "AIOS_TLS_KEY_FILE")
        check_key_pair(cert, key, "AIOS_TLS_CERT_FILE", "AIOS_TLS_KEY_FILE")
        ca = None
        if self.client_ca_file:
            ca = _read(self.client_ca_file, "AIOS_TLS_CLIENT_CA_FILE")
            _check_ca(ca, "AIOS_TLS_CLIENT_CA_FILE")
        return _Files(cert, key, ca)

    def _configuration(self, files: _Files) -> Any:
        return grpc.ssl_server_certificate_configuration([(files.key, files.cert)], root_certificates=files.client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        """grpc's dynamic server credentials: the files now, re-read by ``fetch`` when they change."""
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self._files), self.fetch, require_client_authentication=self.mutual
        )

    def fetch(self) -> Any:
        """Called by grpc before each handshake: a new configuration when the files changed, else None."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_check:
                return None
            self._next_check = now + self.reload_s
            stamps = self._file_stamps()
            if stamps == self._stamps:
                return None
            try:
                files = self._load()
            except Exception as exc:  # raised into grpc's C core it would fail the handshake
                # Perhaps caught between writing the certificate and its key: tried again
                # at the next check, the old credentials serve meanwhile.
                log.warning("TLS files changed but cannot be used yet (%s); the previous ones stay", exc)
                return None
            self._stamps = stamps
            if files == self._files:
                return None
            self._files = files
            self.reloads += 1
        log.info("TLS certificate re-read from %s", self.cert_file)
        return self._configuration(files)


__all__ = ["ServerTls", "check_key_pair"]
