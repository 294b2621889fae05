"""WebhookService's servicer through grpc_testing, behind the platform interceptor, over a
fake repository and resolver: every RPC's translation (the secret shown once), its errors'
statuses and details, the contract's bounds and tokens."""

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.message import Message
from ordermesh.webhook.v1 import webhook_pb2, webhook_pb2_grpc

from services.common.identity import Principal, Role, Tier
from services.webhook.api import WebhookApi
from services.webhook.domain.model import (
    MAX_WEBHOOKS_PER_USER,
    Delivery,
    DeliveryAttempt,
    Webhook,
)
from services.webhook.settings import WebhookSettings
from tests.unit.fakes.webhook import EVERYWHERE, T0, FakeResolver, FakeWebhooks
from tests.unit.servicer_harness import BAD_CREDENTIALS, ServicerHarness, TokenMint

DESCRIPTOR = webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"]
ALICE = Principal("user-alice", "alice@example.com", Role.USER, Tier.FREE)
BOB = Principal("user-bob", "bob@example.com", Role.USER, Tier.FREE)
PUBLIC_URL = "https://hooks.example.com/orders"
PRIVATE_URL = "http://intranet.example.com:8080/hook"


def seed(webhooks: FakeWebhooks, owner: Principal = ALICE, url: str = PUBLIC_URL) -> Webhook:
    webhook = Webhook(str(uuid.uuid4()), owner.user_id, url, ("*",), "seeded", True, T0)
    webhooks.rows[webhook.webhook_id] = (webhook, "whsec_seeded")
    return webhook


@pytest.fixture
def webhooks() -> FakeWebhooks:
    return FakeWebhooks()


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver(
        {"hooks.example.com": ["93.184.215.14"], "intranet.example.com": ["10.0.0.8"]}
    )


def harness(
    mint: TokenMint, webhooks: FakeWebhooks, resolver: FakeResolver, *, allow_private: bool
) -> ServicerHarness:
    return ServicerHarness(
        DESCRIPTOR,
        WebhookApi(
            webhooks,
            resolver,
            WebhookSettings(allowed_networks=EVERYWHERE if allow_private else ()),
        ),
        webhook_pb2_grpc.add_WebhookServiceServicer_to_server,
        mint=mint,
    )


@pytest.fixture
def hooks(
    mint: TokenMint, webhooks: FakeWebhooks, resolver: FakeResolver
) -> Iterator[ServicerHarness]:
    with harness(mint, webhooks, resolver, allow_private=False) as served:
        yield served


def test_a_registration_answers_the_webhook_and_its_secret_once(
    hooks: ServicerHarness, webhooks: FakeWebhooks, resolver: FakeResolver
) -> None:
    request = webhook_pb2.RegisterWebhookRequest(
        url=f" {PUBLIC_URL} ",
        events=["order.paid", "order.shipped", "order.paid"],
        description=" mine ",
    )
    webhook = hooks.unary("RegisterWebhook", request, caller=ALICE).ok().webhook
    expected = webhook_pb2.Webhook(
        webhook_id=str(uuid.UUID(webhook.webhook_id)),
        url=PUBLIC_URL,
        events=["order.paid", "order.shipped"],
        description="mine",
        active=True,
        secret=webhook.secret,
    )
    expected.created_at.FromDatetime(T0)
    assert webhook == expected
    assert webhook.secret.startswith("whsec_")
    kept, secret = webhooks.rows[webhook.webhook_id]
    assert (kept.user_id, secret) == (ALICE.user_id, webhook.secret)
    assert resolver.asked == [("hooks.example.com", 443)]


@pytest.mark.parametrize(
    ("request_", "violation"),
    [
        (
            webhook_pb2.RegisterWebhookRequest(url=PRIVATE_URL, events=["*"]),
            (
                "url",
                "url host 'intranet.example.com' resolves to non-public addresses (10.0.0.8);"
                " private, loopback, link-local and multicast targets are refused",
            ),
        ),
        (
            webhook_pb2.RegisterWebhookRequest(url="ftp://hooks.example.com/", events=["*"]),
            ("url", "url must start with http:// or https://"),
        ),
        (
            webhook_pb2.RegisterWebhookRequest(url="https://nowhere.example.com/", events=["*"]),
            ("url", "url host 'nowhere.example.com' does not resolve"),
        ),
        (
            webhook_pb2.RegisterWebhookRequest(url=PUBLIC_URL),
            ("events", 'events must name at least one event type, or "*" for all'),
        ),
    ],
)
def test_a_bad_registration_is_invalid_naming_the_field(
    hooks: ServicerHarness,
    webhooks: FakeWebhooks,
    request_: webhook_pb2.RegisterWebhookRequest,
    violation: tuple[str, str],
) -> None:
    outcome = hooks.unary("RegisterWebhook", request_, caller=ALICE)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, violation[1])
    assert outcome.field_violations() == [violation]
    assert webhooks.rows == {}


