"""Translations between common domain values and their protobuf forms, shared by the
servicers. The ``set_*`` forms fill a field of a message being built in place, which spares
building a message and copying it into its parent (the read path converts every order)."""

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from ordermesh.common.v1 import common_pb2

from services.common.money import Money

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def money_to_proto(money: Money) -> common_pb2.Money:
    return common_pb2.Money(
        currency=money.currency, amount_minor=money.amount_minor, amount=money.format()
    )


def set_money(target: common_pb2.Money, money: Money) -> None:
    target.currency = money.currency
    target.amount_minor = money.amount_minor
    target.amount = money.format()


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    result = timestamp_pb2.Timestamp()
    set_timestamp(result, value)
    return result


def set_timestamp(target: timestamp_pb2.Timestamp, value: datetime) -> None:
    """``value`` (naive means UTC) exactly, to the microsecond, as Timestamp.FromDatetime
    gives it, without its round trip through a time tuple."""
    since = value - (_EPOCH if value.tzinfo is not None else _NAIVE_EPOCH)
    target.seconds = since.days * 86_400 + since.seconds
    target.nanos = since.microseconds * 1000
