"""How facts from the other services move an order along its lifecycle, and what the
order validator checks. Pure functions: the workers feed them and store what they return."""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from services.order.domain.model import TRANSITIONS, Order, OrderStatus
from services.order.domain.pricing import MAX_LINES, MAX_QUANTITY, CatalogEntry


@dataclass(frozen=True, slots=True)
class StatusFact:
    """What an incoming event says about an order, in domain terms."""

    target: OrderStatus
    reason: str = ""
    carrier: str = ""
    tracking_number: str = ""


# Event name → the status it moves an order to. Events not listed (refunds, stock
# releases) are bookkeeping of other services and leave the order's status alone.
STATUS_BY_EVENT: Mapping[str, OrderStatus] = {
    "OrderValidated": OrderStatus.VALIDATED,
    "OrderRejected": OrderStatus.FAILED,
    "PaymentProcessed": OrderStatus.PAID,
    "PaymentFailed": OrderStatus.FAILED,
    "OrderFulfilled": OrderStatus.FULFILLED,
    "OutOfStock": OrderStatus.CANCELLED,
    "OrderShipped": OrderStatus.SHIPPED,
}


def apply_fact(order: Order, fact: StatusFact, *, at: datetime) -> Order | None:
    """The order after the fact, or None when the fact no longer applies: a redelivered
    event, or one that lost a race (a payment that lands after the user cancelled). The
    other services compensate for those; the order's state never moves backwards."""
    if fact.target not in TRANSITIONS[order.status]:
        return None
    moved = order.transition(fact.target, reason=fact.reason, at=at)
    if fact.carrier or fact.tracking_number:
        moved = replace(moved, carrier=fact.carrier, tracking_number=fact.tracking_number)
    return moved


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    code: str


def validate(order: Order, catalog: Mapping[str, CatalogEntry]) -> Rejection | None:
    """Checks a new order against the catalog as it is now."""
    if not order.lines or len(order.lines) > MAX_LINES:
        return Rejection(f"an order has 1 to {MAX_LINES} items", "INVALID_LINES")
    for line in order.lines:
        entry = catalog.get(line.product_id)
        if entry is None:
            return Rejection(f"product {line.product_id!r} does not exist", "UNKNOWN_PRODUCT")
        if not entry.active:
            return Rejection(f"product {line.product_id!r} is no longer sold", "INACTIVE_PRODUCT")
        if not 1 <= line.quantity <= MAX_QUANTITY:
            return Rejection(
                f"quantity of {line.product_id!r} must be between 1 and {MAX_QUANTITY}",
                "INVALID_QUANTITY",
            )
        if entry.unit_price != line.unit_price:
            return Rejection(
                f"the price of {line.product_id!r} changed from {line.unit_price.format()} to "
                f"{entry.unit_price.format()} {entry.unit_price.currency}",
                "PRICE_CHANGED",
            )
    return None
