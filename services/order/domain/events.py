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


@dataclass(frozen=True, slots=True)
class OrderValidated:
    """The order passed validation against the catalog as it was at ``at``."""

    order: Order
    at: datetime


@dataclass(frozen=True, slots=True)
class OrderRejected:
    order: Order
    reason: str
    code: str
    at: datetime


@dataclass(frozen=True, slots=True)
class OrderReleased:
    """The order reached FULFILLED and is handed to the warehouse (OrderReadyToShip): from
    now on it can no longer be cancelled."""

    order: Order


Event = (
    OrderCreated
    | OrderCancelled
    | OrderStatusChanged
    | OrderValidated
    | OrderRejected
    | OrderReleased
)
