"""Cross-cutting behaviour for every RPC: request id, authentication, error mapping and one
structured access-log line.

grpc.aio runs a handler in its own task after `intercept_service` returns, so context
variables set there would not reach the handler. Instead the interceptor wraps the handler
function itself; everything below runs inside the RPC's task.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextvars import ContextVar
from typing import Any

import grpc

from services.common.errors import DomainError, Unauthenticated
from services.common.identity import Principal
from services.platform.errors import error_status, status_code_for
from services.platform.logging import request_id_var
from services.platform.tokens import TokenVerifier

log = logging.getLogger("ordermesh.rpc")

Context = grpc.aio.ServicerContext[Any, Any]

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


class PlatformInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, verifier: TokenVerifier, public_methods: Collection[str]) -> None:
        self._verifier = verifier
        self._public = frozenset(public_methods)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith("/ordermesh."):
            return handler
        needs_token = method not in self._public
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, needs_token, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, needs_token, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_unary(self, method: str, needs_token: bool, behaviour: Any) -> Any:
        async def unary(request: Any, context: Context) -> Any:
            async with self._call(method, needs_token, context):
                return await behaviour(request, context)

        return unary

    def _wrap_stream(self, method: str, needs_token: bool, behaviour: Any) -> Any:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async with self._call(method, needs_token, context):
                async for message in behaviour(request, context):
                    yield message

        return stream

    @contextlib.asynccontextmanager
    async def _call(self, method: str, needs_token: bool, context: Context) -> AsyncIterator[None]:
        """One RPC: request id, authentication, error mapping, one access-log line."""
        started = self._begin(context)
        code = grpc.StatusCode.OK
        try:
            await self._authenticate(context, needs_token)
            yield
        except DomainError as error:
            code = status_code_for(error)
            await context.abort_with_status(error_status(error))
        except Exception as error:
            code = _code_of(error, context)
            if code is grpc.StatusCode.UNKNOWN:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error", extra={"method": method})
                await context.abort(code, f"internal error (request id {request_id_var.get()})")
            raise
        finally:
            self._finish(method, started, code)

    def _begin(self, context: Context) -> float:
        request_id = metadata_value(context, "x-request-id") or uuid.uuid4().hex
        request_id_var.set(request_id)
        principal_var.set(None)
        context.set_trailing_metadata((("x-request-id", request_id),))
        return time.perf_counter()

    async def _authenticate(self, context: Context, needs_token: bool) -> None:
        authorization = metadata_value(context, "authorization")
        if authorization is None and not needs_token:
            return
        principal_var.set(await self._verifier.principal(authorization))

    @staticmethod
    def _finish(method: str, started: float, code: grpc.StatusCode) -> None:
        principal = principal_var.get()
        log.info(
            "rpc",
            extra={
                "method": method,
                "code": code.name,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "user_id": principal.user_id if principal else None,
            },
        )


def _code_of(error: Exception, context: Context) -> grpc.StatusCode:
    if isinstance(error, grpc.aio.AbortError):
        code = context.code()
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code()
    return grpc.StatusCode.UNKNOWN
