"""The Avro single-object codec and its CloudEvents envelope."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.platform.messaging.codec import (
    CONTENT_TYPE,
    SCHEMA_DIR,
    SINGLE_OBJECT_MAGIC,
    EnvelopeError,
    EventCodec,
    EventValidationError,
    IncompatibleSchemaError,
    MalformedPayloadError,
    NotSingleObjectError,
    SchemaError,
    SchemaVersion,
    UnknownEventTypeError,
    UnknownSchemaError,
    canonical_form,
    cloudevent_headers,
    crc64_avro,
    header_map,
    kafka_headers,
    load_schema_versions,
    schema_fingerprint,
)
from services.platform.messaging.registry import TOPIC_BY_EVENT

AT = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
ORDER_ID = "5f0c6a36-8d4a-4a59-a5a4-9c1c3a2a7d10"
LINES = [
    {"product_id": "sku-keyboard", "quantity": 1, "unit_price_minor": 8999},
    {"product_id": "sku-mouse", "quantity": 2, "unit_price_minor": 2450},
]
ADDRESS = {
    "street": "221B Baker Street",
    "city": "London",
    "state": "Greater London",
    "zip": "NW1 6XE",
    "country": "GB",
}
OWNER = {"order_id": ORDER_ID, "user_id": "user-42"}

SAMPLES: dict[str, dict[str, Any]] = {
    "OrderCreated": {
        **OWNER,
        "items": LINES,
        "total_minor": 13899,
        "currency": "GBP",
        "payment_method": "credit_card",
        "shipping_address": ADDRESS,
        "created_at": AT,
        "version": 1,
        "metadata": {"channel": "web"},
    },
    "OrderValidated": {
        **OWNER,
        "items": LINES,
        "total_minor": 13899,
        "currency": "GBP",
        "payment_method": "credit_card",
        "shipping_address": ADDRESS,
        "validated_at": AT,
        "version": 2,
    },
    "OrderReadyToShip": {
        **OWNER,
        "items": LINES,
        "shipping_address": ADDRESS,
        "released_at": AT,
        "version": 4,
    },
    "OrderRejected": {
        **OWNER,
        "reason": "unit price of sku-mouse does not match the catalog",
        "reason_code": "PRICE_MISMATCH",
        "rejected_at": AT,
        "version": 2,
    },
    "PaymentProcessed": {
        **OWNER,
        "payment_id": "pay-1",
        "amount_minor": 13899,
        "currency": "GBP",
        "payment_method": "credit_card",
        "items": LINES,
        "shipping_address": ADDRESS,
        "processed_at": AT,
    },
    "PaymentFailed": {
        **OWNER,
        "payment_id": None,
        "amount_minor": 13899,
        "currency": "GBP",
        "reason": "card declined",
        "reason_code": "CARD_DECLINED",
        "failed_at": AT,
    },
    "PaymentRefunded": {
        **OWNER,
        "payment_id": "pay-1",
        "refund_id": "ref-1",
        "amount_minor": 13899,
        "currency": "GBP",
        "reason": "out of stock",
        "refunded_at": AT,
    },
    "OrderFulfilled": {
        **OWNER,
        "reservation_id": "res-1",
        "items": LINES,
        "shipping_address": ADDRESS,
        "reserved_at": AT,
    },
    "OutOfStock": {
        **OWNER,
        "payment_id": "pay-1",
        "amount_minor": 13899,
        "currency": "GBP",
        "shortages": [{"product_id": "sku-mouse", "requested": 2, "available": 1}],
        "occurred_at": AT,
    },
    "StockReleased": {
        **OWNER,
        "reservation_id": "res-1",
        "items": LINES,
        "reason": "order cancelled",
        "released_at": AT,
    },
    "OrderShipped": {
        **OWNER,
        "shipment_id": "shp-1",
        "carrier": "DHL",
        "tracking_number": "JD014600006281234567",
        "estimated_delivery": AT + timedelta(days=3),
        "shipped_at": AT,
    },
    "OrderDelivered": {**OWNER, "delivered_at": AT, "version": 6},
    "OrderCancelled": {
        **OWNER,
        "reason": "customer request",
        "previous_status": "PAID",
        "cancelled_by": "user-42",
        "cancelled_at": AT,
        "version": 4,
    },
    "OrderStatusChanged": {
        **OWNER,
        "status": "SHIPPED",
        "previous_status": "FULFILLED",
        "reason": None,
        "details": {"carrier": "DHL", "tracking_number": "JD014600006281234567"},
        "occurred_at": AT,
        "version": 5,
    },
}


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec.from_directory(SCHEMA_DIR)


def schema_file(name: str) -> dict[str, Any]:
    """The newest released version of an event's schema, the one producers write."""
    return load_schema_versions(SCHEMA_DIR)[name][-1].schema


