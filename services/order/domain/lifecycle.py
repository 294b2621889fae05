"""How facts from the other services move an order along its lifecycle, and what the
order validator checks. Pure functions: the workers feed them and store what they return."""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from services.order.domain.model import TRANSITIONS, Order, OrderStatus
from services.order.domain.pricing import (
    MAX_LINES,
    MAX_QUANTITY,
    CatalogEntry,
    Rejection,
    catalog_problem,
)


@dataclass(frozen=True, slots=True)
class StatusFact:
    """What an incoming event says about an order, in domain terms."""

    target: OrderStatus
    reason: str = ""
    carrier: str = ""
    tracking_number: str = ""
    estimated_delivery: datetime | None = None


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


HAPPY_PATH = (
    OrderStatus.PENDING,
    OrderStatus.VALIDATED,
    OrderStatus.PAID,
    OrderStatus.FULFILLED,
    OrderStatus.SHIPPED,
    OrderStatus.DELIVERED,
)


def apply_fact(order: Order, fact: StatusFact, *, at: datetime) -> list[Order]:
    """The successive states the fact moves the order through; empty when it no longer
    applies (a redelivered event, or one that lost a race, such as a payment landing after
    the user cancelled: the other services compensate for those).

    Facts come from several topics, so they may arrive out of order: a payment can be seen
    before the validation it followed. Each step of the happy path implies the ones before
    it, so a fact further along moves the order through the skipped steps (each recorded
    with its own version), and the late fact of a skipped step then changes nothing."""
    if order.status in HAPPY_PATH and fact.target in HAPPY_PATH:
        here, there = HAPPY_PATH.index(order.status), HAPPY_PATH.index(fact.target)
        steps = HAPPY_PATH[here + 1 : there + 1]
    elif fact.target in TRANSITIONS[order.status]:
        steps = (fact.target,)
    else:
        steps = ()
    states: list[Order] = []
    current = order
    for step in steps:
        if step is fact.target:
            current = current.transition(step, reason=fact.reason, at=at)
            if fact.carrier or fact.tracking_number:
                current = replace(
                    current,
                    carrier=fact.carrier,
                    tracking_number=fact.tracking_number,
                    estimated_delivery=fact.estimated_delivery,
                )
        else:
            current = current.transition(step, reason="implied by a later event", at=at)
        states.append(current)
    return states


def validate(order: Order, catalog: Mapping[str, CatalogEntry]) -> Rejection | None:
    """Checks a new order against the catalog as it is now."""
    if not order.lines or len(order.lines) > MAX_LINES:
        return Rejection(f"an order has 1 to {MAX_LINES} items", "INVALID_LINES")
    for line in order.lines:
        entry = catalog.get(line.product_id)
        problem = catalog_problem(line.product_id, entry)
        if problem is not None:
            return problem
        assert entry is not None
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
