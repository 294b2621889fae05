"""Translations between common domain values and their protobuf forms, shared by the
servicers."""

from datetime import datetime

from google.protobuf import timestamp_pb2
from ordermesh.common.v1 import common_pb2

from services.common.money import Money


def money_to_proto(money: Money) -> common_pb2.Money:
    return common_pb2.Money(
        currency=money.currency, amount_minor=money.amount_minor, amount=money.format()
    )


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result
