"""What a webhook delivery is (services/webhook/domain/delivery.py): event types, the order
document folded over an order's events as the dispatcher receives them, the exact body, its
signatures as receivers verify them (the original API's verify function and the Standard
Webhooks library), what a response means, Retry-After, the retry schedule and the log
excerpt."""

import hashlib
import hmac
import json
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.platform.messaging.codec import EventCodec
from services.webhook.domain import delivery
from services.webhook.domain.delivery import (
    EXCERPT_LIMIT,
    TEST_EVENT,
    DeliveryState,
    RetryPolicy,
    Verdict,
    delivery_body,
    event_type_of,
    excerpt,
    order_document,
    retry_after_seconds,
    signature_headers,
    standard_key,
    subscribes,
    verdict,
)
from services.webhook.domain.model import KNOWN_EVENTS
from services.webhook.domain.rules import new_signing_secret

DELIVERY_ID = "0b6f4e2c-5d1a-4c4e-9a39-2f0a7c1d9e11"
ORDER_ID = "5f0c6a1e-8b7d-4c2a-9e3f-1a2b3c4d5e6f"
USER_ID = "user-alice"
CREATED = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)


def verify_webhook(payload: str, signature: str, secret: str) -> bool:
    """The original API's verify function, exactly as receivers have it."""
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", signature)


# --- event types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_name", "record", "event_type"),
    [
        ("OrderCreated", {}, "order.created"),
        ("OrderStatusChanged", {"status": "VALIDATED"}, "order.validated"),
        ("OrderStatusChanged", {"status": "PAID"}, "order.paid"),
        ("OrderStatusChanged", {"status": "FULFILLED"}, "order.fulfilled"),
        ("OrderStatusChanged", {"status": "SHIPPED"}, "order.shipped"),
        ("OrderStatusChanged", {"status": "DELIVERED"}, "order.delivered"),
        ("OrderStatusChanged", {"status": "FAILED"}, "order.failed"),
        ("OrderStatusChanged", {"status": "CANCELLED"}, "order.cancelled"),
        ("OrderStatusChanged", {"status": "PENDING"}, None),
        ("OrderCancelled", {}, "order.cancelled"),
        ("OrderDelivered", {}, "order.delivered"),
        ("OrderValidated", {}, None),
        ("OrderReadyToShip", {}, None),
        ("PaymentProcessed", {}, None),
    ],
)
def test_order_events_map_to_webhook_event_types(
    event_name: str, record: dict[str, Any], event_type: str | None
) -> None:
    assert event_type_of(event_name, record) == event_type
    assert event_type is None or event_type in KNOWN_EVENTS


def test_a_webhook_subscribes_to_named_types_or_to_all() -> None:
    assert subscribes(("order.paid",), "order.paid")
    assert not subscribes(("order.paid",), "order.shipped")
    assert subscribes(("*",), "order.shipped")
    assert subscribes(("order.paid", "*"), TEST_EVENT)


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("pending", DeliveryState.PENDING),
        ("SUCCEEDED", DeliveryState.SUCCEEDED),
        (" Failed ", DeliveryState.FAILED),
        ("DELIVERY_STATE_PARKED", DeliveryState.PARKED),
        ("delivery_state_pending", DeliveryState.PENDING),
        ("", None),
        ("   ", None),
    ],
)
def test_delivery_states_parse_in_any_case_with_or_without_the_enum_prefix(
    text: str, state: DeliveryState | None
) -> None:
    assert DeliveryState.parse(text) is state


@pytest.mark.parametrize("text", ["bogus", "DELIVERY_STATE_UNSPECIFIED", "delivered"])
def test_an_unknown_delivery_state_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        DeliveryState.parse(text)


# --- the order document ------------------------------------------------------------------

CODEC = EventCodec.from_directory()


