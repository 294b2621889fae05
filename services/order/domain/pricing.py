"""Checks a CreateOrder against the catalog and prices it. Prices come from the catalog,
never from the client: a client-sent price or total is only compared, and a mismatch is
refused rather than charging a price the client never saw."""

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from services.common.errors import InvalidArgument, PermissionDenied
from services.common.money import Money
from services.order.domain.commands import CreateOrder
from services.order.domain.model import OrderLine, order_total

MAX_LINES = 50
MAX_QUANTITY = 100
MAX_PAYMENT_METHOD_LENGTH = 64
MAX_ADDRESS_FIELD_LENGTH = 200


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    product_id: str
    name: str
    unit_price: Money
    active: bool


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an order cannot go on: a sentence for people and a stable code for programs."""

    reason: str
    code: str


def catalog_problem(product_id: str, entry: CatalogEntry | None) -> Rejection | None:
    """Why ``product_id`` cannot be ordered with this catalog entry, or None if it can. The
    one catalog check: CreateOrder refuses with it, the validator rejects with it."""
    if entry is None:
        return Rejection(f"unknown product {product_id!r}", "UNKNOWN_PRODUCT")
    if not entry.active:
        return Rejection(f"product {product_id!r} is no longer sold", "INACTIVE_PRODUCT")
    return None


def check_request(command: CreateOrder) -> None:
    """Everything that can be checked without the catalog."""
    if command.claimed_user_id and command.claimed_user_id != command.principal.user_id:
        raise PermissionDenied("user_id must be the caller's own id")
    if not command.lines:
        raise InvalidArgument("an order needs at least one item", field="items")
    if len(command.lines) > MAX_LINES:
        raise InvalidArgument(f"an order has at most {MAX_LINES} items", field="items")
    seen: set[str] = set()
    for index, line in enumerate(command.lines):
        where = f"items[{index}]"
        if not line.product_id:
            raise InvalidArgument(f"{where}.product_id is required", field=f"{where}.product_id")
        if line.product_id in seen:
            raise InvalidArgument(
                f"{where}: product {line.product_id!r} appears more than once; "
                "send one line with the total quantity",
                field=f"{where}.product_id",
            )
        seen.add(line.product_id)
        if not 1 <= line.quantity <= MAX_QUANTITY:
            raise InvalidArgument(
                f"{where}.quantity must be between 1 and {MAX_QUANTITY}, got {line.quantity}",
                field=f"{where}.quantity",
            )
    method = command.payment_method.strip()
    if not method:
        raise InvalidArgument("payment_method is required", field="payment_method")
    if len(method) > MAX_PAYMENT_METHOD_LENGTH:
        raise InvalidArgument("payment_method is too long", field="payment_method")
    address = command.shipping_address
    for name in ("street", "city", "zip", "country"):
        if not getattr(address, name).strip():
            raise InvalidArgument(
                f"shipping_address.{name} is required", field=f"shipping_address.{name}"
            )
    for name in ("street", "city", "state", "zip", "country"):
        if len(getattr(address, name)) > MAX_ADDRESS_FIELD_LENGTH:
            raise InvalidArgument(
                f"shipping_address.{name} is too long", field=f"shipping_address.{name}"
            )


def price_lines(command: CreateOrder, catalog: Mapping[str, CatalogEntry]) -> tuple[OrderLine, ...]:
    lines = []
    for index, requested in enumerate(command.lines):
        where = f"items[{index}]"
        entry = catalog.get(requested.product_id)
        problem = catalog_problem(requested.product_id, entry)
        if problem is not None:
            raise InvalidArgument(f"{where}: {problem.reason}", field=f"{where}.product_id")
        assert entry is not None
        if requested.expected_unit_price is not None:
            _check_expected(
                requested.expected_unit_price,
                entry.unit_price,
                what=f"{where}.unit_price",
                subject=f"the catalog price of {requested.product_id!r}",
            )
        lines.append(OrderLine(entry.product_id, entry.name, requested.quantity, entry.unit_price))
    currencies = {line.unit_price.currency for line in lines}
    if len(currencies) > 1:
        raise InvalidArgument("all items of an order must be priced in one currency")
    if command.expected_total is not None:
        total = order_total(lines)
        _check_expected(
            command.expected_total, total, what="total_amount", subject="the order total"
        )
    return tuple(lines)


def _check_expected(expected: Decimal, actual: Money, *, what: str, subject: str) -> None:
    if expected != actual.to_decimal():
        raise InvalidArgument(
            f"{what} {expected} does not match {subject}, {actual.format()} {actual.currency}; "
            "refresh the catalog and try again",
            field=what,
        )
