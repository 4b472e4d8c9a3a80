"""``TokenAuth``: bearer tokens on the data and control planes, as a gRPC server interceptor.

Who may call what (docs/security.md):

- the data plane, ``BlockService/Process``: a data-plane token (``AIOS_AUTH_TOKENS``,
  ``AIOS_AUTH_TOKENS_FILE``) or a control-plane token; open when neither data list is set;
- the control plane, ``SetParameters``, ``Management``, ``GetInfo``: a control-plane
  token (``AIOS_CONTROL_TOKENS``, ``AIOS_CONTROL_TOKENS_FILE``); when no control list
  is set, the data-plane tokens; a data-plane token when control tokens are set is
  PERMISSION_DENIED;
- ``grpc.health.v1.Health``: always open (probes carry no token);
- server reflection: the data plane's rule, unless ``AIOS_REFLECTION`` is ``open``
  (``off`` does not serve it at all: ``server.py``).

The check runs once per call, when grpc looks up the method's handler (a Process
stream's packets are not checked again), so its cost per packet is nil on a
long-lived stream. Tokens are compared as SHA-256 digests with ``hmac.compare_digest``
against every token of the list, so the time taken says nothing about which token,
how many, or how much of one matched. No token is ever logged or put in an error.

A token file (one token a line; blank lines and ``#`` comments skipped) is checked for
a change (its size, modification time and inode: a Kubernetes Secret is swapped by a
symlink) at most every ``reload_s`` seconds, on the next call. A file that became
unreadable or empty keeps the tokens read before (logged as a warning).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias

import grpc

from aios_grpc.errors import ConfigurationError

log = logging.getLogger("aios_grpc.auth")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")
DATA_METHODS = frozenset({"/aios.block.v1.BlockService/Process"})
CONTROL_METHODS = frozenset(
    {
        "/aios.block.v1.BlockService/SetParameters",
        "/aios.block.v1.BlockService/Management",
        "/aios.block.v1.BlockService/GetInfo",
    }
)

UNAUTHENTICATED_MESSAGE = "missing or unknown bearer token (send the metadata 'authorization: Bearer <token>')"
NOT_BEARER_MESSAGE = "the authorization metadata must read 'Bearer <token>'"
PERMISSION_MESSAGE = "this token may not call the control plane (SetParameters, Management, GetInfo)"


def _digest(token: str | bytes) -> bytes:
    raw = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
    return hashlib.sha256(raw).digest()


def _matches(candidate: bytes, digests: tuple[bytes, ...]) -> bool:
    """Whether ``candidate`` (a digest) is one of ``digests``, looking at every one of them."""
    found = False
    for digest in digests:
        found |= hmac.compare_digest(candidate, digest)
    return found


def read_token_file(path: str, variable: str) -> list[str]:
    """The tokens in ``path``: one a line, blank lines and ``#`` comments skipped.

    Raises ``ConfigurationError`` naming ``variable`` when the file is unreadable.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"{variable}={path!r}: cannot read the token file: {reason}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class TokenList:
    """One list of accepted tokens: fixed ones plus, optionally, a file re-read when it changes."""

    def __init__(
        self, tokens: Iterable[str], path: str = "", *, variable: str, file_variable: str, reload_s: float = 5.0
    ) -> None:
        self.variable = variable
        self.file_variable = file_variable
        self.path = path
        self.reload_s = reload_s
        self._fixed = [t for t in (str(t).strip() for t in tokens)]
        if any(not t for t in self._fixed):
            raise ConfigurationError(f"{variable}: a token is empty")
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self.digests: tuple[bytes, ...] = ()
        if path:
            self._stamp = self._file_stamp()
            from_file = read_token_file(path, file_variable)
            if not from_file:
                raise ConfigurationError(f"{file_variable}={path!r}: the token file holds no token")
            self._set(from_file)
        else:
            self._set([])
        self._next_check = time.monotonic() + reload_s

    @property
    def configured(self) -> bool:
        """Whether this list guards anything (it has fixed tokens or a file)."""
        return bool(self._fixed or self.path)

    def _set(self, from_file: list[str]) -> None:
        self.digests = tuple(_digest(t) for t in dict.fromkeys([*self._fixed, *from_file]))

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self, now: float) -> None:
        """Re-read the file if it changed (checked at most every ``reload_s``)."""
        if not self.path or now < self._next_check:
            return
        self._next_check = now + self.reload_s
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            from_file = read_token_file(self.path, self.file_variable)
        except ConfigurationError as exc:
            log.warning("%s; the tokens read before stay valid", exc)
            return
        if not from_file:
            log.warning("%s=%r holds no token now; the tokens read before stay valid", self.file_variable, self.path)
            return
        self._set(from_file)
        log.info("%s re-read (%s)", self.file_variable, self.path)

    def accepts(self, digest: bytes) -> bool:
        """Whether the token of ``digest`` is on this list."""
        return _matches(digest, self.digests)