def add_schema_version(directory: Path, schema: dict[str, Any]) -> Path:
    """Write ``schema`` as the next version of its event in ``directory``; returns the file."""
    folder = directory / str(schema["name"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"v{len(list(folder.glob('v*.avsc'))) + 1}.avsc"
    path.write_text(json.dumps(schema, indent=2) + "\n")
    return path


def test_every_schema_has_a_sample_and_a_topic(codec: EventCodec) -> None:
    assert set(SAMPLES) == codec.event_names
    assert set(TOPIC_BY_EVENT) == codec.event_names


@pytest.mark.parametrize(
    "version",
    [version for versions in load_schema_versions(SCHEMA_DIR).values() for version in versions],
    ids=lambda version: f"{version.event_name}/v{version.number}",
)
def test_schema_files_document_every_field_and_default_every_optional_one(
    version: SchemaVersion,
) -> None:
    schema = version.schema
    where = f"{version.event_name} v{version.number}"
    assert schema["namespace"] == "ordermesh.events.v1"
    assert schema["doc"]
    for field in schema["fields"]:
        assert field.get("doc"), f"{where}: {field['name']} has no doc"
        if isinstance(field["type"], list) and "null" in field["type"]:
            assert field.get("default", "missing") is None, f"{where}: {field['name']}"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_event_round_trips(codec: EventCodec, name: str) -> None:
    decoded = codec.decode(codec.encode(name, SAMPLES[name]))
    assert decoded.name == name
    assert decoded.record == SAMPLES[name]


def test_defaults_are_filled_in_on_encode(codec: EventCodec) -> None:
    record = {k: v for k, v in SAMPLES["OrderCreated"].items() if k != "metadata"}
    assert codec.decode(codec.encode("OrderCreated", record)).record["metadata"] == {}


def test_message_starts_with_single_object_header(codec: EventCodec) -> None:
    encoded = codec.encode("OrderDelivered", SAMPLES["OrderDelivered"])
    assert encoded[:2] == SINGLE_OBJECT_MAGIC == b"\xc3\x01"
    expected = crc64_avro(canonical_form(schema_file("OrderDelivered")).encode())
    assert encoded[2:10] == expected == codec.fingerprint("OrderDelivered")


def test_fingerprints_match_the_avro_reference_values() -> None:
    assert crc64_avro(b"") == (0xC15D213AA4D7A795).to_bytes(8, "little")
    assert schema_fingerprint("null") == (7195948357588979594).to_bytes(8, "little")
    assert schema_fingerprint("int") == bytes.fromhex("8f5c393f1ad57572")


def test_canonical_form_ignores_docs_defaults_and_logical_types() -> None:
    documented = {
        "type": "record",
        "name": "Tick",
        "namespace": "ordermesh.events.v1",
        "doc": "d",
        "fields": [
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}, "doc": "x"}
        ],
    }
    assert canonical_form(documented) == (
        '{"name":"ordermesh.events.v1.Tick","type":"record","fields":[{"name":"at","type":"long"}]}'
    )


def older_order_created() -> dict[str, Any]:
    """OrderCreated as it might have been before ``metadata`` was added."""
    schema = copy.deepcopy(schema_file("OrderCreated"))
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "metadata"]
    return schema


def test_a_codec_from_a_directory_decodes_every_version_into_the_newest(tmp_path: Path) -> None:
    older, newer = older_order_created(), schema_file("OrderCreated")
    add_schema_version(tmp_path, older)
    add_schema_version(tmp_path, newer)
    codec = EventCodec.from_directory(tmp_path)
    record = {k: v for k, v in SAMPLES["OrderCreated"].items() if k != "metadata"}
    old_bytes = EventCodec([older]).encode("OrderCreated", record)

    decoded = codec.decode(old_bytes)

    assert decoded.record == {**record, "metadata": {}}
    assert decoded.writer_fingerprint == old_bytes[2:10] == schema_fingerprint(older)
    assert codec.fingerprint("OrderCreated") == schema_fingerprint(newer)
    new_bytes = codec.encode("OrderCreated", SAMPLES["OrderCreated"])
    assert new_bytes[2:10] == schema_fingerprint(newer)
    assert codec.decode(new_bytes).record == SAMPLES["OrderCreated"]


