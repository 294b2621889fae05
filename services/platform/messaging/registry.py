"""The messaging registry, as data: topics, consumer groups and what each handles, the
outboxes and where every event type goes. The only place these names are spelled; the
relay, the workers, ``ordermesh status``, devstack and the compose test all read it.

One topic per owning aggregate, keyed by ``order_id``: every event one service emits about
one order lands in one partition, so consumers see that order's history in order.

A consumer group names the bounded context that provides its handlers (the context's
``bootstrap.consumers``), whose database role it connects as and whose inbox records what it
applied; it imports nothing of that context.
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
ORDER_LIVE_FEED_GROUP = "ordermesh.order-live-feed"
WEBHOOK_DISPATCHER_GROUP = "ordermesh.webhook-dispatcher"
DLQ_REPLAYER_GROUP = "ordermesh.dlq-replayer"


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


@dataclass(frozen=True)
class ConsumerGroup:
    """A consumer worker: the name processes, replicas and compose know it by, its Kafka
    group, the context that provides its handlers (and its database role and inbox), the
    topics it reads, and the event types it handles (it skips the others)."""

    worker: str
    group: str
    context: str
    inbox_schema: str
    topics: tuple[str, ...]
    events: tuple[str, ...]


CONSUMER_GROUPS: tuple[ConsumerGroup, ...] = (
    ConsumerGroup(
        "order_validator",
        ORDER_VALIDATOR_GROUP,
        "order",
        "orders",
        (ORDERS,),
        ("OrderCreated",),
    ),
    ConsumerGroup(
        "order_status_projector",
        ORDER_STATUS_PROJECTOR_GROUP,
        "order",
        "orders",
        (ORDERS, PAYMENTS, INVENTORY, FULFILLMENT),
        (
            "OrderValidated",
            "OrderRejected",
            "PaymentProcessed",
            "PaymentFailed",
            "OrderFulfilled",
            "OutOfStock",
            "OrderShipped",
        ),
    ),
    ConsumerGroup(
        "order_live_feed",
        ORDER_LIVE_FEED_GROUP,
        "order",
        "orders",
        (ORDERS,),
        ("OrderCreated", "OrderStatusChanged", "OrderCancelled", "OrderDelivered"),
    ),
    ConsumerGroup(
        "webhook_dispatcher",
        WEBHOOK_DISPATCHER_GROUP,
        "webhook",
        "webhook",
        (ORDERS,),
        ("OrderCreated", "OrderStatusChanged", "OrderCancelled", "OrderDelivered"),
    ),
    ConsumerGroup(
        "payment_processor",
        PAYMENT_PROCESSOR_GROUP,
        "payment",
        "payment",
        (ORDERS, INVENTORY),
        ("OrderValidated", "OrderCancelled", "OutOfStock"),
    ),
    ConsumerGroup(
        "inventory_manager",
        INVENTORY_MANAGER_GROUP,
        "inventory",
        "inventory",
        (PAYMENTS, ORDERS),
        ("PaymentProcessed", "OrderCancelled"),
    ),
    ConsumerGroup(
        "fulfillment",
        FULFILLMENT_GROUP,
        "fulfillment",
        "fulfillment",
        (ORDERS,),
        ("OrderReadyToShip", "OrderCancelled"),
    ),
)


@dataclass(frozen=True)
class Outbox:
    """A context whose state changes publish events through ``<schema>.outbox``."""

    context: str
    schema: str


OUTBOXES: tuple[Outbox, ...] = (
    Outbox("order", "orders"),
    Outbox("payment", "payment"),
    Outbox("inventory", "inventory"),
    Outbox("fulfillment", "fulfillment"),
)
OUTBOX_SCHEMAS: tuple[str, ...] = tuple(outbox.schema for outbox in OUTBOXES)

# The workers a process can host besides the consumer groups. The webhook sender is the
# webhook context's (it claims deliveries from Postgres, reads no topic); the process that
# hosts it connects as that context's role.
RELAY_WORKER = "relay"
RETENTION_WORKER = "retention"
WEBHOOK_SENDER_WORKER = "webhook_sender"
WEBHOOK_SENDER_CONTEXT = "webhook"
WORKERS: tuple[str, ...] = (
    RELAY_WORKER,
    *(group.worker for group in CONSUMER_GROUPS),
    RETENTION_WORKER,
    WEBHOOK_SENDER_WORKER,
)


def consumer_group(worker: str) -> ConsumerGroup:
    for group in CONSUMER_GROUPS:
        if group.worker == worker:
            return group
    raise KeyError(f"no consumer worker named {worker!r}")