def test_unknown_events_are_named(hooks: ServicerHarness) -> None:
    request = webhook_pb2.RegisterWebhookRequest(url=PUBLIC_URL, events=["order.lost"])
    outcome = hooks.unary("RegisterWebhook", request, caller=ALICE)
    [(field, description)] = outcome.field_violations()
    assert field == "events"
    assert description.startswith("events contains unknown event types (order.lost)")


def test_private_targets_are_registered_when_the_settings_allow_them(
    mint: TokenMint, webhooks: FakeWebhooks, resolver: FakeResolver
) -> None:
    request = webhook_pb2.RegisterWebhookRequest(url=PRIVATE_URL, events=["*"])
    with harness(mint, webhooks, resolver, allow_private=True) as served:
        webhook = served.unary("RegisterWebhook", request, caller=ALICE).ok().webhook
    assert webhook.url == PRIVATE_URL
    # The allow-list names networks, so the host is resolved and its addresses checked.
    assert resolver.asked == [("intranet.example.com", 8080)]


def test_a_user_at_the_limit_must_delete_one_first(
    hooks: ServicerHarness, webhooks: FakeWebhooks
) -> None:
    for _ in range(MAX_WEBHOOKS_PER_USER):
        seed(webhooks)
    request = webhook_pb2.RegisterWebhookRequest(url=PUBLIC_URL, events=["*"])
    outcome = hooks.unary("RegisterWebhook", request, caller=ALICE)
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "at most 20 webhooks per user; delete one before adding another",
    )
    assert outcome.status().details == []


@pytest.mark.parametrize(
    ("request_", "violation"),
    [
        (
            webhook_pb2.RegisterWebhookRequest(url="https://h.example.com/" + "p" * 2027),
            ("url", "url is 2049 characters long; at most 2048 are allowed"),
        ),
        (
            webhook_pb2.RegisterWebhookRequest(url=PUBLIC_URL, events=["order.paid"] * 17),
            ("events", "events has 17 items; at most 16 are allowed"),
        ),
        (
            webhook_pb2.RegisterWebhookRequest(url=PUBLIC_URL, events=["*", "e" * 65]),
            ("events[1]", "events[1] is 65 characters long; at most 64 are allowed"),
        ),
        (
            webhook_pb2.RegisterWebhookRequest(url=PUBLIC_URL, description="d" * 501),
            ("description", "description is 501 characters long; at most 500 are allowed"),
        ),
    ],
)
def test_a_registration_beyond_the_contract_resolves_nothing(
    hooks: ServicerHarness,
    resolver: FakeResolver,
    request_: webhook_pb2.RegisterWebhookRequest,
    violation: tuple[str, str],
) -> None:
    outcome = hooks.unary("RegisterWebhook", request_, caller=ALICE)
    assert outcome.field_violations() == [violation]
    assert resolver.asked == []


def test_the_caller_lists_only_their_webhooks_without_secrets(
    hooks: ServicerHarness, webhooks: FakeWebhooks
) -> None:
    mine = seed(webhooks)
    seed(webhooks, owner=BOB)
    listed = hooks.unary("ListWebhooks", webhook_pb2.ListWebhooksRequest(), caller=ALICE).ok()
    expected = webhook_pb2.Webhook(
        webhook_id=mine.webhook_id,
        url=PUBLIC_URL,
        events=["*"],
        description="seeded",
        active=True,
    )
    expected.created_at.FromDatetime(T0)
    assert list(listed.webhooks) == [expected]


def test_the_caller_deletes_their_webhook(hooks: ServicerHarness, webhooks: FakeWebhooks) -> None:
    mine = seed(webhooks)
    request = webhook_pb2.DeleteWebhookRequest(webhook_id=mine.webhook_id)
    assert hooks.unary("DeleteWebhook", request, caller=ALICE).ok() == (
        webhook_pb2.DeleteWebhookResponse()
    )
    assert webhooks.rows == {}


