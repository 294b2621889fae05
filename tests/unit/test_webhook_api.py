"""WebhookService's servicer through grpc_testing, behind the platform interceptor, over a
fake repository and resolver: every RPC's translation (the secret shown once), its errors'
statuses and details, the contract's bounds and tokens."""

import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.message import Message
from ordermesh.webhook.v1 import webhook_pb2, webhook_pb2_grpc

from services.common.identity import Principal, Role, Tier
from services.webhook.api import WebhookApi
from services.webhook.domain.model import MAX_WEBHOOKS_PER_USER, Webhook
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
