"""Facts the order service publishes (through its outbox) about orders."""

from dataclasses import dataclass
from datetime import datetime

from services.order.domain.model import Order, OrderStatus


@dataclass(frozen=True, slots=True)
class OrderCreated:
    order: Order


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    order: Order
    previous_status: OrderStatus
    reason: str


@dataclass(frozen=True, slots=True)
class OrderStatusChanged:
    order: Order
    previous_status: OrderStatus
    reason: str
    occurred_at: datetime


Event = OrderCreated | OrderCancelled | OrderStatusChanged