@pytest.mark.parametrize("whose", ["bobs", "nobodys"])
def test_a_webhook_that_is_not_the_callers_is_not_found(
    hooks: ServicerHarness, webhooks: FakeWebhooks, whose: str
) -> None:
    webhook_id = seed(webhooks, owner=BOB).webhook_id if whose == "bobs" else str(uuid.uuid4())
    request = webhook_pb2.DeleteWebhookRequest(webhook_id=webhook_id)
    outcome = hooks.unary("DeleteWebhook", request, caller=ALICE)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.NOT_FOUND, "webhook not found")
    assert len(webhooks.rows) == (1 if whose == "bobs" else 0)


@pytest.mark.parametrize(
    ("webhook_id", "violation"),
    [
        ("hook-1", ("webhook_id", "webhook_id must be a UUID")),
        ("w" * 65, ("webhook_id", "webhook_id is 65 characters long; at most 64 are allowed")),
    ],
)
def test_a_bad_webhook_id_is_invalid(
    hooks: ServicerHarness, webhook_id: str, violation: tuple[str, str]
) -> None:
    request = webhook_pb2.DeleteWebhookRequest(webhook_id=webhook_id)
    outcome = hooks.unary("DeleteWebhook", request, caller=ALICE)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, violation[1])
    assert outcome.field_violations() == [violation]


@pytest.mark.parametrize("kind", sorted(BAD_CREDENTIALS))
@pytest.mark.parametrize("method", list(DESCRIPTOR.methods_by_name))
def test_every_method_needs_a_valid_access_token(
    hooks: ServicerHarness, webhooks: FakeWebhooks, mint: TokenMint, method: str, kind: str
) -> None:
    mine = seed(webhooks)
    requests: dict[str, Message] = {
        "RegisterWebhook": webhook_pb2.RegisterWebhookRequest(url=PUBLIC_URL, events=["*"]),
        "ListWebhooks": webhook_pb2.ListWebhooksRequest(),
        "DeleteWebhook": webhook_pb2.DeleteWebhookRequest(webhook_id=mine.webhook_id),
        "GetWebhook": webhook_pb2.GetWebhookRequest(webhook_id=mine.webhook_id),
        "RotateWebhookSecret": webhook_pb2.RotateWebhookSecretRequest(webhook_id=mine.webhook_id),
        "EnableWebhook": webhook_pb2.EnableWebhookRequest(webhook_id=mine.webhook_id),
        "SendTestEvent": webhook_pb2.SendTestEventRequest(webhook_id=mine.webhook_id),
        "ListDeliveries": webhook_pb2.ListDeliveriesRequest(webhook_id=mine.webhook_id),
        "ReplayDelivery": webhook_pb2.ReplayDeliveryRequest(
            webhook_id=mine.webhook_id, delivery_id=str(uuid.uuid4())
        ),
        "ReplayParkedDeliveries": webhook_pb2.ReplayParkedDeliveriesRequest(
            webhook_id=mine.webhook_id
        ),
    }
    request = requests[method]
    outcome = hooks.unary(method, request, metadata=mint.bad_credentials(kind, ALICE))
    assert outcome.code is grpc.StatusCode.UNAUTHENTICATED
    assert BAD_CREDENTIALS[kind] in outcome.details
    assert list(webhooks.rows) == [mine.webhook_id]
    assert webhooks.rows[mine.webhook_id][1] == "whsec_seeded"
    assert webhooks.deliveries == []


def test_the_callers_request_id_is_echoed_on_success_and_on_error(
    hooks: ServicerHarness,
) -> None:
    metadata = (("x-request-id", "req-webhook-1"),)
    listed = hooks.unary(
        "ListWebhooks", webhook_pb2.ListWebhooksRequest(), caller=ALICE, metadata=metadata
    )
    refused = hooks.unary(
        "DeleteWebhook",
        webhook_pb2.DeleteWebhookRequest(webhook_id="hook-1"),
        caller=ALICE,
        metadata=metadata,
    )
    assert listed.request_id == refused.request_id == "req-webhook-1"


# --- the webhook-scoped RPCs ----------------------------------------------------------------

DAY = timedelta(hours=24)
SEEDED_SECRET = "whsec_seeded"


