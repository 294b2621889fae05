"""Order events as Avro records in the order service's outbox (same transaction as the
state change; the outbox relay publishes them to the orders topic, keyed by order id)."""

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from psycopg import AsyncConnection

from services.order.domain.events import Event, OrderCancelled, OrderCreated, OrderStatusChanged
from services.order.domain.model import OrderStatus
from services.platform.messaging import registry
from services.platform.messaging.codec import EventCodec
from services.platform.messaging.outbox import add_to_outbox

SCHEMA = "orders"
SOURCE = "/ordermesh/order"


def _string_map(values: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        for key, value in values.items()
    }


def event_record(event: Event) -> tuple[str, dict[str, Any]]:
    """The Avro schema name and record for a domain event."""
    order = event.order
    match event:
        case OrderCreated():
            return "OrderCreated", {
                "order_id": order.order_id,
                "user_id": order.user_id,
                "items": [
                    {
                        "product_id": line.product_id,
                        "quantity": line.quantity,
                        "unit_price_minor": line.unit_price.amount_minor,
                    }
                    for line in order.lines
                ],
                "total_minor": order.total.amount_minor,
                "currency": order.currency,
                "payment_method": order.payment_method,
                "shipping_address": asdict(order.shipping_address),
                "created_at": order.created_at,
                "version": order.version,
                "metadata": _string_map(order.metadata),
            }
        case OrderCancelled():
            return "OrderCancelled", {
                "order_id": order.order_id,
                "user_id": order.user_id,
                "reason": event.reason,
                "previous_status": event.previous_status.value,
                "cancelled_by": None,
                "cancelled_at": order.updated_at,
                "version": order.version,
            }
        case OrderStatusChanged() if order.status is OrderStatus.DELIVERED:
            return "OrderDelivered", {
                "order_id": order.order_id,
                "user_id": order.user_id,
                "delivered_at": event.occurred_at,
                "version": order.version,
            }
        case OrderStatusChanged():
            return "OrderStatusChanged", {
                "order_id": order.order_id,
                "user_id": order.user_id,
                "status": order.status.value,
                "previous_status": event.previous_status.value,
                "reason": event.reason,
                "details": {},
                "occurred_at": event.occurred_at,
                "version": order.version,
            }


class OrderOutbox:
    def __init__(self, codec: EventCodec) -> None:
        self._codec = codec

    async def write(self, conn: AsyncConnection[Any], events: Iterable[Event]) -> None:
        for event in events:
            name, record = event_record(event)
            await add_to_outbox(
                conn,
                SCHEMA,
                codec=self._codec,
                topic=registry.ORDERS,
                key=event.order.order_id,
                event_name=name,
                record=record,
                source=SOURCE,
            )
