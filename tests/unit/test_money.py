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
