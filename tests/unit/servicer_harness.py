"""grpc.aio servicers driven in process through grpc_testing, with the platform's real
per-call behaviour, against fakes of their ports: no network, no server.

grpc_testing (grpcio-testing) was built for sync servicers. Its server calls
``getattr(servicer, method)(request, context)`` on a thread of its own and takes what comes
back as the response, and its ServicerContext is sync (``abort`` raises a bare Exception,
``abort_with_status`` is not implemented). It cannot await a coroutine or iterate an async
generator, and asyncio support is not planned (grpc/grpc#24942). So the servicer handed to
it here is a sync facade that does, per call, what a grpc.aio server does:

1. the generated ``add_*Servicer_to_server`` registers the servicer's method handlers
   through the real :class:`PlatformInterceptor` (``registering``), which wraps each with the
   request id, the contract's bounds, authentication and error mapping, on a recorder
   standing in for the server;
2. the method's wrapped handler is looked up by its name;
3. the handler is awaited, on one event loop in a thread of its own, with the
   request as its wire bytes and an :class:`AioContext`: grpc.aio's ServicerContext
   semantics over grpc_testing's context, which records the outcome, so ``termination()``
   gives the code, details and trailing metadata a client would get.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace, TracebackType
from typing import Any, NoReturn, TypeVar

import grpc
import grpc_testing
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from jwt.algorithms import RSAAlgorithm

from services.common.identity import Principal
from services.platform.errors import REQUEST_ID, RETRY_AFTER
from services.platform.interceptors import PlatformInterceptor
from services.platform.tokens import TokenVerifier

ISSUER, AUDIENCE = "ordermesh-unit", "ordermesh-unit-api"
STATUS_DETAILS = "grpc-status-details-bin"

Metadata = tuple[tuple[str, str | bytes], ...]
T = TypeVar("T")

_END_OF_STREAM = object()

# Each kind of unusable credentials, with what the caller is told.
BAD_CREDENTIALS = {
    "missing": "missing bearer token",
    "garbage": "malformed bearer token",
    "not bearer": "authorization must be 'Bearer <token>'",
    "expired": "token has expired",
    "refresh token": "access token is required",
    "unknown key": "token signed with an unknown key",
}


@dataclass(frozen=True)
class TokenMint:
    """Signs RS256 tokens as the auth service does and publishes its key as a JWKS, for a
    real :class:`TokenVerifier` to fetch."""

    key: rsa.RSAPrivateKey
    kid: str = "unit-key"

    @classmethod
    def generate(cls) -> TokenMint:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    async def jwks(self) -> dict[str, Any]:
        public = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self.jwks, issuer=ISSUER, audience=AUDIENCE)

    def token(
        self,
        principal: Principal,
        *,
        expires_in: int = 900,
        typ: str = "access",
        kid: str | None = None,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": principal.user_id,
            "email": principal.email,
            "role": principal.role.value,
            "tier": principal.tier.value,
            "iat": now - 60,
            "exp": now + expires_in,
            "jti": f"access-{now}",
            "typ": typ,
        }
        headers = {"kid": kid or self.kid}
        return jwt.encode(claims, self.key, algorithm="RS256", headers=headers)

    def bearer(self, principal: Principal) -> Metadata:
        return (("authorization", f"Bearer {self.token(principal)}"),)

    def bad_credentials(self, kind: str, principal: Principal) -> Metadata:
        """The `authorization` metadata of one of the :data:`BAD_CREDENTIALS` kinds."""
        forms = {
            "missing": "",
            "garbage": "Bearer not-a-token",
            "not bearer": f"Basic {self.token(principal)}",
            "expired": f"Bearer {self.token(principal, expires_in=-60)}",
            "refresh token": f"Bearer {self.token(principal, typ='refresh')}",
            "unknown key": f"Bearer {self.token(principal, kid='retired-key')}",
        }
        value = forms[kind]
        return (("authorization", value),) if value else ()


@dataclass(frozen=True)
class Outcome:
    """How a call ended, as grpc_testing's ``termination()`` reports it."""

    response: Any
    code: grpc.StatusCode
    details: str
    trailing_metadata: Mapping[str, str | bytes]
    responses: tuple[Any, ...] = ()

    def ok(self) -> Any:
        assert self.code is grpc.StatusCode.OK, f"{self.code.name}: {self.details}"
        return self.response

    @property
    def request_id(self) -> str:
        value = self.trailing_metadata[REQUEST_ID]
        assert isinstance(value, str)
        return value

    @property
    def retry_after(self) -> str | None:
        value = self.trailing_metadata.get(RETRY_AFTER)
        assert value is None or isinstance(value, str)
        return value

    def status(self) -> status_pb2.Status:
        """The rich ``google.rpc.Status``, checked to agree with the call's code and details."""
        raw = self.trailing_metadata[STATUS_DETAILS]
        assert isinstance(raw, bytes)
        status = status_pb2.Status.FromString(raw)
        assert code_pb2.Code.Name(status.code) == self.code.name
        assert status.message == self.details
        return status

    def field_violations(self) -> list[tuple[str, str]]:
        bad_request = error_details_pb2.BadRequest()
        assert any(detail.Unpack(bad_request) for detail in self.status().details)
        return [(v.field, v.description) for v in bad_request.field_violations]

    def retry_delay_seconds(self) -> int:
        retry = error_details_pb2.RetryInfo()
        assert any(detail.Unpack(retry) for detail in self.status().details)
        return int(retry.retry_delay.seconds)


