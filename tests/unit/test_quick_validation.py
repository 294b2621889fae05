"""The quick record check the codec runs before encoding: never laxer than fastavro's validate."""

from __future__ import annotations

import copy
import enum
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastavro import parse_schema
from fastavro.validation import validate

from services.platform.messaging.codec import EventCodec, EventValidationError
from services.platform.messaging.quick_validation import quick_validator
from tests.unit.test_codec import SAMPLES

PROBE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Probe",
    "namespace": "ordermesh.events.v1",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "ratio", "type": "double"},
        {"name": "raw", "type": "bytes"},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "other_kind", "type": ["null", "Kind"], "default": None},
        {"name": "next", "type": ["null", "Probe"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {
            "name": "more_tags",
            "type": ["null", {"type": "array", "items": "string"}],
            "default": None,
        },
        {"name": "counts", "type": {"type": "map", "values": "int"}, "default": {}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}
PROBE: dict[str, Any] = {
    "flag": True,
    "ratio": 0.5,
    "raw": b"\x00\x01",
    "digest": b"abcd",
    "kind": "A",
    "other_kind": "B",
    "next": {
        "flag": False,
        "ratio": 2,
        "raw": b"",
        "digest": b"wxyz",
        "kind": "B",
        "tags": [],
        "at": 0,
    },
    "tags": ["x", "y"],
    "more_tags": ["z"],
    "counts": {"a": 1},
    "at": datetime(2026, 1, 1, tzinfo=UTC),
}


class Level(enum.IntEnum):
    ONE = 1


ODD_VALUES: list[Any] = [
    None,
    True,
    "",
    "A",
    "abcd",
    b"abcd",
    bytearray(b"abcd"),
    0,
    -1,
    2**31,
    -(2**31) - 1,
    2**63,
    1.5,
    Level.ONE,
    [],
    ["x"],
    ("x",),
    {},
    {"a": 1},
    {1: "x"},
    ("null", None),
    datetime(2026, 1, 1),
    datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))),
]


def parsed(schema: Any) -> Any:
    return parse_schema(schema, named_schemas={})


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and index inside ``value``, outermost first."""
    children: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    for key, child in children:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def replaced(record: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(record)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


def removed(record: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    changed = copy.deepcopy(record)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return changed


def variants(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``record`` with each value in turn swapped for each odd value, or left out."""
    for path in paths(record):
        for value in ODD_VALUES:
            yield replaced(record, path, value)
        if isinstance(path[-1], str):
            yield removed(record, path)


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec.from_directory()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_event_passes_the_quick_check(codec: EventCodec, name: str) -> None:
    assert quick_validator(parsed(codec.schema(name)))(SAMPLES[name])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_quick_check_accepts_nothing_validate_refuses(codec: EventCodec, name: str) -> None:
    schema = parsed(codec.schema(name))
    quick = quick_validator(schema)
    for record in variants(SAMPLES[name]):
        if quick(record):
            assert validate(record, schema, raise_errors=False), record


def test_named_references_enums_fixed_and_recursion_are_checked_quickly() -> None:
    schema = parsed(PROBE_SCHEMA)
    quick = quick_validator(schema)
    assert validate(PROBE, schema, raise_errors=False)
    assert quick(PROBE)
    for record in variants(PROBE):
        if quick(record):
            assert validate(record, schema, raise_errors=False), record


def test_what_the_quick_check_does_not_model_is_left_to_validate() -> None:
    schema = parsed(
        {
            "type": "record",
            "name": "Dated",
            "fields": [{"name": "day", "type": {"type": "int", "logicalType": "date"}}],
        }
    )
    record = {"day": datetime(2026, 1, 1).date()}
    assert validate(record, schema, raise_errors=False)
    assert not quick_validator(schema)(record)


def test_a_value_only_validate_accepts_is_still_encoded(codec: EventCodec) -> None:
    record = {**SAMPLES["OrderDelivered"], "version": Level.ONE}
    assert codec.decode(codec.encode("OrderDelivered", record)).record["version"] == 1


def test_a_bool_for_an_int_is_refused_with_its_field(codec: EventCodec) -> None:
    record = copy.deepcopy(SAMPLES["OrderCreated"])
    record["items"][0]["quantity"] = True
    with pytest.raises(EventValidationError, match=r"OrderLine\.quantity.*True"):
        codec.encode("OrderCreated", record)
