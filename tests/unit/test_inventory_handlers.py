"""The inventory manager's decisions, against an in-memory stock ledger that keeps the
table's promises (stock never negative, one decision per order)."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from services.common.errors import InvalidArgument
from services.inventory import handlers
from services.inventory.domain.commands import ReleaseStock, ReserveStock
from services.inventory.domain.events import OrderFulfilled, OutOfStock, StockReleased
from services.inventory.domain.reservations import (
    Reservation,
    ReservationStatus,
    Shortage,
    StockLine,
    find_shortages,
    quantities_by_product,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}


@dataclass
class FakeStockLedger:
    stock: dict[str, int]
    withdrawn: set[str] = field(default_factory=set)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    cancelled: dict[str, str] = field(default_factory=dict)
    locked_orders: list[str] = field(default_factory=list)
    locked_products: list[list[str]] = field(default_factory=list)

    async def lock_order(self, order_id: str) -> None:
        self.locked_orders.append(order_id)

    async def lock_orders(self, order_ids: Iterable[str]) -> None:
        self.locked_orders.extend(sorted(set(order_ids)))

    async def settled_orders(self, order_ids: Iterable[str]) -> set[str]:
        return {o for o in order_ids if o in self.cancelled or o in self.reservations}

    async def record_cancellation(self, order_id: str, reason: str, at: datetime) -> None:
        self.cancelled.setdefault(order_id, reason)

    async def reservation(self, order_id: str) -> Reservation | None:
        return self.reservations.get(order_id)

    async def lock_stock(self, product_ids: Sequence[str]) -> Mapping[str, int]:
        self.locked_products.append(list(product_ids))
        return {
            pid: self.stock[pid]
            for pid in product_ids
            if pid in self.stock and pid not in self.withdrawn
        }

    async def take_stock(self, quantities: Mapping[str, int]) -> None:
        for pid, quantity in quantities.items():
            assert self.stock[pid] >= quantity, "stock would go negative"
            self.stock[pid] -= quantity

    async def return_stock(self, quantities: Mapping[str, int]) -> None:
        for pid, quantity in quantities.items():
            self.stock[pid] += quantity

    async def add_reservations(self, reservations: Iterable[Reservation]) -> None:
        for reservation in reservations:
            assert reservation.order_id not in self.reservations, "order_id is unique"
            self.reservations[reservation.order_id] = reservation

    async def mark_released(self, order_id: str, at: datetime) -> None:
        self.reservations[order_id] = replace(
            self.reservations[order_id], status=ReservationStatus.RELEASED, updated_at=at
        )


def ids() -> Callable[[], str]:
    numbers = count(1)
    return lambda: f"reservation-{next(numbers)}"


def reserve(order_id: str, *lines: tuple[str, int]) -> ReserveStock:
    return ReserveStock(
        order_id=order_id,
        user_id="user-1",
        payment_id=f"payment-of-{order_id}",
        amount_minor=12345,
        currency="USD",
        lines=tuple(StockLine(pid, quantity, 1000) for pid, quantity in lines),
        shipping_address=ADDRESS,
    )


async def reserve_one(
    command: ReserveStock,
    ledger: FakeStockLedger,
    new_id: Callable[[], str],
    now: datetime = NOW,
) -> OrderFulfilled | OutOfStock | None:
    events = await handlers.reserve_stock([command], ledger, now=now, new_id=new_id)
    assert len(events) <= 1
    return events[0] if events else None


def cancel(order_id: str) -> ReleaseStock:
    return ReleaseStock(order_id, "user-1", "changed my mind", NOW)


async def test_a_paid_order_reserves_every_line() -> None:
    ledger = FakeStockLedger({"kb": 5, "mouse": 2})
    command = reserve("o1", ("mouse", 2), ("kb", 1))
    event = await reserve_one(command, ledger, ids())
    assert isinstance(event, OrderFulfilled)
    assert event.shipping_address == ADDRESS
    reservation = event.reservation
    assert (reservation.reservation_id, reservation.order_id, reservation.status) == (
        "reservation-1",
        "o1",
        ReservationStatus.RESERVED,
    )
    assert reservation.lines == command.lines
    assert ledger.stock == {"kb": 4, "mouse": 0}
    assert ledger.reservations["o1"] == reservation
    assert ledger.locked_orders == ["o1"]
    assert ledger.locked_products == [["kb", "mouse"]], "rows are locked in product_id order"


async def test_one_short_line_reserves_nothing_and_names_every_shortage() -> None:
    ledger = FakeStockLedger({"kb": 5, "mouse": 1, "hub": 0})
    command = reserve("o1", ("kb", 2), ("mouse", 3), ("hub", 1), ("gone", 1))
    event = await reserve_one(command, ledger, ids())
    assert event == OutOfStock(
        order_id="o1",
        user_id="user-1",
        payment_id="payment-of-o1",
        amount_minor=12345,
        currency="USD",
        shortages=(Shortage("gone", 1, 0), Shortage("hub", 1, 0), Shortage("mouse", 3, 1)),
        occurred_at=NOW,
    )
    assert ledger.stock == {"kb": 5, "mouse": 1, "hub": 0}
    assert ledger.reservations["o1"].status is ReservationStatus.OUT_OF_STOCK
    assert not ledger.reservations["o1"].holds_stock


async def test_a_withdrawn_product_counts_as_out_of_stock() -> None:
    ledger = FakeStockLedger({"webcam": 10}, withdrawn={"webcam"})
    event = await reserve_one(reserve("o1", ("webcam", 1)), ledger, ids())
    assert isinstance(event, OutOfStock)
    assert event.shortages == (Shortage("webcam", 1, 0),)
    assert ledger.stock == {"webcam": 10}


async def test_repeated_lines_of_one_product_are_reserved_together() -> None:
    ledger = FakeStockLedger({"kb": 3})
    short = await reserve_one(reserve("o1", ("kb", 2), ("kb", 2)), ledger, ids())
    assert isinstance(short, OutOfStock)
    assert short.shortages == (Shortage("kb", 4, 3),)
    fits = await reserve_one(reserve("o2", ("kb", 2), ("kb", 1)), ledger, ids())
    assert isinstance(fits, OrderFulfilled)
    assert ledger.stock == {"kb": 0}


async def test_a_second_payment_of_one_order_keeps_the_first_decision() -> None:
    ledger = FakeStockLedger({"kb": 5})
    new_id = ids()
    first = await reserve_one(reserve("o1", ("kb", 2)), ledger, new_id)
    assert isinstance(first, OrderFulfilled)
    again = await reserve_one(reserve("o1", ("kb", 2)), ledger, new_id)
    assert again is None
    assert ledger.stock == {"kb": 3}


async def test_out_of_stock_is_a_decision_too() -> None:
    ledger = FakeStockLedger({"kb": 1})
    first = await reserve_one(reserve("o1", ("kb", 2)), ledger, ids())
    assert isinstance(first, OutOfStock)
    ledger.stock["kb"] = 10
    again = await reserve_one(reserve("o1", ("kb", 2)), ledger, ids())
    assert again is None
    assert ledger.stock == {"kb": 10}, "a refunded order never reserves later"


async def test_cancelling_a_reserved_order_gives_its_stock_back_once() -> None:
    ledger = FakeStockLedger({"kb": 5, "mouse": 5})
    await reserve_one(reserve("o1", ("mouse", 1), ("kb", 2)), ledger, ids())
    assert ledger.stock == {"kb": 3, "mouse": 4}
    released = await handlers.release_stock(cancel("o1"), ledger, now=LATER)
    assert isinstance(released, StockReleased)
    assert released.reason == "changed my mind"
    assert released.released_at == LATER
    assert released.reservation.status is ReservationStatus.RELEASED
    assert released.reservation.reservation_id == "reservation-1"
    assert released.reservation.updated_at == LATER
    assert ledger.stock == {"kb": 5, "mouse": 5}
    assert ledger.locked_products[-1] == ["kb", "mouse"]
    assert await handlers.release_stock(cancel("o1"), ledger, now=LATER) is None
    assert ledger.stock == {"kb": 5, "mouse": 5}


async def test_a_cancellation_before_the_payment_stops_the_reservation() -> None:
    ledger = FakeStockLedger({"kb": 5})
    assert await handlers.release_stock(cancel("o1"), ledger, now=NOW) is None
    assert ledger.cancelled == {"o1": "changed my mind"}
    late = await reserve_one(reserve("o1", ("kb", 1)), ledger, ids(), LATER)
    assert late is None
    assert ledger.stock == {"kb": 5}
    assert ledger.reservations == {}
    assert ledger.locked_orders == ["o1", "o1"]


async def test_cancelling_an_out_of_stock_order_returns_nothing() -> None:
    ledger = FakeStockLedger({"kb": 0})
    await reserve_one(reserve("o1", ("kb", 1)), ledger, ids())
    assert await handlers.release_stock(cancel("o1"), ledger, now=LATER) is None
    assert ledger.stock == {"kb": 0}


async def test_a_line_without_units_is_refused_before_stock_is_touched() -> None:
    ledger = FakeStockLedger({"kb": 5})
    with pytest.raises(InvalidArgument, match="at least 1"):
        await reserve_one(reserve("o1", ("kb", -3)), ledger, ids())
    assert ledger.stock == {"kb": 5}
    assert ledger.reservations == {}


def test_quantities_are_summed_and_sorted_by_product() -> None:
    lines = [StockLine("b", 1, 5), StockLine("a", 2, 5), StockLine("b", 3, 5)]
    assert list(quantities_by_product(lines).items()) == [("a", 2), ("b", 4)]


def test_shortages_compare_with_what_is_available() -> None:
    assert find_shortages({"a": 2, "b": 1}, {"a": 2, "b": 1}) == ()
    assert find_shortages({"a": 3, "b": 1}, {"a": 2}) == (Shortage("a", 3, 2), Shortage("b", 1, 0))


def test_a_batch_is_decided_in_offset_order_against_the_locked_levels() -> None:
    decision = handlers.decide_reservations(
        [
            reserve("o1", ("kb", 2), ("mouse", 1)),
            reserve("o2", ("kb", 1), ("mouse", 1)),
            reserve("o3", ("kb", 1)),
            reserve("o4", ("kb", 2)),
            reserve("o5", ("kb", 2)),
            reserve("o1", ("kb", 2), ("mouse", 1)),
        ],
        settled={"o3"},
        available={"kb": 5, "mouse": 1},
        now=NOW,
        new_id=ids(),
    )
    assert [r.order_id for r in decision.reservations] == ["o1", "o2", "o4", "o5"]
    assert [r.status for r in decision.reservations] == [
        ReservationStatus.RESERVED,
        ReservationStatus.OUT_OF_STOCK,
        ReservationStatus.RESERVED,
        ReservationStatus.OUT_OF_STOCK,
    ]
    assert decision.taken == {"kb": 4, "mouse": 1}
    assert [type(e) for e in decision.events] == [
        OrderFulfilled,
        OutOfStock,
        OrderFulfilled,
        OutOfStock,
    ]
    short = decision.events[1]
    assert isinstance(short, OutOfStock)
    assert short.shortages == (Shortage("mouse", 1, 0),)
    last = decision.events[3]
    assert isinstance(last, OutOfStock)
    assert last.shortages == (Shortage("kb", 2, 1),)
    fulfilled = decision.events[0]
    assert isinstance(fulfilled, OrderFulfilled)
    assert fulfilled.reservation is decision.reservations[0]


def test_a_batch_of_settled_orders_decides_nothing() -> None:
    decision = handlers.decide_reservations(
        [reserve("o1", ("kb", 1))], settled={"o1"}, available={"kb": 5}, now=NOW, new_id=ids()
    )
    assert decision == handlers.BatchDecision((), {}, ())


def test_a_batch_line_without_units_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        handlers.decide_reservations(
            [reserve("o1", ("kb", 1)), reserve("o2", ("kb", 0))],
            settled=set(),
            available={"kb": 5},
            now=NOW,
            new_id=ids(),
        )
