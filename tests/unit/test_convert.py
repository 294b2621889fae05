"""The shared domain ⇄ protobuf translations (services/platform/convert.py)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2
from ordermesh.common.v1 import common_pb2

from services.common.money import Money
from services.platform.convert import money_to_proto, set_money, set_timestamp, timestamp


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 1, 5, 55, 40, 51115, tzinfo=UTC),
        datetime(2026, 12, 1, 7, 55, 40, 999999, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 12, 1, 5, 55, 40, 1),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
    ],
)
def test_timestamps_are_what_from_datetime_gives(value: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value)
    built = timestamp_pb2.Timestamp()
    set_timestamp(built, value)
    assert (built.seconds, built.nanos) == (expected.seconds, expected.nanos)
    assert timestamp(value) == expected


def test_no_timestamp_for_none() -> None:
    assert timestamp(None) is None


def test_money_in_place_is_money_to_proto() -> None:
    money = Money(-2999, "USD")
    built = common_pb2.Money()
    set_money(built, money)
    assert built == money_to_proto(money)
    assert built.amount == "-29.99"