def seed_delivery(
    webhooks: FakeWebhooks,
    webhook: Webhook,
    state: str = "succeeded",
    *,
    attempts: tuple[DeliveryAttempt, ...] = (),
    last_error: str = "",
) -> Delivery:
    delivery = Delivery(
        delivery_id=str(uuid.uuid4()),
        webhook_id=webhook.webhook_id,
        event_type="order.paid",
        order_id=str(uuid.uuid4()),
        state=state,
        created_at=T0 + timedelta(seconds=len(webhooks.deliveries)),
        next_attempt_at=T0 + timedelta(minutes=5) if state == "pending" else None,
        last_error=last_error,
        attempts=attempts,
    )
    webhooks.deliveries.append(delivery)
    return delivery


def webhook_requests(webhook_id: str, delivery_id: str | None = None) -> dict[str, Message]:
    """A request of every RPC that names one webhook."""
    return {
        "GetWebhook": webhook_pb2.GetWebhookRequest(webhook_id=webhook_id),
        "DeleteWebhook": webhook_pb2.DeleteWebhookRequest(webhook_id=webhook_id),
        "RotateWebhookSecret": webhook_pb2.RotateWebhookSecretRequest(webhook_id=webhook_id),
        "EnableWebhook": webhook_pb2.EnableWebhookRequest(webhook_id=webhook_id),
        "SendTestEvent": webhook_pb2.SendTestEventRequest(webhook_id=webhook_id),
        "ListDeliveries": webhook_pb2.ListDeliveriesRequest(webhook_id=webhook_id),
        "ReplayDelivery": webhook_pb2.ReplayDeliveryRequest(
            webhook_id=webhook_id, delivery_id=delivery_id or str(uuid.uuid4())
        ),
        "ReplayParkedDeliveries": webhook_pb2.ReplayParkedDeliveriesRequest(webhook_id=webhook_id),
    }


WEBHOOK_METHODS = sorted(webhook_requests("x"))


def test_every_method_naming_a_webhook_is_covered() -> None:
    assert set(WEBHOOK_METHODS) == set(DESCRIPTOR.methods_by_name) - {
        "RegisterWebhook",
        "ListWebhooks",
    }


def test_get_shows_the_webhook_and_its_delivery_health_but_never_the_secret(
    hooks: ServicerHarness, webhooks: FakeWebhooks
) -> None:
    seeded = seed(webhooks)
    failing = dataclasses.replace(
        seeded,
        active=False,
        disabled_reason="disabled after 20 consecutive failed attempts",
        disabled_at=T0 + DAY,
        consecutive_failures=20,
        previous_secret_expires_at=T0 + 2 * DAY,
        pending_deliveries=3,
        parked_deliveries=7,
    )
    webhooks.rows[seeded.webhook_id] = (failing, SEEDED_SECRET)
    request = webhook_pb2.GetWebhookRequest(webhook_id=seeded.webhook_id.upper())
    webhook = hooks.unary("GetWebhook", request, caller=ALICE).ok().webhook
    expected = webhook_pb2.Webhook(
        webhook_id=seeded.webhook_id,
        url=PUBLIC_URL,
        events=["*"],
        description="seeded",
        active=False,
        disabled_reason="disabled after 20 consecutive failed attempts",
        consecutive_failures=20,
        pending_deliveries=3,
        parked_deliveries=7,
    )
    expected.created_at.FromDatetime(T0)
    expected.disabled_at.FromDatetime(T0 + DAY)
    expected.previous_secret_expires_at.FromDatetime(T0 + 2 * DAY)
    assert webhook == expected
    assert webhook.secret == ""


def test_rotation_answers_the_new_secret_once(
    hooks: ServicerHarness, webhooks: FakeWebhooks
) -> None:
    mine = seed(webhooks)
    request = webhook_pb2.RotateWebhookSecretRequest(
        webhook_id=mine.webhook_id, grace_period_seconds=3600
    )
    rotated = hooks.unary("RotateWebhookSecret", request, caller=ALICE).ok().webhook
    assert rotated.secret.startswith("whsec_") and rotated.secret != SEEDED_SECRET
    assert webhooks.rows[mine.webhook_id][1] == rotated.secret
    assert rotated.previous_secret_expires_at.ToDatetime(UTC) == T0 + timedelta(hours=1)
    assert rotated.webhook_id == mine.webhook_id
    got = hooks.unary(
        "GetWebhook", webhook_pb2.GetWebhookRequest(webhook_id=mine.webhook_id), caller=ALICE
    ).ok()
    listed = hooks.unary("ListWebhooks", webhook_pb2.ListWebhooksRequest(), caller=ALICE).ok()
    assert got.webhook.secret == "" and [w.secret for w in listed.webhooks] == [""]
    assert got.webhook.previous_secret_expires_at == rotated.previous_secret_expires_at
    again = hooks.unary("RotateWebhookSecret", request, caller=ALICE).ok().webhook
    assert again.secret not in ("", rotated.secret)