def bearer_digest(metadata: Iterable[tuple[str, Any]] | None) -> bytes | str | None:
    """The SHA-256 of the bearer token in ``metadata``; None when there is none; a message when malformed."""
    for key, value in metadata or ():
        if key != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return NOT_BEARER_MESSAGE
        return _digest(token)
    return None


_FIRST_MESSAGE_WAIT_S = 1.0
"""How long a refused stream waits for the caller's first message before it ends."""

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class TokenAuth(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Checks ``authorization: Bearer <token>`` per call; see the module docstring for the rules."""

    def __init__(self, data: TokenList, control: TokenList, *, reflection: str = "auto") -> None:
        self.data = data
        self.control = control
        self.reflection_open = reflection == "open"
        self._denials: dict[tuple[str, bool, bool], Handler] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> TokenAuth | None:
        """The interceptor the settings ask for; None when no token list is configured."""
        reload_s = settings.tls_reload_s
        data = TokenList(
            settings.auth_tokens,
            settings.auth_tokens_file,
            variable="AIOS_AUTH_TOKENS",
            file_variable="AIOS_AUTH_TOKENS_FILE",
            reload_s=reload_s,
        )
        control = TokenList(
            settings.control_tokens,
            settings.control_tokens_file,
            variable="AIOS_CONTROL_TOKENS",
            file_variable="AIOS_CONTROL_TOKENS_FILE",
            reload_s=reload_s,
        )
        if not data.configured and not control.configured:
            return None
        return cls(data, control, reflection=settings.reflection)

    def decide(self, method: str, metadata: Iterable[tuple[str, Any]] | None) -> tuple[grpc.StatusCode, str] | None:
        """None when the call may go ahead, else the status code and message that refuse it."""
        if method.startswith(HEALTH_PREFIX):
            return None
        now = time.monotonic()
        self.data.refresh(now)
        self.control.refresh(now)
        control_plane = method in CONTROL_METHODS
        if not control_plane:
            if method.startswith(REFLECTION_PREFIXES) and self.reflection_open:
                return None
            if not self.data.configured:
                return None  # only the control plane is locked
        digest = bearer_digest(metadata)
        if digest is None:
            return grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE
        if isinstance(digest, str):
            return grpc.StatusCode.UNAUTHENTICATED, digest
        # Both lists are looked at in full whatever the outcome (constant time over all tokens).
        is_control = self.control.accepts(digest)
        is_data = self.data.accepts(digest)
        if not control_plane:
            return None if is_control or is_data else (grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        if self.control.configured:
            if is_control:
                return None
            if is_data:
                return grpc.StatusCode.PERMISSION_DENIED, PERMISSION_MESSAGE
            return grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE
        return None if is_data else (grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        """Hand the call on, or a handler that ends it UNAUTHENTICATED / PERMISSION_DENIED."""
        refused = self.decide(handler_call_details.method, handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if refused is None or handler is None:
            return handler
        log.debug("refused %s: %s", handler_call_details.method[:200], refused[0].name)
        return self._denial(refused, handler)

    def _denial(self, refused: tuple[grpc.StatusCode, str], handler: Handler) -> Handler:
        code, message = refused
        key = (f"{code.name}:{message}", handler.request_streaming, handler.response_streaming)
        found = self._denials.get(key)
        if found is None:
            found = self._denials[key] = _refusing_handler(code, message, handler)
        return found


def _refusing_handler(code: grpc.StatusCode, message: str, like: Handler) -> Handler:
    """A handler of ``like``'s kind that ends the call with ``code`` before reading a request.

    It has no deserializer: a refused caller's bytes are never parsed.
    """

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def refuse_stream(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        # grpc.aio's client reports a stream that ends while it writes its first message
        # as INTERNAL ("Internal error from Core") instead of this status: wait (briefly)
        # for that message to arrive first. It is not parsed.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(anext(aiter(requests), None), _FIRST_MESSAGE_WAIT_S)
        await context.abort(code, message)

    if like.request_streaming and like.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    if like.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse_stream)
    if like.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


__all__ = ["TokenAuth", "TokenList", "bearer_digest", "read_token_file"]
