"""Exact money: integer minor units plus an ISO 4217 currency code."""

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from services.common.errors import InvalidArgument

_MINOR_DIGITS = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0}


def minor_digits(currency: str) -> int:
    try:
        return _MINOR_DIGITS[currency]
    except KeyError:
        raise InvalidArgument(f"unsupported currency {currency!r}") from None


@dataclass(frozen=True, slots=True, order=True)
class Money:
    amount_minor: int
    currency: str

    def __add__(self, other: "Money") -> "Money":
        self._same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __mul__(self, factor: int) -> "Money":
        return Money(self.amount_minor * factor, self.currency)

    def _same_currency(self, other: "Money") -> None:
        if other.currency != self.currency:
            raise InvalidArgument(f"cannot mix {self.currency} and {other.currency}")

    @classmethod
    def zero(cls, currency: str) -> "Money":
        return cls(0, currency)

    @classmethod
    def from_decimal(cls, value: Decimal, currency: str, *, field: str = "amount") -> "Money":
        digits = minor_digits(currency)
        scaled = value.scaleb(digits)
        if scaled != scaled.to_integral_value():
            raise InvalidArgument(
                f"{field} {value} has more than {digits} decimal places for {currency}",
                field=field,
            )
        return cls(int(scaled), currency)

    def to_decimal(self) -> Decimal:
        return Decimal(self.amount_minor).scaleb(-minor_digits(self.currency))

    def format(self) -> str:
        """The exact decimal string, e.g. "29.99" (integer arithmetic: this runs for every
        amount of every order a service returns)."""
        digits = minor_digits(self.currency)
        if not digits:
            return str(self.amount_minor)
        whole, fraction = divmod(abs(self.amount_minor), 10**digits)
        sign = "-" if self.amount_minor < 0 else ""
        return f"{sign}{whole}.{fraction:0{digits}d}"


def parse_decimal(text: str, *, field: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidArgument(
            f"{field} must be a decimal number, got {text!r}", field=field
        ) from None
    if not value.is_finite():
        raise InvalidArgument(f"{field} must be a finite number", field=field)
    return value