@pytest.mark.parametrize(
    ("grace_seconds", "expires_at"),
    [(None, T0 + DAY), (0, None), (1, T0 + timedelta(seconds=1)), (604800, T0 + 7 * DAY)],
)
def test_the_grace_period_of_a_rotation(
    hooks: ServicerHarness,
    webhooks: FakeWebhooks,
    grace_seconds: int | None,
    expires_at: datetime | None,
) -> None:
    mine = seed(webhooks)
    request = webhook_pb2.RotateWebhookSecretRequest(webhook_id=mine.webhook_id)
    if grace_seconds is not None:
        request.grace_period_seconds = grace_seconds
    rotated = hooks.unary("RotateWebhookSecret", request, caller=ALICE).ok().webhook
    if expires_at is None:
        assert not rotated.HasField("previous_secret_expires_at")
    else:
        assert rotated.previous_secret_expires_at.ToDatetime(UTC) == expires_at


@pytest.mark.parametrize("grace_seconds", [-1, 604801, -(2**31), 2**31 - 1])
def test_a_grace_period_out_of_bounds_is_invalid_and_keeps_the_secret(
    hooks: ServicerHarness, webhooks: FakeWebhooks, grace_seconds: int
) -> None:
    mine = seed(webhooks)
    request = webhook_pb2.RotateWebhookSecretRequest(
        webhook_id=mine.webhook_id, grace_period_seconds=grace_seconds
    )
    outcome = hooks.unary("RotateWebhookSecret", request, caller=ALICE)
    message = "grace_period_seconds must be between 0 and 604800 (7 days)"
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert outcome.field_violations() == [("grace_period_seconds", message)]
    assert webhooks.rows[mine.webhook_id] == (mine, SEEDED_SECRET)


def test_enabling_turns_a_disabled_webhook_back_on(
    hooks: ServicerHarness, webhooks: FakeWebhooks
) -> None:
    seeded = seed(webhooks)
    disabled = dataclasses.replace(
        seeded, active=False, disabled_reason="disabled by its owner", disabled_at=T0 + DAY
    )
    webhooks.rows[seeded.webhook_id] = (disabled, SEEDED_SECRET)
    request = webhook_pb2.EnableWebhookRequest(webhook_id=seeded.webhook_id)
    webhook = hooks.unary("EnableWebhook", request, caller=ALICE).ok().webhook
    assert (webhook.active, webhook.disabled_reason, webhook.HasField("disabled_at")) == (
        True,
        "",
        False,
    )
    assert webhook.secret == ""
    assert webhooks.rows[seeded.webhook_id][0].active


def test_a_test_event_is_a_pending_delivery_of_a_webhook_test_body(
    hooks: ServicerHarness, webhooks: FakeWebhooks
) -> None:
    mine = seed(webhooks)
    request = webhook_pb2.SendTestEventRequest(webhook_id=mine.webhook_id)
    delivery = hooks.unary("SendTestEvent", request, caller=ALICE).ok().delivery
    assert str(uuid.UUID(delivery.delivery_id)) == delivery.delivery_id
    expected = webhook_pb2.Delivery(
        delivery_id=delivery.delivery_id,
        webhook_id=mine.webhook_id,
        event_type="webhook.test",
        state=webhook_pb2.DELIVERY_STATE_PENDING,
    )
    expected.created_at.FromDatetime(T0)
    expected.next_attempt_at.FromDatetime(T0)
    assert delivery == expected
    body = json.loads(webhooks.bodies[delivery.delivery_id])
    assert list(body) == ["id", "type", "created_at", "data"]
    assert (body["id"], body["type"], body["data"]["webhook_id"]) == (
        delivery.delivery_id,
        "webhook.test",
        mine.webhook_id,
    )
    listed = hooks.unary(
        "ListDeliveries",
        webhook_pb2.ListDeliveriesRequest(webhook_id=mine.webhook_id),
        caller=ALICE,
    ).ok()
    assert list(listed.deliveries) == [delivery]