class AioContext:
    """What servicers and the platform use of ``grpc.aio.ServicerContext``, with grpc.aio's
    semantics (an abort sets the status and raises AbortError, keeping the trailing metadata
    and details set before unless it names its own), recorded on grpc_testing's context."""

    def __init__(self, recorder: Any) -> None:
        self._recorder = recorder
        self._trailing_metadata: Metadata = ()
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._aborted = False

    def invocation_metadata(self) -> Metadata:
        return tuple(self._recorder.invocation_metadata())

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        self._trailing_metadata = tuple(metadata)
        self._recorder.set_trailing_metadata(self._trailing_metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing_metadata

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code
        self._recorder.set_code(code)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details
        self._recorder.set_details(details)

    def details(self) -> str:
        return self._details

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()
    ) -> NoReturn:
        if self._aborted:
            raise grpc.aio.UsageError("Abort already called!")
        self._aborted = True
        if trailing_metadata or not self._trailing_metadata:
            self.set_trailing_metadata(trailing_metadata)
        if details or not self._details:
            self.set_details(details)
        self.set_code(code)
        raise grpc.aio.AbortError("Locally aborted.")

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    @property
    def failed(self) -> bool:
        return self._code not in (None, grpc.StatusCode.OK)


class _HandlerRecorder:
    """Stands in for the server ``add_*Servicer_to_server`` registers the handlers with."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """The same handlers arrive by name below, which grpc.aio looks up first."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.handlers.update({f"/{service}/{name}": h for name, h in handlers.items()})


