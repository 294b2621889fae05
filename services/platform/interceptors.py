"""Cross-cutting behaviour for every RPC: request id, the contract's bounds, authentication,
error mapping and one structured access-log line.

The platform layer wraps each ordermesh method's handler function once, when a component
registers its servicer (:meth:`PlatformInterceptor.registering`); everything below runs
inside the RPC's own task, so the context variables it sets reach the servicer. It is not a
grpc.aio server interceptor: with any interceptor installed, grpc.aio awaits the interceptor
chain to look up the handler of every call (health checks included), a cost per call that
wrapping at registration does not have.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

import grpc
import psycopg
from google.protobuf.message import DecodeError, Message
from opentelemetry.trace import Span, Status, StatusCode
from psycopg_pool import PoolTimeout

from services.common.errors import (
    DependencyUnavailable,
    DomainError,
    InvalidArgument,
    Unauthenticated,
)
from services.common.identity import Principal
from services.platform import metrics, tracing, validation
from services.platform.errors import REQUEST_ID, error_status, status_code_for
from services.platform.logging import request_id_var
from services.platform.tokens import TokenVerifier

log = logging.getLogger("ordermesh.rpc")

# Zipkin's service name of the gRPC components' spans.
TRACE_SERVICE = "api"

Context = grpc.aio.ServicerContext[Any, Any]

# Postgres going away (a restart, a failover, the pool exhausted) is an outage: the caller
# may retry; it is never an internal error.
DATABASE_OUTAGES = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)

_REQUEST_ID_FORM = re.compile(r"[A-Za-z0-9._:-]{1,128}")

principal_var: ContextVar[Principal | None] = ContextVar("principal", default=None)


def current_principal() -> Principal:
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("this call needs a bearer token")
    return principal


def metadata_value(context: Context, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else value
    return None


class HandlerRegistry(Protocol):
    """What a generated ``add_*Servicer_to_server`` calls on the server it is given."""

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]
    ) -> None: ...

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None: ...


class PlatformInterceptor:
    """Wraps every ordermesh method: the request arrives as bytes and is bounded, parsed and
    checked against the contract (:mod:`services.platform.validation`) before the caller
    is authenticated and the servicer runs, so bad input is INVALID_ARGUMENT whatever the
    transport. Handlers are wrapped once, as they are registered."""

    def __init__(self, verifier: TokenVerifier, public_methods: Collection[str]) -> None:
        self._verifier = verifier
        self._public = frozenset(public_methods)

    def registering(self, server: HandlerRegistry) -> HandlerRegistry:
        """``server`` as a servicer registers with it, each ordermesh handler wrapped."""
        return _WrappingRegistry(server, self)

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` of ``method`` (``/package.Service/Method``) with the platform's
        behaviour; handlers of other services (health, reflection) are left as they are."""
        if not method.startswith("/ordermesh."):
            return handler
        return self._wrap(method, handler)

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        request_type = handler.request_deserializer.__self__  # type: ignore[union-attr]
        reader = _RequestReader(request_type)
        needs_token = method not in self._public
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, needs_token, reader, handler.unary_unary),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, needs_token, reader, handler.unary_stream),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_unary(
        self, method: str, needs_token: bool, reader: _RequestReader, behaviour: Any
    ) -> Any:
        async def unary(raw: bytes, context: Context) -> Any:
            async with self._call(method, context):
                request = reader.read(raw)
                await self._authenticate(context, needs_token)
                return await behaviour(request, context)

        return unary

    def _wrap_stream(
        self, method: str, needs_token: bool, reader: _RequestReader, behaviour: Any
    ) -> Any:
        async def stream(raw: bytes, context: Context) -> AsyncIterator[Any]:
            async with self._call(method, context):
                request = reader.read(raw)
                await self._authenticate(context, needs_token)
                async for message in behaviour(request, context):
                    yield message

        return stream

    @contextlib.asynccontextmanager
    async def _call(self, method: str, context: Context) -> AsyncIterator[None]:
        """One RPC: its span, request id, error mapping, one access-log line."""
        with tracing.server_span(
            TRACE_SERVICE, method, lambda key: metadata_value(context, key)
        ) as span:
            async with self._handled(method, context, span):
                yield

    @contextlib.asynccontextmanager
    async def _handled(self, method: str, context: Context, span: Span) -> AsyncIterator[None]:
        started = self._begin(context)
        code = grpc.StatusCode.OK
        try:
            yield
        except DomainError as error:
            code = status_code_for(error)
            await context.abort_with_status(error_status(error, request_id_var.get()))
        except DATABASE_OUTAGES as error:
            code = grpc.StatusCode.UNAVAILABLE
            log.warning("database unavailable", extra={"method": method, "error": str(error)})
            outage = DependencyUnavailable(
                f"the database is unavailable right now; retry later (request id"
                f" {request_id_var.get()})",
                dependency="postgres",
            )
            await context.abort_with_status(error_status(outage, request_id_var.get()))
        except Exception as error:
            code = _code_of(error, context)
            if code is grpc.StatusCode.UNKNOWN:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error", extra={"method": method})
                await context.abort(code, f"internal error (request id {request_id_var.get()})")
            raise
        finally:
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            self._finish(method, started, code)

    def _begin(self, context: Context) -> float:
        sent = metadata_value(context, REQUEST_ID)
        # A caller's id is kept if it is a plain token; anything else gets a fresh one.
        request_id = sent if sent and _REQUEST_ID_FORM.fullmatch(sent) else uuid.uuid4().hex
        request_id_var.set(request_id)
        principal_var.set(None)
        context.set_trailing_metadata(((REQUEST_ID, request_id),))
        return time.perf_counter()

    async def _authenticate(self, context: Context, needs_token: bool) -> None:
        """Public methods (login, refresh, the catalog, ...) ignore any token sent along: a
        client that attaches its expired access token to every call can still refresh it."""
        if not needs_token:
            return
        authorization = metadata_value(context, "authorization")
        principal_var.set(await self._verifier.principal(authorization))

    @staticmethod
    def _finish(method: str, started: float, code: grpc.StatusCode) -> None:
        principal = principal_var.get()
        seconds = time.perf_counter() - started
        metrics.observe_rpc(method, code.name, seconds)
        log.info(
            "rpc",
            extra={
                "method": method,
                "code": code.name,
                "duration_ms": round(seconds * 1000, 2),
                "user_id": principal.user_id if principal else None,
            },
        )


