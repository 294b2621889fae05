"""One function per inventory-manager command. Each runs inside the caller's transaction and
returns the event to publish (None: nothing to say, e.g. a repeated or overtaken command)."""

from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, replace
from datetime import datetime

from services.inventory.domain.commands import ReleaseStock, ReserveStock
from services.inventory.domain.events import OrderFulfilled, OutOfStock, StockReleased
from services.inventory.domain.ports import StockLedger
from services.inventory.domain.reservations import (
    Reservation,
    ReservationStatus,
    find_shortages,
    quantities_by_product,
)


async def reserve_stock(
    commands: Sequence[ReserveStock],
    ledger: StockLedger,
    *,
    now: datetime,
    new_id: Callable[[], str],
) -> list[OrderFulfilled | OutOfStock]:
    """Reserves every line of each paid order, or none of them; returns the events to
    publish, in the commands' order.

    The per-order locks of every order come first (sorted, so batches and the cancellation
    handler never wait crosswise), then which orders are cancelled or already decided (a
    cancelled order is left alone: the payment service refunds it on the cancellation; a
    decided one keeps its decision), then the stock rows of every product involved, locked
    in product_id order. The orders are decided in order against those levels, and the
    stock changes and reservations are written at once."""
    order_ids = [command.order_id for command in commands]
    await ledger.lock_orders(order_ids)
    settled = await ledger.settled_orders(order_ids)
    pending = [command for command in commands if command.order_id not in settled]
    if not pending:
        return []
    product_ids = sorted({line.product_id for command in pending for line in command.lines})
    available = await ledger.lock_stock(product_ids)
    decision = decide_reservations(
        pending, settled=settled, available=available, now=now, new_id=new_id
    )
    if decision.taken:
        await ledger.take_stock(decision.taken)
    await ledger.add_reservations(decision.reservations)
    return list(decision.events)


async def release_stock(
    command: ReleaseStock, ledger: StockLedger, *, now: datetime
) -> StockReleased | None:
    """Gives a cancelled order's reserved stock back, once. Without a reservation yet, the
    recorded cancellation stops a payment that arrives later from reserving."""
    await ledger.lock_order(command.order_id)
    await ledger.record_cancellation(command.order_id, command.reason, command.cancelled_at)
    reservation = await ledger.reservation(command.order_id)
    if reservation is None or not reservation.holds_stock:
        return None
    quantities = quantities_by_product(reservation.lines)
    await ledger.lock_stock(list(quantities))
    await ledger.return_stock(quantities)
    await ledger.mark_released(command.order_id, now)
    released = replace(reservation, status=ReservationStatus.RELEASED, updated_at=now)
    return StockReleased(released, command.reason, now)


@dataclass(frozen=True, slots=True)
class BatchDecision:
    """What a batch of paid orders decided: the reservations to store (one per order), the
    units to take out of stock per product, and the events to publish, in offset order."""

    reservations: tuple[Reservation, ...]
    taken: Mapping[str, int]
    events: tuple[OrderFulfilled | OutOfStock, ...]


def decide_reservations(
    commands: Sequence[ReserveStock],
    *,
    settled: Set[str],
    available: Mapping[str, int],
    now: datetime,
    new_id: Callable[[], str],
) -> BatchDecision:
    """Decides a batch of paid orders in offset order against the locked stock levels, as
    if they had been reserved one after the other.

    ``settled`` are the orders that must not reserve (cancelled, or already decided);
    ``available`` is the units each locked, sold product has (absent: none). A later command
    of an order decided earlier in the batch reserves nothing more."""
    levels = dict(available)
    decided = set(settled)
    taken: dict[str, int] = {}
    reservations: list[Reservation] = []
    events: list[OrderFulfilled | OutOfStock] = []
    for command in commands:
        if command.order_id in decided:
            continue
        requested = quantities_by_product(command.lines)
        decided.add(command.order_id)
        shortages = find_shortages(requested, levels)
        reservation = Reservation(
            reservation_id=new_id(),
            order_id=command.order_id,
            user_id=command.user_id,
            status=ReservationStatus.OUT_OF_STOCK if shortages else ReservationStatus.RESERVED,
            lines=command.lines,
            shortages=shortages,
            created_at=now,
            updated_at=now,
        )
        reservations.append(reservation)
        if shortages:
            events.append(
                OutOfStock(
                    order_id=command.order_id,
                    user_id=command.user_id,
                    payment_id=command.payment_id,
                    amount_minor=command.amount_minor,
                    currency=command.currency,
                    shortages=shortages,
                    occurred_at=now,
                )
            )
            continue
        for product_id, quantity in requested.items():
            levels[product_id] -= quantity
            taken[product_id] = taken.get(product_id, 0) + quantity
        events.append(OrderFulfilled(reservation, command.shipping_address))
    return BatchDecision(tuple(reservations), dict(sorted(taken.items())), tuple(events))
