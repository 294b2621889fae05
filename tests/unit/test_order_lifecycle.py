from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.common.money import Money
from services.order.domain.lifecycle import StatusFact, apply_fact, validate
from services.order.domain.model import Address, Order, OrderLine, OrderStatus
from services.order.domain.pricing import CatalogEntry

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ORDER = Order(
    order_id="o-1",
    user_id="u-1",
    status=OrderStatus.PENDING,
    lines=(OrderLine("kb", "Keyboard", 2, Money(8999, "USD")),),
    shipping_address=Address("1 Main St", "Springfield", "IL", "62701", "US"),
    payment_method="tok_visa",
    created_at=NOW,
    updated_at=NOW,
)


def test_facts_move_the_order_one_step_each() -> None:
    (validated,) = apply_fact(ORDER, StatusFact(OrderStatus.VALIDATED), at=NOW)
    (paid,) = apply_fact(validated, StatusFact(OrderStatus.PAID), at=NOW)
    assert (paid.status, paid.version) == (OrderStatus.PAID, 3)


def test_a_fact_that_overtook_its_predecessor_implies_the_skipped_steps() -> None:
    states = apply_fact(ORDER, StatusFact(OrderStatus.FULFILLED), at=NOW)
    assert [s.status for s in states] == [
        OrderStatus.VALIDATED,
        OrderStatus.PAID,
        OrderStatus.FULFILLED,
    ]
    assert [s.version for s in states] == [2, 3, 4]
    assert states[0].status_reason == "implied by a later event"
    late = apply_fact(states[-1], StatusFact(OrderStatus.VALIDATED), at=NOW)
    assert late == []


def test_shipping_records_carrier_and_tracking_number() -> None:
    fulfilled = replace(ORDER, status=OrderStatus.FULFILLED, version=4)
    fact = StatusFact(OrderStatus.SHIPPED, "shipped with UPS", "UPS", "1Z999")
    (shipped,) = apply_fact(fulfilled, fact, at=NOW)
    assert (shipped.carrier, shipped.tracking_number) == ("UPS", "1Z999")


@pytest.mark.parametrize("status", [OrderStatus.CANCELLED, OrderStatus.FAILED])
def test_terminal_orders_ignore_late_facts(status: OrderStatus) -> None:
    done = replace(ORDER, status=status)
    for target in (OrderStatus.PAID, OrderStatus.FULFILLED, OrderStatus.FAILED):
        assert apply_fact(done, StatusFact(target), at=NOW) == []


def test_failures_exit_from_where_the_order_is() -> None:
    (failed,) = apply_fact(ORDER, StatusFact(OrderStatus.FAILED, "card declined"), at=NOW)
    assert (failed.status, failed.status_reason) == (OrderStatus.FAILED, "card declined")
    shipped = replace(ORDER, status=OrderStatus.SHIPPED)
    assert apply_fact(shipped, StatusFact(OrderStatus.CANCELLED), at=NOW) == []


def test_validation_checks_the_live_catalog() -> None:
    entry = CatalogEntry("kb", "Keyboard", Money(8999, "USD"), True)
    assert validate(ORDER, {"kb": entry}) is None
    assert validate(ORDER, {}).code == "UNKNOWN_PRODUCT"  # type: ignore[union-attr]
    retired = replace(entry, active=False)
    assert validate(ORDER, {"kb": retired}).code == "INACTIVE_PRODUCT"  # type: ignore[union-attr]
    dearer = replace(entry, unit_price=Money(9999, "USD"))
    rejection = validate(ORDER, {"kb": dearer})
    assert rejection is not None and rejection.code == "PRICE_CHANGED"
    assert "89.99 to 99.99" in rejection.reason