def test_deliveries_are_listed_newest_first_page_by_page(
    hooks: ServicerHarness, webhooks: FakeWebhooks
) -> None:
    mine, other = seed(webhooks), seed(webhooks)
    ours = []
    for n in range(5):
        ours.append(seed_delivery(webhooks, mine, ("succeeded", "failed", "parked")[n % 3]))
        seed_delivery(webhooks, other)
    pages: list[list[str]] = []
    token = ""
    for _ in range(5):
        request = webhook_pb2.ListDeliveriesRequest(
            webhook_id=mine.webhook_id, page_size=2, page_token=token
        )
        page = hooks.unary("ListDeliveries", request, caller=ALICE).ok()
        pages.append([d.delivery_id for d in page.deliveries])
        token = page.next_page_token
        if not token:
            break
    newest_first = [d.delivery_id for d in reversed(ours)]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]


def test_a_listed_delivery_shows_its_attempts(
    hooks: ServicerHarness, webhooks: FakeWebhooks
) -> None:
    mine = seed(webhooks)
    attempts = (
        DeliveryAttempt(2, T0 + timedelta(minutes=1), 35, 503, "busy", "HTTP 503"),
        DeliveryAttempt(1, T0, 5001, None, "", "timed out after 5 s"),
    )
    stored = seed_delivery(webhooks, mine, "pending", attempts=attempts, last_error="HTTP 503")
    request = webhook_pb2.ListDeliveriesRequest(webhook_id=mine.webhook_id)
    page = hooks.unary("ListDeliveries", request, caller=ALICE).ok()
    expected = webhook_pb2.Delivery(
        delivery_id=stored.delivery_id,
        webhook_id=mine.webhook_id,
        event_type="order.paid",
        order_id=stored.order_id or "",
        state=webhook_pb2.DELIVERY_STATE_PENDING,
        attempts=[
            webhook_pb2.DeliveryAttempt(
                number=2, latency_ms=35, status_code=503, response_excerpt="busy", error="HTTP 503"
            ),
            webhook_pb2.DeliveryAttempt(number=1, latency_ms=5001, error="timed out after 5 s"),
        ],
        last_error="HTTP 503",
    )
    expected.created_at.FromDatetime(stored.created_at)
    expected.next_attempt_at.FromDatetime(T0 + timedelta(minutes=5))
    expected.attempts[0].started_at.FromDatetime(T0 + timedelta(minutes=1))
    expected.attempts[1].started_at.FromDatetime(T0)
    assert list(page.deliveries) == [expected]
    assert page.next_page_token == ""


def test_a_page_size_of_zero_means_twenty(hooks: ServicerHarness, webhooks: FakeWebhooks) -> None:
    mine = seed(webhooks)
    for _ in range(25):
        seed_delivery(webhooks, mine)
    request = webhook_pb2.ListDeliveriesRequest(webhook_id=mine.webhook_id)
    first = hooks.unary("ListDeliveries", request, caller=ALICE).ok()
    assert len(first.deliveries) == 20 and first.next_page_token
    request.page_token = first.next_page_token
    second = hooks.unary("ListDeliveries", request, caller=ALICE).ok()
    assert (len(second.deliveries), second.next_page_token) == (5, "")


@pytest.mark.parametrize(
    ("state", "wanted"),
    [
        ("parked", "parked"),
        ("DELIVERY_STATE_FAILED", "failed"),
        ("Pending", "pending"),
        ("", None),
    ],
)
def test_deliveries_are_filtered_by_state(
    hooks: ServicerHarness, webhooks: FakeWebhooks, state: str, wanted: str | None
) -> None:
    mine = seed(webhooks)
    for kind in ("pending", "succeeded", "failed", "parked", "parked"):
        seed_delivery(webhooks, mine, kind)
    request = webhook_pb2.ListDeliveriesRequest(webhook_id=mine.webhook_id, state=state)
    page = hooks.unary("ListDeliveries", request, caller=ALICE).ok()
    expected = [d.delivery_id for d in reversed(webhooks.deliveries) if wanted in (None, d.state)]
    assert [d.delivery_id for d in page.deliveries] == expected


