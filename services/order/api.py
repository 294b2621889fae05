"""OrderService over gRPC: translate protobuf ⇄ commands, dispatch to handlers."""

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from ordermesh.order.v1 import order_pb2, order_pb2_grpc

from services.common.clock import utc_now
from services.common.errors import InvalidArgument
from services.common.money import parse_decimal
from services.common.paging import page_from_request
from services.order import handlers
from services.order.domain.commands import CancelOrder, CreateOrder, RequestedLine, UpdateOrder
from services.order.domain.live import Delivery
from services.order.domain.model import Address, Order, OrderStatus
from services.order.domain.ports import Catalog, LiveFeed, OrderStore
from services.order.watching import WatchRequest, watch_orders
from services.platform.convert import set_money, set_timestamp
from services.platform.interceptors import current_principal, metadata_value

SERVICE = "ordermesh.order.v1.OrderService"

Context = grpc.aio.ServicerContext[Any, Any]

_STATUS_TO_PROTO: dict[OrderStatus, order_pb2.OrderStatus.ValueType] = {
    status: order_pb2.OrderStatus.Value(f"ORDER_STATUS_{status.value}") for status in OrderStatus
}


def order_to_proto(order: Order) -> order_pb2.Order:
    message = order_pb2.Order(
        order_id=order.order_id,
        user_id=order.user_id,
        status=_STATUS_TO_PROTO[order.status],
        status_reason=order.status_reason,
        payment_method=order.payment_method,
        version=order.version,
        carrier=order.carrier,
        tracking_number=order.tracking_number,
    )
    for line in order.lines:
        item = message.items.add(product_id=line.product_id, name=line.name, quantity=line.quantity)
        set_money(item.unit_price, line.unit_price)
        set_money(item.total_price, line.total_price)
    set_money(message.total_amount, order.total)
    address, shipping_address = order.shipping_address, message.shipping_address
    shipping_address.street = address.street
    shipping_address.city = address.city
    shipping_address.state = address.state
    shipping_address.zip = address.zip
    shipping_address.country = address.country
    set_timestamp(message.created_at, order.created_at)
    set_timestamp(message.updated_at, order.updated_at)
    if order.estimated_delivery is not None:
        set_timestamp(message.estimated_delivery, order.estimated_delivery)
    message.metadata.update(order.metadata)
    return message


def delivery_to_proto(delivery: Delivery) -> order_pb2.WatchOrdersResponse:
    update = delivery.update
    if update is None:
        return order_pb2.WatchOrdersResponse(cursor=str(delivery.cursor), heartbeat=True)
    message = order_pb2.WatchOrdersResponse(
        order_id=update.order_id,
        status=_STATUS_TO_PROTO[update.status],
        version=update.version,
        message=update.message,
        cursor=str(delivery.cursor),
        carrier=update.carrier,
        tracking_number=update.tracking_number,
        snapshot=delivery.snapshot,
    )
    set_timestamp(message.occurred_at, update.occurred_at)
    if update.estimated_delivery is not None:
        set_timestamp(message.estimated_delivery, update.estimated_delivery)
    return message


def _decimal_value(value: struct_pb2.Value, *, field: str) -> Decimal | None:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "number_value":
        # JSON numbers reach us as doubles; repr() is the shortest text that round-trips,
        # i.e. exactly what the client wrote for any price with up to 15 significant digits.
        return parse_decimal(repr(value.number_value), field=field)
    if kind == "string_value":
        return parse_decimal(value.string_value, field=field)
    raise InvalidArgument(f"{field} must be a number or a decimal string", field=field)


def _metadata(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def create_command(request: order_pb2.CreateOrderRequest, context: Context) -> CreateOrder:
    address = request.shipping_address
    lines = tuple(
        RequestedLine(
            product_id=item.product_id,
            quantity=item.quantity,
            expected_unit_price=_decimal_value(item.unit_price, field=f"items[{i}].unit_price")
            if item.HasField("unit_price")
            else None,
        )
        for i, item in enumerate(request.items)
    )
    return CreateOrder(
        principal=current_principal(),
        lines=lines,
        shipping_address=Address(
            street=address.street,
            city=address.city,
            state=address.state,
            zip=address.zip,
            country=address.country,
        ),
        payment_method=request.payment_method,
        expected_total=_decimal_value(request.total_amount, field="total_amount")
        if request.HasField("total_amount")
        else None,
        claimed_user_id=request.user_id,
        metadata=_metadata(request.metadata),
        idempotency_key=metadata_value(context, "idempotency-key") or request.idempotency_key,
    )


class OrderApi(order_pb2_grpc.OrderServiceServicer):
    def __init__(
        self,
        store: OrderStore,
        catalog: Catalog,
        feed: LiveFeed,
        *,
        heartbeat_seconds: float = 15.0,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._feed = feed
        self._heartbeat = heartbeat_seconds

    async def CreateOrder(
        self, request: order_pb2.CreateOrderRequest, context: Context
    ) -> order_pb2.CreateOrderResponse:
        order = await handlers.create_order(
            create_command(request, context), self._store, self._catalog, utc_now
        )
        return order_pb2.CreateOrderResponse(order=order_to_proto(order))

    async def GetOrder(
        self, request: order_pb2.GetOrderRequest, context: Context
    ) -> order_pb2.GetOrderResponse:
        order = await handlers.get_order(current_principal(), request.order_id, self._store)
        return order_pb2.GetOrderResponse(order=order_to_proto(order))

    async def ListOrders(
        self, request: order_pb2.ListOrdersRequest, context: Context
    ) -> order_pb2.ListOrdersResponse:
        page = page_from_request(request.page, request.page_size, default_size=20)
        orders, total = await handlers.list_orders(
            current_principal(), self._store, page, status=request.status, user_id=request.user_id
        )
        return order_pb2.ListOrdersResponse(
            orders=[order_to_proto(order) for order in orders],
            total=total,
            page=page.number,
            page_size=page.size,
            has_next=page.has_next(total),
        )

    async def UpdateOrderStatus(
        self, request: order_pb2.UpdateOrderStatusRequest, context: Context
    ) -> order_pb2.UpdateOrderStatusResponse:
        command = UpdateOrder(
            principal=current_principal(),
            order_id=request.order_id,
            status=request.status,
            metadata=_metadata(request.metadata),
            reason=request.reason,
        )
        order = await handlers.update_order(command, self._store, utc_now)
        return order_pb2.UpdateOrderStatusResponse(order=order_to_proto(order))

    async def CancelOrder(
        self, request: order_pb2.CancelOrderRequest, context: Context
    ) -> order_pb2.CancelOrderResponse:
        command = CancelOrder(current_principal(), request.order_id, request.reason)
        order = await handlers.cancel_order(command, self._store, utc_now)
        return order_pb2.CancelOrderResponse(order=order_to_proto(order))

    async def WatchOrders(
        self, request: order_pb2.WatchOrdersRequest, context: Context
    ) -> AsyncIterator[order_pb2.WatchOrdersResponse]:
        watch = WatchRequest(current_principal(), request.cursor, request.user_id, request.order_id)
        async for delivery in watch_orders(watch, self._store, self._feed, self._heartbeat):
            yield delivery_to_proto(delivery)
