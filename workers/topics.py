"""Kafka topic, consumer-group and event-routing names: the only place they are spelled.

One topic per owning aggregate, keyed by ``order_id``: every event one service emits about
one order lands in one partition, so consumers see that order's history in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

ORDERS = "ordermesh.orders.v1"
PAYMENTS = "ordermesh.payments.v1"
INVENTORY = "ordermesh.inventory.v1"
FULFILLMENT = "ordermesh.fulfillment.v1"
DEAD_LETTER = "ordermesh.deadletter.v1"

ORDER_VALIDATOR_GROUP = "ordermesh.order-validator"
PAYMENT_PROCESSOR_GROUP = "ordermesh.payment-processor"
INVENTORY_MANAGER_GROUP = "ordermesh.inventory-manager"
FULFILLMENT_GROUP = "ordermesh.fulfillment"
ORDER_STATUS_PROJECTOR_GROUP = "ordermesh.order-status-projector"
WEBHOOK_DISPATCHER_GROUP = "ordermesh.webhook-dispatcher"
DLQ_REPLAYER_GROUP = "ordermesh.dlq-replayer"

WORKER_GROUPS: tuple[str, ...] = (
    ORDER_VALIDATOR_GROUP,
    PAYMENT_PROCESSOR_GROUP,
    INVENTORY_MANAGER_GROUP,
    FULFILLMENT_GROUP,
    ORDER_STATUS_PROJECTOR_GROUP,
    WEBHOOK_DISPATCHER_GROUP,
)

TOPIC_BY_EVENT: Mapping[str, str] = MappingProxyType(
    {
        "OrderCreated": ORDERS,
        "OrderValidated": ORDERS,
        "OrderRejected": ORDERS,
        "OrderDelivered": ORDERS,
        "OrderCancelled": ORDERS,
        "OrderStatusChanged": ORDERS,
        "OrderReadyToShip": ORDERS,
        "PaymentProcessed": PAYMENTS,
        "PaymentFailed": PAYMENTS,
        "PaymentRefunded": PAYMENTS,
        "OrderFulfilled": INVENTORY,
        "OutOfStock": INVENTORY,
        "StockReleased": INVENTORY,
        "OrderShipped": FULFILLMENT,
    }
)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


EVENT_TOPICS: tuple[TopicSpec, ...] = tuple(
    TopicSpec(name, partitions=3) for name in (ORDERS, PAYMENTS, INVENTORY, FULFILLMENT)
)
DEAD_LETTER_RETENTION_MS = 30 * 24 * 3600 * 1000
DEAD_LETTER_TOPIC = TopicSpec(
    DEAD_LETTER, partitions=1, config={"retention.ms": str(DEAD_LETTER_RETENTION_MS)}
)
ALL: tuple[TopicSpec, ...] = (*EVENT_TOPICS, DEAD_LETTER_TOPIC)


def topic_for(event_name: str) -> str:
    """The topic an event is published to; ``KeyError`` names the unknown event."""
    try:
        return TOPIC_BY_EVENT[event_name]
    except KeyError:
        raise KeyError(f"no topic is assigned to event type {event_name!r}") from None