@pytest.mark.parametrize(
    ("request_", "violation"),
    [
        (
            webhook_pb2.ListDeliveriesRequest(page_size=101),
            ("page_size", "page_size must be between 1 and 100"),
        ),
        (
            webhook_pb2.ListDeliveriesRequest(page_size=-1),
            ("page_size", "page_size must be between 1 and 100"),
        ),
        (
            webhook_pb2.ListDeliveriesRequest(page_token="bm90LWEtdG9rZW4"),
            (
                "page_token",
                "page_token is not one this API returned; pass a next_page_token or nothing",
            ),
        ),
        (
            # The API's form, with a position no page can have.
            webhook_pb2.ListDeliveriesRequest(page_token="ZDE6LTE"),
            (
                "page_token",
                "page_token is not one this API returned; pass a next_page_token or nothing",
            ),
        ),
        (
            webhook_pb2.ListDeliveriesRequest(state="delivered"),
            ("state", "state must be one of pending, succeeded, failed, parked"),
        ),
    ],
)
def test_a_bad_delivery_listing_is_invalid_naming_the_field(
    hooks: ServicerHarness,
    webhooks: FakeWebhooks,
    request_: webhook_pb2.ListDeliveriesRequest,
    violation: tuple[str, str],
) -> None:
    request_.webhook_id = seed(webhooks).webhook_id
    outcome = hooks.unary("ListDeliveries", request_, caller=ALICE)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, violation[1])
    assert outcome.field_violations() == [violation]


@pytest.mark.parametrize("state", ["succeeded", "failed", "parked"])
def test_a_finished_delivery_is_replayed(
    hooks: ServicerHarness, webhooks: FakeWebhooks, state: str
) -> None:
    mine = seed(webhooks)
    finished = seed_delivery(webhooks, mine, state, last_error="HTTP 410")
    request = webhook_pb2.ReplayDeliveryRequest(
        webhook_id=mine.webhook_id, delivery_id=finished.delivery_id.upper()
    )
    replayed = hooks.unary("ReplayDelivery", request, caller=ALICE).ok().delivery
    assert (replayed.delivery_id, replayed.state) == (
        finished.delivery_id,
        webhook_pb2.DELIVERY_STATE_PENDING,
    )
    assert webhooks.deliveries[0].state == "pending"


def test_a_pending_delivery_cannot_be_replayed(
    hooks: ServicerHarness, webhooks: FakeWebhooks
) -> None:
    mine = seed(webhooks)
    pending = seed_delivery(webhooks, mine, "pending")
    request = webhook_pb2.ReplayDeliveryRequest(
        webhook_id=mine.webhook_id, delivery_id=pending.delivery_id
    )
    outcome = hooks.unary("ReplayDelivery", request, caller=ALICE)
    assert outcome.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "still pending" in outcome.details
    assert webhooks.deliveries == [pending]


def test_a_delivery_of_another_webhook_is_not_found_through_this_one(
    hooks: ServicerHarness, webhooks: FakeWebhooks
) -> None:
    mine, other = seed(webhooks), seed(webhooks)
    elsewhere = seed_delivery(webhooks, other, "failed")
    theirs = seed_delivery(webhooks, seed(webhooks, owner=BOB), "failed")
    for delivery_id in (elsewhere.delivery_id, theirs.delivery_id, str(uuid.uuid4())):
        request = webhook_pb2.ReplayDeliveryRequest(
            webhook_id=mine.webhook_id, delivery_id=delivery_id
        )
        outcome = hooks.unary("ReplayDelivery", request, caller=ALICE)
        assert (outcome.code, outcome.details) == (grpc.StatusCode.NOT_FOUND, "delivery not found")
    assert [d.state for d in webhooks.deliveries] == ["failed", "failed"]


def test_parked_deliveries_are_replayed_together(
    hooks: ServicerHarness, webhooks: FakeWebhooks
) -> None:
    mine, other = seed(webhooks), seed(webhooks)
    for kind in ("parked", "failed", "parked", "succeeded"):
        seed_delivery(webhooks, mine, kind)
    seed_delivery(webhooks, other, "parked")
    request = webhook_pb2.ReplayParkedDeliveriesRequest(webhook_id=mine.webhook_id)
    assert hooks.unary("ReplayParkedDeliveries", request, caller=ALICE).ok().replayed == 2
    assert [d.state for d in webhooks.deliveries] == [
        "pending",
        "failed",
        "pending",
        "succeeded",
        "parked",
    ]
    assert hooks.unary("ReplayParkedDeliveries", request, caller=ALICE).ok().replayed == 0