def test_a_version_that_was_never_released_is_still_unknown(tmp_path: Path) -> None:
    add_schema_version(tmp_path, older_order_created())
    add_schema_version(tmp_path, schema_file("OrderCreated"))
    unreleased = copy.deepcopy(schema_file("OrderCreated"))
    unreleased["fields"].append(
        {"name": "coupon", "type": ["null", "string"], "default": None, "doc": "Never released."}
    )
    message = EventCodec([unreleased]).encode("OrderCreated", SAMPLES["OrderCreated"])
    with pytest.raises(UnknownSchemaError, match=schema_fingerprint(unreleased).hex()):
        EventCodec.from_directory(tmp_path).decode(message)


def test_a_registered_newer_writer_version_decodes_into_an_older_reader() -> None:
    older, newer = older_order_created(), schema_file("OrderCreated")
    reader = EventCodec([older])
    new_bytes = EventCodec([newer]).encode("OrderCreated", SAMPLES["OrderCreated"])
    with pytest.raises(UnknownSchemaError):
        reader.decode(new_bytes)

    fingerprint = reader.register_writer_schema(newer)

    assert new_bytes[2:10] == fingerprint != reader.fingerprint("OrderCreated")
    decoded = reader.decode(new_bytes)
    assert decoded.record == {k: v for k, v in SAMPLES["OrderCreated"].items() if k != "metadata"}
    assert decoded.writer_fingerprint == fingerprint


def test_registering_an_unreadable_writer_schema_is_refused(codec: EventCodec) -> None:
    schema = copy.deepcopy(schema_file("OrderDelivered"))
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "version"]
    with pytest.raises(IncompatibleSchemaError, match="version: added without a default"):
        EventCodec.from_directory(SCHEMA_DIR).register_writer_schema(schema)


def test_a_directory_whose_newest_version_cannot_read_an_older_one_is_refused(
    tmp_path: Path,
) -> None:
    older = copy.deepcopy(schema_file("OrderDelivered"))
    older["fields"] = [f for f in older["fields"] if f["name"] != "version"]
    add_schema_version(tmp_path, older)
    add_schema_version(tmp_path, schema_file("OrderDelivered"))
    with pytest.raises(
        IncompatibleSchemaError,
        match="OrderDelivered: written with v1, read as v2: version: added without a default",
    ):
        EventCodec.from_directory(tmp_path)


def _flat_file(directory: Path) -> None:
    (directory / "OrderDelivered.avsc").write_text(json.dumps(schema_file("OrderDelivered")))


def _gap(directory: Path) -> None:
    (directory / "OrderDelivered" / "v1.avsc").rename(directory / "OrderDelivered" / "v2.avsc")


def _misnamed_version(directory: Path) -> None:
    (directory / "OrderDelivered" / "v1.avsc").rename(directory / "OrderDelivered" / "v01.avsc")


def _wrong_folder(directory: Path) -> None:
    (directory / "OrderDelivered").rename(directory / "OrderArrived")


def _empty_folder(directory: Path) -> None:
    (directory / "OrderDelivered" / "v1.avsc").unlink()


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (_flat_file, r"OrderDelivered\.avsc: each version of a schema is <event>/v<N>\.avsc"),
        (_gap, "OrderDelivered: versions must run v1, v2, … without gaps; found v2"),
        (_misnamed_version, r"v01\.avsc: a version file is named v<N>\.avsc"),
        (_wrong_folder, r"OrderArrived/v1\.avsc defines OrderDelivered, not OrderArrived"),
        (_empty_folder, r"OrderDelivered: no v<N>\.avsc in it"),
    ],
    ids=["flat file", "gap", "misnamed version", "wrong folder", "empty folder"],
)
def test_a_directory_off_the_layout_is_refused(
    tmp_path: Path, mutate: Callable[[Path], None], problem: str
) -> None:
    add_schema_version(tmp_path, schema_file("OrderDelivered"))
    mutate(tmp_path)
    with pytest.raises(SchemaError, match=problem):
        EventCodec.from_directory(tmp_path)


def test_missing_field_is_named(codec: EventCodec) -> None:
    record = {k: v for k, v in SAMPLES["OrderCreated"].items() if k != "user_id"}
    with pytest.raises(EventValidationError, match="user_id") as raised:
        codec.encode("OrderCreated", record)
    assert raised.value.fields == ("OrderCreated.user_id",)


def test_wrong_type_in_nested_record_is_named(codec: EventCodec) -> None:
    record = copy.deepcopy(SAMPLES["OrderCreated"])
    record["items"][1]["quantity"] = "two"
    with pytest.raises(EventValidationError, match=r"OrderLine\.quantity.*'two'"):
        codec.encode("OrderCreated", record)


