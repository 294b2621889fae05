"""The webhook handlers against in-memory fakes of their ports."""

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.webhook import handlers
from services.webhook.adapters.resolver import DnsResolver
from services.webhook.adapters.secrets import SecretCipher
from services.webhook.domain.commands import DeleteWebhook, RegisterWebhook
from services.webhook.domain.model import MAX_WEBHOOKS_PER_USER
from tests.unit.fakes.webhook import FakeResolver, FakeWebhooks

PUBLIC_URL = "https://hooks.example.com/orders"


RESOLVER = FakeResolver(
    {
        "hooks.example.com": ["93.184.215.14"],
        "intranet.example.com": ["10.0.0.8"],
        "split.example.com": ["93.184.215.14", "127.0.0.1"],
    }
)


async def register(
    webhooks: FakeWebhooks,
    url: str = PUBLIC_URL,
    *,
    user_id: str = "alice",
    allow_private: bool = False,
    events: tuple[str, ...] = ("order.paid",),
) -> str:
    command = RegisterWebhook(user_id=user_id, url=url, events=events, description=" mine ")
    registered = await handlers.register_webhook(
        command, webhooks, RESOLVER, allowed=(lambda address: True) if allow_private else None
    )
    return registered.webhook.webhook_id


async def test_registration_stores_the_webhook_and_returns_its_secret_once() -> None:
    webhooks = FakeWebhooks()
    command = RegisterWebhook("alice", PUBLIC_URL, ("order.paid", "order.paid"), " mine ")
    registered = await handlers.register_webhook(command, webhooks, RESOLVER, allowed=None)
    webhook = registered.webhook
    assert (webhook.user_id, webhook.url, webhook.events, webhook.description) == (
        "alice",
        PUBLIC_URL,
        ("order.paid",),
        "mine",
    )
    assert registered.secret.startswith("whsec_")
    assert webhooks.rows[webhook.webhook_id] == (webhook, registered.secret)
    assert "whsec_" not in repr(registered)


@pytest.mark.parametrize(
    "url",
    [
        "https://intranet.example.com/hook",
        "https://split.example.com/hook",
        "https://unknown.example.com/hook",
        "http://127.0.0.1:8080/hook",
    ],
)
async def test_private_or_unresolvable_targets_are_refused(url: str) -> None:
    webhooks = FakeWebhooks()
    with pytest.raises(InvalidArgument) as raised:
        await register(webhooks, url)
    assert raised.value.field == "url"
    assert webhooks.rows == {}


async def test_private_targets_are_accepted_when_allowed() -> None:
    resolver = FakeResolver({})
    command = RegisterWebhook("alice", "http://127.0.0.1:9/hook", ("*",))
    registered = await handlers.register_webhook(
        command, FakeWebhooks(), resolver, allowed=lambda address: True
    )
    assert registered.webhook.url == "http://127.0.0.1:9/hook"
    assert resolver.asked == [("127.0.0.1", 9)]


async def test_validation_happens_before_anything_is_stored() -> None:
    webhooks = FakeWebhooks()
    with pytest.raises(InvalidArgument):
        await register(webhooks, events=("order.teleported",))
    assert webhooks.rows == {}


async def test_a_user_may_register_at_most_the_limit() -> None:
    webhooks = FakeWebhooks()
    for _ in range(MAX_WEBHOOKS_PER_USER):
        await register(webhooks)
    with pytest.raises(FailedPrecondition):
        await register(webhooks)
    await register(webhooks, user_id="bob")


async def test_users_list_and_delete_only_their_own_webhooks() -> None:
    webhooks = FakeWebhooks()
    mine = await register(webhooks, user_id="alice")
    theirs = await register(webhooks, user_id="bob")
    assert [w.webhook_id for w in await handlers.list_webhooks("alice", webhooks)] == [mine]
    with pytest.raises(NotFound):
        await handlers.delete_webhook(DeleteWebhook("alice", theirs), webhooks)
    await handlers.delete_webhook(DeleteWebhook("alice", mine), webhooks)
    assert await handlers.list_webhooks("alice", webhooks) == []
    with pytest.raises(NotFound):
        await handlers.delete_webhook(DeleteWebhook("alice", mine), webhooks)
    assert [w.webhook_id for w in await handlers.list_webhooks("bob", webhooks)] == [theirs]


async def test_deleting_needs_a_uuid() -> None:
    with pytest.raises(InvalidArgument, match="UUID"):
        await handlers.delete_webhook(DeleteWebhook("alice", "../etc"), FakeWebhooks())


async def test_the_resolver_reads_local_names_and_literals_and_reports_failure_as_empty() -> None:
    resolver = DnsResolver()
    assert "127.0.0.1" in await resolver.resolve("localhost", 443)
    assert await resolver.resolve("203.0.113.9", 443) == ["203.0.113.9"]
    assert await resolver.resolve("bad..name", 443) == []


def test_secrets_are_encrypted_at_rest_and_recoverable_with_the_same_key() -> None:
    sealed = SecretCipher("key-encryption-secret").encrypt("whsec_abc")
    assert b"whsec_abc" not in sealed
    assert SecretCipher("key-encryption-secret").decrypt(sealed) == "whsec_abc"