@pytest.mark.parametrize("method", WEBHOOK_METHODS)
def test_another_users_webhook_is_not_found_like_a_missing_one(
    hooks: ServicerHarness, webhooks: FakeWebhooks, method: str
) -> None:
    bobs = seed(webhooks, owner=BOB)
    parked = seed_delivery(webhooks, bobs, "parked")
    before = (dict(webhooks.rows), list(webhooks.deliveries), dict(webhooks.bodies))
    theirs = hooks.unary(
        method, webhook_requests(bobs.webhook_id, parked.delivery_id)[method], caller=ALICE
    )
    missing = hooks.unary(method, webhook_requests(str(uuid.uuid4()))[method], caller=ALICE)
    assert (theirs.code, theirs.details) == (grpc.StatusCode.NOT_FOUND, "webhook not found")
    assert (missing.code, missing.details) == (theirs.code, theirs.details)
    assert theirs.status().details == missing.status().details == []
    assert (dict(webhooks.rows), list(webhooks.deliveries), dict(webhooks.bodies)) == before
    # Bob still reaches it.
    assert hooks.unary(
        "GetWebhook", webhook_pb2.GetWebhookRequest(webhook_id=bobs.webhook_id), caller=BOB
    ).ok()


@pytest.mark.parametrize("method", WEBHOOK_METHODS)
@pytest.mark.parametrize(
    ("webhook_id", "violation"),
    [
        ("hook-1", "webhook_id must be a UUID"),
        ("", "webhook_id must be a UUID"),
        ("../" + str(uuid.uuid4()), "webhook_id must be a UUID"),
        ("w" * 65, "webhook_id is 65 characters long; at most 64 are allowed"),
        (str(uuid.uuid4()) + "\x00", "webhook_id contains a NUL character"),
    ],
)
def test_a_bad_webhook_id_is_invalid_for_every_method(
    hooks: ServicerHarness, webhooks: FakeWebhooks, method: str, webhook_id: str, violation: str
) -> None:
    seed_delivery(webhooks, seed(webhooks), "parked")
    before = (dict(webhooks.rows), list(webhooks.deliveries))
    outcome = hooks.unary(method, webhook_requests(webhook_id)[method], caller=ALICE)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, violation)
    assert outcome.field_violations() == [("webhook_id", violation)]
    assert (dict(webhooks.rows), list(webhooks.deliveries)) == before


@pytest.mark.parametrize(
    ("delivery_id", "violation"),
    [
        ("delivery-1", "delivery_id must be a UUID"),
        ("", "delivery_id must be a UUID"),
        ("d" * 65, "delivery_id is 65 characters long; at most 64 are allowed"),
        ("\x00" + str(uuid.uuid4()), "delivery_id contains a NUL character"),
    ],
)
def test_a_bad_delivery_id_is_invalid(
    hooks: ServicerHarness, webhooks: FakeWebhooks, delivery_id: str, violation: str
) -> None:
    request = webhook_pb2.ReplayDeliveryRequest(
        webhook_id=seed(webhooks).webhook_id, delivery_id=delivery_id
    )
    outcome = hooks.unary("ReplayDelivery", request, caller=ALICE)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, violation)
    assert outcome.field_violations() == [("delivery_id", violation)]


@pytest.mark.parametrize(
    ("page_token", "state", "violation"),
    [
        (
            "t" * 129,
            "",
            ("page_token", "page_token is 129 characters long; at most 128 are allowed"),
        ),
        ("ZDE6NQ\x00", "", ("page_token", "page_token contains a NUL character")),
        ("", "s" * 33, ("state", "state is 33 characters long; at most 32 are allowed")),
        ("", "parked\x00", ("state", "state contains a NUL character")),
    ],
)
def test_a_delivery_listing_beyond_the_contract_is_invalid(
    hooks: ServicerHarness,
    webhooks: FakeWebhooks,
    page_token: str,
    state: str,
    violation: tuple[str, str],
) -> None:
    request = webhook_pb2.ListDeliveriesRequest(
        webhook_id=seed(webhooks).webhook_id, page_token=page_token, state=state
    )
    outcome = hooks.unary("ListDeliveries", request, caller=ALICE)
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    assert outcome.field_violations() == [violation]


def test_the_contract_reports_every_field_beyond_it_at_once(hooks: ServicerHarness) -> None:
    request = webhook_pb2.ReplayDeliveryRequest(webhook_id="w" * 65, delivery_id="\x00")
    outcome = hooks.unary("ReplayDelivery", request, caller=ALICE)
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    assert outcome.field_violations() == [
        ("webhook_id", "webhook_id is 65 characters long; at most 64 are allowed"),
        ("delivery_id", "delivery_id contains a NUL character"),
    ]
