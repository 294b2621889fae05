"""The platform layer wraps handlers as servicers register them (no interceptor per call):
ordermesh methods come out wrapped, by name and through generic handlers alike, once per
method; other services' handlers (health, reflection) are left as they are."""

from __future__ import annotations

from typing import Any, cast

import grpc
from ordermesh.order.v1 import order_pb2_grpc

from services.order.api import OrderApi
from services.platform.interceptors import PlatformInterceptor
from services.platform.tokens import TokenVerifier
from tests.unit.fakes.order import FakeCatalog, FakeLiveFeed, FakeOrderStore

ORDER = "ordermesh.order.v1.OrderService"


class Recorder:
    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.by_name: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.by_name.update({f"/{service}/{name}": h for name, h in handlers.items()})


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def no_keys() -> dict[str, Any]:
    return {"keys": []}


def platform() -> PlatformInterceptor:
    return PlatformInterceptor(TokenVerifier(no_keys, issuer="i", audience="a"), ())


def test_ordermesh_handlers_are_wrapped_as_they_are_registered() -> None:
    recorder = Recorder()
    order_pb2_grpc.add_OrderServiceServicer_to_server(
        OrderApi(FakeOrderStore(), FakeCatalog({}), FakeLiveFeed()),
        cast(Any, platform().registering(recorder)),
    )
    get_order = recorder.by_name[f"/{ORDER}/GetOrder"]
    # The wrapped handler reads the request's bytes itself, within the contract's bounds.
    assert get_order.request_deserializer is None
    [generic] = recorder.generic
    through_generic = generic.service(Details(f"/{ORDER}/GetOrder"))
    assert through_generic is not None and through_generic.request_deserializer is None
    assert generic.service(Details(f"/{ORDER}/GetOrder")) is through_generic
    assert generic.service(Details(f"/{ORDER}/NoSuchMethod")) is None


def test_other_services_handlers_are_left_as_they_are() -> None:
    recorder = Recorder()
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(
        lambda request, context: request, request_deserializer=bytes
    )
    registry = platform().registering(recorder)
    registry.add_registered_method_handlers("grpc.health.v1.Health", {"Check": handler})
    assert recorder.by_name["/grpc.health.v1.Health/Check"] is handler