def test_int_out_of_range_is_rejected(codec: EventCodec) -> None:
    record = copy.deepcopy(SAMPLES["OrderCreated"])
    record["items"][0]["quantity"] = 2**31
    with pytest.raises(EventValidationError, match="quantity"):
        codec.encode("OrderCreated", record)


def test_unknown_field_is_named(codec: EventCodec) -> None:
    with pytest.raises(EventValidationError, match="total_amount") as raised:
        codec.encode("OrderDelivered", {**SAMPLES["OrderDelivered"], "total_amount": 1})
    assert raised.value.fields == ("total_amount",)


def test_unknown_event_type_is_refused(codec: EventCodec) -> None:
    with pytest.raises(UnknownEventTypeError, match="OrderTeleported"):
        codec.encode("OrderTeleported", {})


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", NotSingleObjectError),
        (b'{"order_id": "x"}', NotSingleObjectError),
        (SINGLE_OBJECT_MAGIC + b"\x00" * 8 + b"\x02a", UnknownSchemaError),
    ],
)
def test_garbage_raises_a_decode_error(codec: EventCodec, data: bytes, error: type) -> None:
    with pytest.raises(error):
        codec.decode(data)


def test_truncated_and_padded_bodies_are_malformed(codec: EventCodec) -> None:
    encoded = codec.encode("OrderShipped", SAMPLES["OrderShipped"])
    with pytest.raises(MalformedPayloadError):
        codec.decode(encoded[:-5])
    with pytest.raises(MalformedPayloadError, match="trailing"):
        codec.decode(encoded + b"\x00")


def test_envelope_round_trips_through_kafka_headers(codec: EventCodec) -> None:
    event_id = uuid.uuid4()
    headers = cloudevent_headers(
        event_id=event_id,
        event_name="OrderShipped",
        source="/ordermesh/fulfillment",
        time=AT,
        subject=ORDER_ID,
    )
    assert headers == {
        "ce_id": str(event_id),
        "ce_type": "ordermesh.events.v1.OrderShipped",
        "ce_source": "/ordermesh/fulfillment",
        "ce_specversion": "1.0",
        "ce_time": "2025-03-01T12:30:15.123456Z",
        "content-type": CONTENT_TYPE,
        "ce_subject": ORDER_ID,
    }
    payload = codec.encode("OrderShipped", SAMPLES["OrderShipped"])
    envelope = codec.open_envelope(kafka_headers(headers), payload)
    assert envelope.event_id == event_id
    assert envelope.name == "OrderShipped"
    assert envelope.type == "ordermesh.events.v1.OrderShipped"
    assert envelope.subject == ORDER_ID
    assert envelope.time == AT
    assert envelope.record == SAMPLES["OrderShipped"]
    assert envelope.payload == payload


def test_envelope_type_must_match_the_payload(codec: EventCodec) -> None:
    headers = cloudevent_headers(
        event_id=uuid.uuid4(), event_name="OrderCreated", source="/ordermesh/order", time=AT
    )
    payload = codec.encode("OrderDelivered", SAMPLES["OrderDelivered"])
    with pytest.raises(EnvelopeError, match="OrderCreated"):
        codec.open_envelope(kafka_headers(headers), payload)


def test_envelope_without_id_is_refused(codec: EventCodec) -> None:
    payload = codec.encode("OrderDelivered", SAMPLES["OrderDelivered"])
    with pytest.raises(EnvelopeError, match="ce_id"):
        codec.open_envelope([("ce_source", b"/x"), ("ce_time", b"2025-03-01T00:00:00Z")], payload)


def test_header_map_decodes_bytes_keeps_text_and_skips_missing_values() -> None:
    assert header_map([("a", b"1"), ("b", "2"), ("c", None), ("a", b"3")]) == {"a": "3", "b": "2"}
    assert header_map({"a": b"1", "b": None}) == {"a": "1"}
    assert header_map(None) == {}


@pytest.mark.parametrize(
    "headers",
    [[("ce_id", b"\xff")], [("ce_subject", None), ("ce_id", b"\xff")]],
    ids=["bytes only", "with a missing value"],
)
def test_a_header_that_is_not_utf8_is_an_envelope_error(
    headers: list[tuple[str, bytes | None]],
) -> None:
    with pytest.raises(EnvelopeError, match="UTF-8"):
        header_map(headers)


def test_naive_event_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        cloudevent_headers(
            event_id=uuid.uuid4(),
            event_name="OrderCreated",
            source="/ordermesh/order",
            time=datetime(2025, 1, 1),
        )