class _EventLoopThread:
    """One event loop in a thread of its own, as a grpc.aio server runs all its calls on one."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="servicer-loop")
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()


def _as_received(handler: grpc.RpcMethodHandler[Any, Any], request: Message | bytes) -> Any:
    """The request as grpc.aio hands it to the handler: the wire bytes, deserialised only if
    the handler asks for that (the platform's wrapped handlers read the bytes themselves). A
    test may send bytes that are no valid message at all."""
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    return raw if handler.request_deserializer is None else handler.request_deserializer(raw)


class ServicerHarness:
    """One servicer behind the platform interceptor, served by grpc_testing."""

    def __init__(
        self,
        service: ServiceDescriptor,
        servicer: object,
        add_to_server: Callable[[Any, Any], None],
        *,
        mint: TokenMint,
        public_methods: Collection[str] = (),
        verifier: TokenVerifier | None = None,
    ) -> None:
        """``verifier`` defaults to one that fetches ``mint``'s key set."""
        recorder = _HandlerRecorder()
        platform = PlatformInterceptor(verifier or mint.verifier(), public_methods)
        add_to_server(servicer, platform.registering(recorder))
        self._handlers = recorder.handlers
        self._mint = mint
        self._service = service
        self._loop = _EventLoopThread()
        facade = SimpleNamespace(
            **{name: self._facade_of(method) for name, method in service.methods_by_name.items()}
        )
        self._server = grpc_testing.server_from_dictionary(
            {service: facade}, grpc_testing.strict_real_time()
        )

    def __enter__(self) -> ServicerHarness:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._loop.close()

    def unary(
        self,
        method: str,
        request: Message | bytes,
        *,
        caller: Principal | None = None,
        metadata: Metadata = (),
    ) -> Outcome:
        """The call, with a valid access token of ``caller`` if one is named."""
        rpc = self._server.invoke_unary_unary(
            self._service.methods_by_name[method], self._metadata(caller, metadata), request, None
        )
        response, trailing_metadata, code, details = rpc.termination()
        return Outcome(response, code, details, dict(trailing_metadata))

    def unary_stream(
        self,
        method: str,
        request: Message | bytes,
        *,
        caller: Principal | None = None,
        metadata: Metadata = (),
        expect: int = 0,
    ) -> Outcome:
        """Takes ``expect`` responses as they come, then waits for the end of the stream."""
        rpc = self._server.invoke_unary_stream(
            self._service.methods_by_name[method], self._metadata(caller, metadata), request, None
        )
        responses = tuple(rpc.take_response() for _ in range(expect))
        trailing_metadata, code, details = rpc.termination()
        return Outcome(None, code, details, dict(trailing_metadata), responses)

    def _metadata(self, caller: Principal | None, metadata: Metadata) -> Metadata:
        return (self._mint.bearer(caller) if caller else ()) + metadata

    def _facade_of(self, method: MethodDescriptor) -> Callable[[Any, Any], Any]:
        name = f"/{self._service.full_name}/{method.name}"
        if method.client_streaming:
            raise NotImplementedError(f"{name}: client streaming is not driven by this harness")
        return self._stream_facade(name) if method.server_streaming else self._unary_facade(name)

    def _resolve(self, name: str) -> grpc.RpcMethodHandler[Any, Any]:
        handler = self._handlers.get(name)
        assert handler is not None, f"{name} is not registered"
        return handler

    def _unary_facade(self, name: str) -> Callable[[Any, Any], Any]:
        def unary(request: Message | bytes, recorder: Any) -> Any:
            context = AioContext(recorder)

            async def call() -> Any:
                handler = self._resolve(name)
                behaviour: Any = handler.unary_unary
                return await behaviour(_as_received(handler, request), context)

            try:
                response = self._loop.submit(call()).result()
            except grpc.aio.AbortError:
                return None
            # grpc.aio discards the response of a call whose status is not OK.
            return None if context.failed else response

        return unary

    def _stream_facade(self, name: str) -> Callable[[Any, Any], Iterator[Any]]:
        def stream(request: Message | bytes, recorder: Any) -> Iterator[Any]:
            context = AioContext(recorder)
            sent: queue.SimpleQueue[Any] = queue.SimpleQueue()

            async def call() -> None:
                # One task iterates the whole stream, as in grpc.aio, so the context variables
                # the interceptor sets hold for every message.
                try:
                    handler = self._resolve(name)
                    behaviour: Any = handler.unary_stream
                    async for message in behaviour(_as_received(handler, request), context):
                        sent.put(message)
                finally:
                    sent.put(_END_OF_STREAM)

            running = self._loop.submit(call())
            recorder.add_callback(running.cancel)
            while (message := sent.get()) is not _END_OF_STREAM:
                yield message
            try:
                running.result()
            except (grpc.aio.AbortError, concurrent.futures.CancelledError):
                return

        return stream