def metered(server: HandlerRegistry) -> HandlerRegistry:
    """``server`` as a servicer registers with it, each unary handler timed and counted
    (``ordermesh_grpc_server_*``): for servers that do without the platform's wrapping (the
    rate-limit service, which Envoy calls and which has its own error handling)."""
    return _MeteringRegistry(server)


class _MeteringRegistry:
    def __init__(self, server: HandlerRegistry) -> None:
        self._server = server

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]
    ) -> None:
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                name: _metered(f"/{service_name}/{name}", handler)
                for name, handler in method_handlers.items()
            },
        )


def _metered(
    method: str, handler: grpc.RpcMethodHandler[Any, Any]
) -> grpc.RpcMethodHandler[Any, Any]:
    behaviour: Any = handler.unary_unary
    if behaviour is None:
        return handler

    async def unary(request: Any, context: Context) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            response = await behaviour(request, context)
        except Exception as error:
            code = _code_of(error, context)
            raise
        else:
            set_code = context.code()
            if isinstance(set_code, grpc.StatusCode):
                code = set_code
            return response
        finally:
            metrics.observe_rpc(method, code.name, time.perf_counter() - started)

    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _WrappingRegistry:
    def __init__(self, server: HandlerRegistry, platform: PlatformInterceptor) -> None:
        self._server = server
        self._platform = platform

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]
    ) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedGenericHandler(h, self._platform) for h in generic_rpc_handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                name: self._platform.wrap(f"/{service_name}/{name}", handler)
                for name, handler in method_handlers.items()
            },
        )


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose ordermesh handlers come out wrapped (once per method)."""

    def __init__(self, inner: grpc.GenericRpcHandler, platform: PlatformInterceptor) -> None:
        self._inner = inner
        self._platform = platform
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None
            wrapped = self._wrapped[method] = self._platform.wrap(method, handler)
        return wrapped


class _RequestReader:
    """Bytes to a request message of one type, within the contract's bounds."""

    def __init__(self, request_type: type[Message]) -> None:
        self._type = request_type
        self._rules = validation.rules_for(request_type.DESCRIPTOR)

    def read(self, raw: bytes) -> Message:
        name = self._rules.message_name
        if len(raw) > self._rules.max_bytes:
            raise InvalidArgument(
                f"the request is {len(raw)} bytes; a {name} is at most "
                f"{self._rules.max_bytes} bytes"
            )
        try:
            request = self._type.FromString(raw)
        except DecodeError:
            raise InvalidArgument(
                f"the request is not a valid {name}: malformed protobuf, a string that is not"
                " valid UTF-8, or values nested deeper than the protobuf parser follows"
            ) from None
        violations = self._rules.violations(request)
        if violations:
            raise InvalidArgument(
                violations[0].description,
                violations=tuple((v.field, v.description) for v in violations),
            )
        return request


def _code_of(error: Exception, context: Context) -> grpc.StatusCode:
    if isinstance(error, grpc.aio.AbortError):
        code = context.code()
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code()
    return grpc.StatusCode.UNKNOWN