def as_consumed(event_name: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as the dispatcher receives it: through the Avro codec, as the order
    service's outbox wrote it."""
    decoded = CODEC.decode(CODEC.encode(event_name, record))
    assert decoded.name == event_name
    return decoded.record


def as_stored(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document as the dispatcher reads it back (jsonb)."""
    loaded: dict[str, Any] = json.loads(json.dumps(document))
    return loaded


def created_record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "order_id": ORDER_ID,
        "user_id": USER_ID,
        "items": [
            {"product_id": "prod-1", "quantity": 2, "unit_price_minor": 1999},
            {"product_id": "prod-2", "quantity": 1, "unit_price_minor": 500},
        ],
        "total_minor": 4498,
        "currency": "EUR",
        "payment_method": "card",
        "shipping_address": {
            "street": "Bahnhofstraße 1",
            "city": "Zürich",
            "state": "ZH",
            "zip": "8001",
            "country": "CH",
        },
        "created_at": CREATED,
        "version": 1,
        "metadata": {"gift": "true", "note": '{"wrap":"red"}'},
    }
    record.update(overrides)
    return as_consumed("OrderCreated", record)


def status_record(
    status: str,
    version: int,
    at: datetime,
    *,
    previous: str | None = None,
    reason: str | None = None,
    details: dict[str, str] | None = None,
) -> dict[str, Any]:
    return as_consumed(
        "OrderStatusChanged",
        {
            "order_id": ORDER_ID,
            "user_id": USER_ID,
            "status": status,
            "previous_status": previous,
            "reason": reason,
            "details": details or {},
            "occurred_at": at,
            "version": version,
        },
    )


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


CREATED_DOCUMENT = {
    "order_id": ORDER_ID,
    "user_id": USER_ID,
    "status": "pending",
    "items": [
        {
            "product_id": "prod-1",
            "quantity": 2,
            "unit_price": {"amount": "19.99", "amount_minor": "1999", "currency": "EUR"},
        },
        {
            "product_id": "prod-2",
            "quantity": 1,
            "unit_price": {"amount": "5.00", "amount_minor": "500", "currency": "EUR"},
        },
    ],
    "total_amount": {"amount": "44.98", "amount_minor": "4498", "currency": "EUR"},
    "payment_method": "card",
    "shipping_address": {
        "street": "Bahnhofstraße 1",
        "city": "Zürich",
        "state": "ZH",
        "zip": "8001",
        "country": "CH",
    },
    "metadata": {"gift": "true", "note": '{"wrap":"red"}'},
    "created_at": "2026-03-01T09:30:15.123456Z",
    "updated_at": "2026-03-01T09:30:15.123456Z",
    "version": 1,
}


def test_the_records_carry_timezone_aware_datetimes_as_the_dispatcher_receives_them() -> None:
    record = created_record()
    assert record["created_at"] == CREATED
    assert record["created_at"].utcoffset() == timedelta(0)


def test_a_created_order_becomes_its_document() -> None:
    document = order_document("OrderCreated", created_record(), None)
    assert document == CREATED_DOCUMENT
    assert as_stored(document) == document


def test_the_document_follows_the_order_through_its_lifecycle() -> None:
    validated_at = CREATED + timedelta(seconds=2)
    paid_at = CREATED + timedelta(seconds=5)
    fulfilled_at = CREATED + timedelta(minutes=3)
    shipped_at = CREATED + timedelta(hours=2)
    delivered_at = CREATED + timedelta(days=2, microseconds=7)
    shipment = {
        "carrier": "DHL",
        "tracking_number": "JD014600003SE",
        "estimated_delivery": "2026-03-04",
    }
    steps: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("OrderCreated", created_record(), {}),
        (
            "OrderStatusChanged",
            status_record("VALIDATED", 2, validated_at, previous="PENDING"),
            {"status": "validated", "updated_at": iso(validated_at), "version": 2},
        ),
        (
            "OrderStatusChanged",
            status_record("PAID", 3, paid_at, previous="VALIDATED"),
            {"status": "paid", "updated_at": iso(paid_at), "version": 3},
        ),
        (
            "OrderStatusChanged",
            status_record("FULFILLED", 4, fulfilled_at, previous="PAID"),
            {"status": "fulfilled", "updated_at": iso(fulfilled_at), "version": 4},
        ),
        (
            "OrderStatusChanged",
            status_record("SHIPPED", 5, shipped_at, previous="FULFILLED", details=shipment),
            {"status": "shipped", "updated_at": iso(shipped_at), "version": 5, **shipment},
        ),
        (
            "OrderDelivered",
            as_consumed(
                "OrderDelivered",
                {
                    "order_id": ORDER_ID,
                    "user_id": USER_ID,
                    "delivered_at": delivered_at,
                    "version": 6,
                },
            ),
            {"status": "delivered", "updated_at": iso(delivered_at), "version": 6},
        ),
    ]
    known: dict[str, Any] | None = None
    expected = dict(CREATED_DOCUMENT)
    for event_name, record, changes in steps:
        document = order_document(event_name, record, known)
        expected.update(changes)
        assert document == expected, event_name
        assert event_type_of(event_name, record) is not None
        known = as_stored(document)
    assert known is not None
    assert (known["status"], known["carrier"], known["tracking_number"]) == (
        "delivered",
        "DHL",
        "JD014600003SE",
    )
    assert known["updated_at"] == "2026-03-03T09:30:15.123463Z"
    assert known["created_at"] == CREATED_DOCUMENT["created_at"]


CANCELLED_AT = CREATED + timedelta(minutes=1)
FAILED_AT = CREATED + timedelta(seconds=9)


@pytest.mark.parametrize(
    ("event_name", "record", "changes", "event_type"),
    [
        (
            "OrderCancelled",
            as_consumed(
                "OrderCancelled",
                {
                    "order_id": ORDER_ID,
                    "user_id": USER_ID,
                    "reason": "customer changed their mind",
                    "previous_status": "VALIDATED",
                    "cancelled_by": None,
                    "cancelled_at": CANCELLED_AT,
                    "version": 3,
                },
            ),
            {
                "status": "cancelled",
                "reason": "customer changed their mind",
                "updated_at": iso(CANCELLED_AT),
                "version": 3,
            },
            "order.cancelled",
        ),
        (
            "OrderStatusChanged",
            status_record(
                "FAILED",
                2,
                FAILED_AT,
                previous="PENDING",
                reason="payment declined: insufficient funds",
            ),
            {
                "status": "failed",
                "reason": "payment declined: insufficient funds",
                "updated_at": iso(FAILED_AT),
                "version": 2,
            },
            "order.failed",
        ),
    ],
)
def test_an_order_that_ends_early_shows_why_and_when(
    event_name: str, record: dict[str, Any], changes: dict[str, Any], event_type: str
) -> None:
    known = as_stored(order_document("OrderCreated", created_record(), None))
    assert order_document(event_name, record, known) == {**CREATED_DOCUMENT, **changes}
    assert event_type_of(event_name, record) == event_type


def test_a_status_change_without_a_reason_adds_none() -> None:
    known = as_stored(order_document("OrderCreated", created_record(), None))
    document = order_document("OrderStatusChanged", status_record("PAID", 2, CREATED), known)
    assert "reason" not in document


def test_without_the_creation_the_document_holds_what_the_event_says() -> None:
    shipped_at = datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    record = status_record(
        "SHIPPED", 5, shipped_at, details={"carrier": "UPS", "tracking_number": "1Z999"}
    )
    assert order_document("OrderStatusChanged", record, None) == {
        "order_id": ORDER_ID,
        "user_id": USER_ID,
        "status": "shipped",
        "updated_at": "2026-03-01T10:00:00Z",
        "carrier": "UPS",
        "tracking_number": "1Z999",
        "version": 5,
    }


def test_the_fold_does_not_change_what_was_known() -> None:
    known = as_stored(order_document("OrderCreated", created_record(), None))
    before = json.dumps(known, sort_keys=True)
    order_document("OrderStatusChanged", status_record("PAID", 2, CREATED), known)
    assert json.dumps(known, sort_keys=True) == before


def test_zero_decimal_currencies_keep_whole_amounts() -> None:
    record = created_record(
        currency="JPY",
        items=[{"product_id": "p", "quantity": 3, "unit_price_minor": 1500}],
        total_minor=4500,
    )
    document = order_document("OrderCreated", record, None)
    assert document["total_amount"] == {"amount": "4500", "amount_minor": "4500", "currency": "JPY"}
    assert document["items"][0]["unit_price"]["amount"] == "1500"


# --- the body -----------------------------------------------------------------------------


def test_the_body_is_compact_json_with_id_type_created_at_and_data_in_that_order() -> None:
    data = order_document("OrderCreated", created_record(), None)
    body = delivery_body(DELIVERY_ID, "order.created", CREATED, data)
    parsed = json.loads(body)
    assert list(parsed) == ["id", "type", "created_at", "data"]
    assert parsed == {
        "id": DELIVERY_ID,
        "type": "order.created",
        "created_at": "2026-03-01T09:30:15.123456Z",
        "data": data,
    }
    assert body == json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    # Non-ASCII text travels as UTF-8, not as \\u escapes.
    assert "Zürich".encode() in body
    assert b"\\u" not in body


def test_the_body_is_the_same_bytes_every_time() -> None:
    data = order_document("OrderCreated", created_record(), None)
    bodies = {delivery_body(DELIVERY_ID, "order.created", CREATED, dict(data)) for _ in range(5)}
    assert len(bodies) == 1


def test_the_body_time_is_utc_whatever_the_zone_given() -> None:
    zoned = CREATED.astimezone(timezone(timedelta(hours=-5)))
    assert delivery_body(DELIVERY_ID, "order.paid", zoned, {}) == delivery_body(
        DELIVERY_ID, "order.paid", CREATED, {}
    )
    whole = datetime(2026, 3, 1, tzinfo=UTC)
    assert json.loads(delivery_body(DELIVERY_ID, "x", whole, {}))["created_at"] == (
        "2026-03-01T00:00:00Z"
    )


def test_the_test_event_names_its_webhook() -> None:
    body = delivery_body(DELIVERY_ID, TEST_EVENT, CREATED, delivery.test_event_data("hook-1"))
    parsed = json.loads(body)
    assert (parsed["type"], parsed["data"]["webhook_id"]) == ("webhook.test", "hook-1")


# --- signatures ----------------------------------------------------------------------------

SECRET = new_signing_secret()
PREVIOUS = new_signing_secret()


def signed_body(
    secrets: tuple[str, ...], *, sent_at: datetime | None = None, attempt: int = 1
) -> tuple[bytes, dict[str, str]]:
    data = order_document("OrderCreated", created_record(), None)
    body = delivery_body(DELIVERY_ID, "order.created", CREATED, data)
    headers = signature_headers(
        delivery_id=DELIVERY_ID,
        body=body,
        secrets=secrets,
        sent_at=sent_at or datetime.now(UTC),
        attempt=attempt,
    )
    return body, headers


def test_the_headers_of_an_attempt() -> None:
    sent_at = datetime(2026, 3, 1, 9, 31, 0, 987654, tzinfo=UTC)
    _, headers = signed_body((SECRET,), sent_at=sent_at, attempt=3)
    assert set(headers) == {
        "X-Webhook-Id",
        "X-Webhook-Timestamp",
        "X-Webhook-Attempt",
        "X-Webhook-Signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert headers["X-Webhook-Id"] == headers["webhook-id"] == DELIVERY_ID
    assert headers["X-Webhook-Timestamp"] == "2026-03-01T09:31:00Z"
    assert headers["webhook-timestamp"] == str(int(sent_at.timestamp())) == "1772357460"
    assert headers["X-Webhook-Attempt"] == "3"
    assert headers["X-Webhook-Signature"].startswith("sha256=")
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]


def test_the_original_verify_function_accepts_the_signature() -> None:
    body, headers = signed_body((SECRET,))
    assert verify_webhook(body.decode(), headers["X-Webhook-Signature"], SECRET)
    assert not verify_webhook(body.decode(), headers["X-Webhook-Signature"], PREVIOUS)


def test_standard_webhooks_accepts_the_signature() -> None:
    body, headers = signed_body((SECRET,))
    assert StandardWebhook(SECRET).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(PREVIOUS).verify(body, headers)


def test_during_a_rotation_both_secrets_verify() -> None:
    body, headers = signed_body((SECRET, PREVIOUS))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, PREVIOUS):
        assert StandardWebhook(secret).verify(body, headers) == json.loads(body)
    # The original function compares one whole header: the current secret's, and the
    # previous secret's has a header of its own.
    assert verify_webhook(body.decode(), headers["X-Webhook-Signature"], SECRET)
    assert verify_webhook(body.decode(), headers["X-Webhook-Signature-Previous"], PREVIOUS)
    assert not verify_webhook(body.decode(), headers["X-Webhook-Signature"], PREVIOUS)
    assert not verify_webhook(body.decode(), headers["X-Webhook-Signature-Previous"], SECRET)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(new_signing_secret()).verify(body, headers)


def test_without_a_previous_secret_there_is_no_previous_signature() -> None:
    _, headers = signed_body((SECRET,))
    assert "X-Webhook-Signature-Previous" not in headers


@pytest.mark.parametrize("secrets", [(SECRET,), (SECRET, PREVIOUS)])
def test_a_tampered_body_fails_both_verifications(secrets: tuple[str, ...]) -> None:
    body, headers = signed_body(secrets)
    tampered = body.replace(b'"amount":"44.98"', b'"amount":"4.98"')
    assert tampered != body
    for secret in secrets:
        assert not verify_webhook(tampered.decode(), headers["X-Webhook-Signature"], secret)
        with pytest.raises(WebhookVerificationError):
            StandardWebhook(secret).verify(tampered, headers)
    if len(secrets) > 1:
        assert not verify_webhook(
            tampered.decode(), headers["X-Webhook-Signature-Previous"], secrets[1]
        )


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp"])
def test_standard_webhooks_signs_the_id_and_the_timestamp_too(header: str) -> None:
    body, headers = signed_body((SECRET,))
    forged = dict(headers)
    forged[header] = (
        str(int(headers[header]) - 1) if header == "webhook-timestamp" else "another-id"
    )
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(SECRET).verify(body, forged)


def test_fresh_secrets_work_with_both_verifiers() -> None:
    for _ in range(20):
        secret = new_signing_secret()
        body, headers = signed_body((secret,))
        assert verify_webhook(body.decode(), headers["X-Webhook-Signature"], secret)
        StandardWebhook(secret).verify(body, headers)


def test_the_standard_key_is_the_one_the_library_derives() -> None:
    secret = new_signing_secret()
    assert standard_key(secret) == StandardWebhook(secret)._whsecret
    assert len(standard_key(secret)) == 32
    # Lenient about padding, as the libraries are.
    assert standard_key(secret.rstrip("=")) == standard_key(secret)


def test_the_timestamp_headers_agree_and_ignore_microseconds() -> None:
    sent_at = datetime(2026, 3, 1, 9, 31, 0, 999999, tzinfo=UTC)
    _, headers = signed_body((SECRET,), sent_at=sent_at)
    from_iso = datetime.fromisoformat(headers["X-Webhook-Timestamp"].replace("Z", "+00:00"))
    assert int(from_iso.timestamp()) == int(headers["webhook-timestamp"])


# --- what a response means ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.SUCCEEDED),
        (201, Verdict.SUCCEEDED),
        (204, Verdict.SUCCEEDED),
        (299, Verdict.SUCCEEDED),
        (None, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (599, Verdict.RETRY),
        (100, Verdict.FAILED),
        (301, Verdict.FAILED),
        (302, Verdict.FAILED),
        (304, Verdict.FAILED),
        (307, Verdict.FAILED),
        (400, Verdict.FAILED),
        (401, Verdict.FAILED),
        (403, Verdict.FAILED),
        (404, Verdict.FAILED),
        (409, Verdict.FAILED),
        (410, Verdict.FAILED),
        (422, Verdict.FAILED),
        (499, Verdict.FAILED),
    ],
)
def test_the_verdict_on_a_response(status: int | None, expected: Verdict) -> None:
    assert verdict(status) is expected


NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2", 2.0),
        ("0", 0.0),
        (" 120 ", 120.0),
        ("86400", 86400.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Sun, 01 Mar 2026 12:05:00 GMT", 300.0),
        # A date without a zone is taken as UTC.
        ("Sun, 01 Mar 2026 12:05:00 -0000", 300.0),
        ("Sun, 01 Mar 2026 13:05:00 +0100", 300.0),
        # A date in the past means now.
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_retry_after_as_seconds_or_an_http_date(value: str, seconds: float) -> None:
    assert retry_after_seconds(value, NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "-5", "1.5", "0x10", "2 seconds", "Tue, 99 Oct 2015 07:28:00 GMT"],
)
def test_retry_after_that_is_neither_is_ignored(value: str | None) -> None:
    assert retry_after_seconds(value, NOW) is None


# Regression: a Retry-After of non-ASCII digits ("²", from a 0xB2 byte decoded as latin-1)
# is ignored, not a ValueError.
@pytest.mark.parametrize("value", ["\u00b2", "\u00b9\u00b2", "3\u00b3"])
def test_retry_after_with_non_ascii_digits_is_ignored(value: str) -> None:
    assert retry_after_seconds(value, NOW) is None


# --- the retry schedule ---------------------------------------------------------------------

POLICY = RetryPolicy()
LONG_AGO = NOW - timedelta(days=2)


def test_the_default_policy() -> None:
    assert RetryPolicy() == RetryPolicy(
        max_attempts=15,
        base_delay=timedelta(seconds=10),
        max_delay=timedelta(hours=4),
        min_span=timedelta(hours=24),
    )


@pytest.mark.parametrize("attempts_made", range(1, 15))
def test_delays_lie_within_the_exponential_envelope(attempts_made: int) -> None:
    envelope = min(4 * 3600.0, 10.0 * 2 ** (attempts_made - 1))
    delays = []
    for seed in range(200):
        at = POLICY.next_attempt_at(
            attempts_made=attempts_made,
            round_started_at=LONG_AGO,
            now=NOW,
            retry_after=None,
            rng=random.Random(seed),
        )
        assert at is not None
        delays.append((at - NOW).total_seconds())
    assert all(0.0 <= d <= envelope for d in delays)
    # Full jitter: spread over the whole envelope, not bunched at its top.
    assert min(delays) < envelope * 0.1
    assert max(delays) > envelope * 0.9


def test_the_same_seed_gives_the_same_schedule() -> None:
    def schedule(seed: int) -> list[datetime | None]:
        rng = random.Random(seed)
        return [
            POLICY.next_attempt_at(
                attempts_made=n, round_started_at=NOW, now=NOW, retry_after=None, rng=rng
            )
            for n in range(1, 16)
        ]

    assert schedule(7) == schedule(7)
    assert schedule(7) != schedule(8)


def test_without_a_generator_the_module_random_is_used() -> None:
    at = POLICY.next_attempt_at(attempts_made=2, round_started_at=NOW, now=NOW, retry_after=None)
    assert at is not None
    assert NOW <= at <= NOW + timedelta(seconds=20)


def test_retry_after_raises_the_delay() -> None:
    at = POLICY.next_attempt_at(
        attempts_made=1, round_started_at=NOW, now=NOW, retry_after=100.0, rng=random.Random(1)
    )
    assert at == NOW + timedelta(seconds=100)


@pytest.mark.parametrize("retry_after", [4 * 3600 + 1.0, 10.0**9, float("inf")])
def test_retry_after_is_capped_at_the_max_delay(retry_after: float) -> None:
    at = POLICY.next_attempt_at(
        attempts_made=1,
        round_started_at=NOW,
        now=NOW,
        retry_after=retry_after,
        rng=random.Random(1),
    )
    assert at == NOW + timedelta(hours=4)


def test_a_short_retry_after_does_not_shorten_the_backoff() -> None:
    for seed in range(50):
        plain = POLICY.next_attempt_at(
            attempts_made=8,
            round_started_at=NOW,
            now=NOW,
            retry_after=None,
            rng=random.Random(seed),
        )
        asked = POLICY.next_attempt_at(
            attempts_made=8,
            round_started_at=NOW,
            now=NOW,
            retry_after=1.0,
            rng=random.Random(seed),
        )
        assert plain is not None and asked is not None
        assert asked == max(plain, NOW + timedelta(seconds=1))


@pytest.mark.parametrize("attempts_made", [15, 16, 100])
def test_no_retry_once_the_attempts_are_used_up(attempts_made: int) -> None:
    at = POLICY.next_attempt_at(
        attempts_made=attempts_made,
        round_started_at=NOW,
        now=NOW,
        retry_after=1.0,
        rng=random.Random(0),
    )
    assert at is None


@pytest.mark.parametrize("retry_after", [None, 5.0])
def test_the_last_attempt_is_never_earlier_than_the_min_span(retry_after: float | None) -> None:
    started = NOW - timedelta(hours=1)
    for seed in range(50):
        at = POLICY.next_attempt_at(
            attempts_made=14,
            round_started_at=started,
            now=NOW,
            retry_after=retry_after,
            rng=random.Random(seed),
        )
        assert at is not None
        assert at >= started + timedelta(hours=24)


def test_the_default_schedule_spans_a_day_for_every_seed() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        started = NOW
        attempt_times = [started]
        for attempts_made in range(1, 15):
            at = POLICY.next_attempt_at(
                attempts_made=attempts_made,
                round_started_at=started,
                now=attempt_times[-1],
                retry_after=None,
                rng=rng,
            )
            assert at is not None
            assert at >= attempt_times[-1]
            attempt_times.append(at)
        assert len(attempt_times) == 15
        assert attempt_times[-1] - started >= timedelta(hours=24)
        assert (
            POLICY.next_attempt_at(
                attempts_made=15,
                round_started_at=started,
                now=attempt_times[-1],
                retry_after=None,
                rng=rng,
            )
            is None
        )


def test_a_configured_policy_is_followed() -> None:
    policy = RetryPolicy(
        max_attempts=3,
        base_delay=timedelta(seconds=1),
        max_delay=timedelta(seconds=3),
        min_span=timedelta(minutes=1),
    )
    rng = random.Random(3)
    first = policy.next_attempt_at(
        attempts_made=1, round_started_at=NOW, now=NOW, retry_after=None, rng=rng
    )
    assert first is not None and NOW <= first <= NOW + timedelta(seconds=1)
    last = policy.next_attempt_at(
        attempts_made=2, round_started_at=NOW, now=NOW, retry_after=None, rng=rng
    )
    assert last == NOW + timedelta(minutes=1)
    assert (
        policy.next_attempt_at(
            attempts_made=3, round_started_at=NOW, now=NOW, retry_after=None, rng=rng
        )
        is None
    )


# --- the log excerpt -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"", ""),
        (b'{"ok":true}', '{"ok":true}'),
        (b"ok\x00done\x00", "okdone"),
        (b"\xff\xfeok", "\ufffd\ufffdok"),
        ("grüße".encode(), "grüße"),
        (b"x" * EXCERPT_LIMIT + b"TAIL", "x" * EXCERPT_LIMIT),
        (b"a" * 5000, "a" * 1024),
        # The cap is on the bytes read, before NULs are dropped.
        (b"\x00" * 1000 + b"b" * 100, "b" * 24),
        ("é".encode() * 600, "é" * 512),
    ],
)
def test_the_excerpt(body: bytes, text: str) -> None:
    assert EXCERPT_LIMIT == 1024
    assert excerpt(body) == text
