from decimal import Decimal

import pytest

from services.common.errors import InvalidArgument
from services.common.money import Money, parse_decimal


def test_exact_arithmetic_and_formatting() -> None:
    total = Money(8999, "USD") * 3 + Money(1, "USD")
    assert total == Money(26998, "USD")
    assert total.format() == "269.98"
    assert Money(500, "JPY").format() == "500"


def test_decimals_convert_exactly_or_not_at_all() -> None:
    assert Money.from_decimal(Decimal("29.99"), "USD") == Money(2999, "USD")
    with pytest.raises(InvalidArgument, match="more than 2 decimal places"):
        Money.from_decimal(Decimal("29.999"), "USD")
    with pytest.raises(InvalidArgument, match="cannot mix"):
        _ = Money(1, "USD") + Money(1, "EUR")


@pytest.mark.parametrize("text", ["abc", "", "NaN", "Infinity"])
def test_parse_decimal_refuses_non_numbers(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_decimal(text, field="total_amount")


@pytest.mark.parametrize("currency", ["USD", "JPY"])
@pytest.mark.parametrize(
    "amount_minor", [0, 1, 9, 10, 99, 100, 101, 2999, 26998, -1, -99, -100, -2999, 10**20 + 7]
)
def test_format_is_the_exact_decimal(amount_minor: int, currency: str) -> None:
    money = Money(amount_minor, currency)
    digits = 2 if currency == "USD" else 0
    assert money.format() == f"{Decimal(amount_minor).scaleb(-digits):.{digits}f}"
    assert Money.from_decimal(Decimal(money.format()), currency) == money
