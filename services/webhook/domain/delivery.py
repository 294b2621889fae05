"""What a webhook delivery is: which order events become which event types, the order
document a delivery carries, the exact body and its signatures, and the retry schedule.
No I/O: the consumer, the sender and the API call these."""

from __future__ import annotations

import base64
import codecs
import hashlib
import hmac
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from services.common.money import Money
from services.webhook.domain.model import ALL_EVENTS, SECRET_PREFIX

TEST_EVENT = "webhook.test"
EXCERPT_LIMIT = 1024

_STATUS_EVENTS = {
    "VALIDATED": "order.validated",
    "PAID": "order.paid",
    "FULFILLED": "order.fulfilled",
    "SHIPPED": "order.shipped",
    "DELIVERED": "order.delivered",
    "FAILED": "order.failed",
    "CANCELLED": "order.cancelled",
}


class DeliveryState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARKED = "parked"

    @classmethod
    def parse(cls, text: str) -> DeliveryState | None:
        """A state by name in any case ("parked", "DELIVERY_STATE_PARKED"); None if empty."""
        name = text.strip().lower().removeprefix("delivery_state_")
        if not name:
            return None
        return cls(name)


def event_type_of(event_name: str, record: Mapping[str, Any]) -> str | None:
    """The webhook event type an order event is, or None if webhooks do not carry it."""
    match event_name:
        case "OrderCreated":
            return "order.created"
        case "OrderStatusChanged":
            return _STATUS_EVENTS.get(str(record["status"]))
        case "OrderCancelled":
            return "order.cancelled"
        case "OrderDelivered":
            return "order.delivered"
    return None


def subscribes(events: Sequence[str], event_type: str) -> bool:
    return ALL_EVENTS in events or event_type in events


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _money(minor: int, currency: str) -> dict[str, str]:
    return {
        "amount": Money(minor, currency).format(),
        "amount_minor": str(minor),
        "currency": currency,
    }


def order_document(
    event_name: str, record: Mapping[str, Any], known: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The order as deliveries show it after ``record``, folded over what was ``known`` of it
    (None when the order's creation was not seen: the document then holds what the event
    says). Statuses are lower case, as the original API's webhooks and live updates had them.
    """
    document: dict[str, Any] = dict(known or {})
    document.update(order_id=str(record["order_id"]), user_id=str(record["user_id"]))
    version = int(record["version"])
    match event_name:
        case "OrderCreated":
            currency = str(record["currency"])
            document.update(
                status="pending",
                items=[
                    {
                        "product_id": line["product_id"],
                        "quantity": line["quantity"],
                        "unit_price": _money(int(line["unit_price_minor"]), currency),
                    }
                    for line in record["items"]
                ],
                total_amount=_money(int(record["total_minor"]), currency),
                payment_method=record["payment_method"],
                shipping_address=dict(record["shipping_address"]),
                metadata=dict(record.get("metadata") or {}),
                created_at=_iso(record["created_at"]),
                updated_at=_iso(record["created_at"]),
            )
        case "OrderStatusChanged":
            details = dict(record.get("details") or {})
            document.update(
                status=str(record["status"]).lower(),
                updated_at=_iso(record["occurred_at"]),
                **{key: details[key] for key in sorted(details)},
            )
            if record.get("reason"):
                document["reason"] = record["reason"]
        case "OrderCancelled":
            document.update(
                status="cancelled",
                reason=record["reason"],
                updated_at=_iso(record["cancelled_at"]),
            )
        case "OrderDelivered":
            document.update(status="delivered", updated_at=_iso(record["delivered_at"]))
    document["version"] = version
    return document


def delivery_body(
    delivery_id: str, event_type: str, created_at: datetime, data: Mapping[str, Any]
) -> bytes:
    """The bytes every attempt of a delivery sends and signs: compact JSON, keys in a fixed
    order, so a receiver can verify against the raw body it read."""
    envelope = {"id": delivery_id, "type": event_type, "created_at": _iso(created_at), "data": data}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def standard_key(secret: str) -> bytes:
    """The HMAC key Standard Webhooks libraries derive from a secret (lenient base64, as
    they decode it)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")


def signature_headers(
    *,
    delivery_id: str,
    body: bytes,
    secrets: Sequence[str],
    sent_at: datetime,
    attempt: int,
) -> dict[str, str]:
    """The signature headers of one attempt. ``secrets`` lists the current secret first,
    then any previous one still in its grace period: X-Webhook-Signature carries the
    current one (the original verify function compares the whole header), and
    X-Webhook-Signature-Previous the previous; webhook-signature carries all, as Standard
    Webhooks allows."""
    current = secrets[0]
    timestamp = int(sent_at.timestamp())
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    headers = {
        "X-Webhook-Id": delivery_id,
        "X-Webhook-Timestamp": _iso(sent_at.replace(microsecond=0)) or "",
        "X-Webhook-Attempt": str(attempt),
        "X-Webhook-Signature": "sha256=" + _hex_hmac(current, body),
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            "v1," + base64.b64encode(hmac.digest(standard_key(s), signed, "sha256")).decode()
            for s in secrets
        ),
    }
    if len(secrets) > 1:
        headers["X-Webhook-Signature-Previous"] = "sha256=" + _hex_hmac(secrets[1], body)
    return headers


def _hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Verdict(StrEnum):
    """What one attempt's result means for the delivery."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"


def verdict(status: int | None) -> Verdict:
    """2xx ends a delivery; no response (network error, timeout), 408, 429 and 5xx retry;
    any other status (a 4xx, or a 1xx/3xx: redirects are not followed) fails at once."""
    if status is None or status in (408, 429) or 500 <= status <= 599:
        return Verdict.RETRY
    if 200 <= status <= 299:
        return Verdict.SUCCEEDED
    return Verdict.FAILED


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header as seconds from ``now`` (delay-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: before retry n (1-based) the sender waits a
    uniformly random time in [0, min(max_delay, base_delay · 2^(n-1))], or the receiver's
    Retry-After if that is longer (up to max_delay). The last attempt is never earlier than
    ``min_span`` after the first, so ``max_attempts`` attempts cover at least that span."""

    max_attempts: int = 15
    base_delay: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(hours=4)
    min_span: timedelta = timedelta(hours=24)

    def next_attempt_at(
        self,
        *,
        attempts_made: int,
        round_started_at: datetime,
        now: datetime,
        retry_after: float | None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to try again after ``attempts_made`` attempts of this round, or None when
        they are used up (the delivery is parked)."""
        if attempts_made >= self.max_attempts:
            return None
        envelope = min(
            self.max_delay.total_seconds(),
            self.base_delay.total_seconds() * 2 ** (attempts_made - 1),
        )
        delay = (rng or random).uniform(0.0, envelope)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay.total_seconds()))
        at = now + timedelta(seconds=delay)
        if attempts_made == self.max_attempts - 1:
            at = max(at, round_started_at + self.min_span)
        return at


def excerpt(body: bytes) -> str:
    """The start of a response body as text for the delivery log: at most EXCERPT_LIMIT
    bytes, undecodable bytes replaced, NULs (which Postgres text refuses) dropped."""
    # An incremental decoder drops a character the limit cut in two (instead of a U+FFFD).
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return decoder.decode(body[:EXCERPT_LIMIT], final=False).replace("\x00", "")


def test_event_data(webhook_id: str) -> dict[str, Any]:
    return {"webhook_id": webhook_id, "message": "This is a test event from ordermesh."}
