"""WebhookService over real gRPC against real Postgres, with tokens from the real auth
service: registration, listing, deletion, ownership, limits and target refusal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from ordermesh.webhook.v1 import webhook_pb2, webhook_pb2_grpc

from services.auth import bootstrap as auth_bootstrap
from services.platform.db import Pool
from services.platform.resources import Resources
from services.platform.server import Component
from services.platform.settings import Settings
from services.webhook import bootstrap as webhook_bootstrap
from services.webhook.adapters.secrets import SecretCipher
from services.webhook.domain.model import MAX_WEBHOOKS_PER_USER
from services.webhook.settings import ALLOWED_NETWORKS
from tests.integration.grpc_harness import GrpcStack, grpc_stack, rpc_error, sign_in

pytestmark = pytest.mark.integration

LOOPBACK_URL = "http://127.0.0.1:9/ordermesh-hook"

Metadata = tuple[tuple[str, str]]


def webhooks_allowing_private_targets(resources: Resources) -> Component:
    return webhook_bootstrap.component(resources, env={ALLOWED_NETWORKS: "0.0.0.0/0,::/0"})


def webhooks_refusing_private_targets(resources: Resources) -> Component:
    return webhook_bootstrap.component(resources, env={})


@pytest.fixture(scope="module")
async def permissive(settings: Settings, pool: Pool) -> AsyncIterator[GrpcStack]:
    components = [auth_bootstrap.component, webhooks_allowing_private_targets]
    async with grpc_stack(settings, pool, components) as running:
        yield running


@pytest.fixture(scope="module")
async def strict(settings: Settings, pool: Pool) -> AsyncIterator[GrpcStack]:
    components = [auth_bootstrap.component, webhooks_refusing_private_targets]
    async with grpc_stack(settings, pool, components) as running:
        yield running


async def new_user(stack: GrpcStack) -> Metadata:
    return (await sign_in(stack.channel)).metadata


def stub(stack: GrpcStack) -> webhook_pb2_grpc.WebhookServiceAsyncStub:
    return webhook_pb2_grpc.WebhookServiceStub(stack.channel)


async def register(
    stack: GrpcStack, user: Metadata, url: str = LOOPBACK_URL, events: tuple[str, ...] = ("*",)
) -> webhook_pb2.Webhook:
    response = await stub(stack).RegisterWebhook(
        webhook_pb2.RegisterWebhookRequest(url=url, events=events, description="orders"),
        metadata=user,
    )
    return response.webhook


async def listed(stack: GrpcStack, user: Metadata) -> list[webhook_pb2.Webhook]:
    response = await stub(stack).ListWebhooks(webhook_pb2.ListWebhooksRequest(), metadata=user)
    return list(response.webhooks)


async def test_register_list_and_delete(permissive: GrpcStack) -> None:
    user = await new_user(permissive)
    created = await register(permissive, user, events=("order.paid", "order.shipped"))
    assert uuid.UUID(created.webhook_id)
    assert (created.url, list(created.events), created.description, created.active) == (
        LOOPBACK_URL,
        ["order.paid", "order.shipped"],
        "orders",
        True,
    )
    assert created.secret.startswith("whsec_") and len(created.secret) == len("whsec_") + 44
    assert created.created_at.seconds > 0

    [shown] = await listed(permissive, user)
    expected = webhook_pb2.Webhook()
    expected.CopyFrom(created)
    expected.ClearField("secret")
    assert shown == expected

    delete = webhook_pb2.DeleteWebhookRequest(webhook_id=created.webhook_id)
    await stub(permissive).DeleteWebhook(delete, metadata=user)
    assert await listed(permissive, user) == []
    error = await rpc_error(stub(permissive).DeleteWebhook(delete, metadata=user))
    assert error.code() is grpc.StatusCode.NOT_FOUND


async def test_users_see_and_delete_only_their_own(permissive: GrpcStack) -> None:
    owner, stranger = await new_user(permissive), await new_user(permissive)
    created = await register(permissive, owner)
    assert await listed(permissive, stranger) == []
    error = await rpc_error(
        stub(permissive).DeleteWebhook(
            webhook_pb2.DeleteWebhookRequest(webhook_id=created.webhook_id), metadata=stranger
        )
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert [w.webhook_id for w in await listed(permissive, owner)] == [created.webhook_id]


async def test_the_secret_is_stored_encrypted(
    permissive: GrpcStack, pool: Pool, settings: Settings
) -> None:
    created = await register(permissive, await new_user(permissive))
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT secret_encrypted FROM webhook.webhooks WHERE webhook_id = %s",
            (created.webhook_id,),
        )
        row = await cursor.fetchone()
    assert row is not None
    sealed = bytes(row["secret_encrypted"])
    assert created.secret.encode() not in sealed
    assert SecretCipher(settings.require_key_encryption_secret()).decrypt(sealed) == created.secret


@pytest.mark.parametrize(
    "url",
    [
        LOOPBACK_URL,
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/hook",
        "https://192.168.1.10/hook",
        "http://224.0.0.1/hook",
        "http://100.64.0.1/hook",  # CGNAT
        "http://[64:ff9b::10.0.0.1]/hook",  # NAT64 of a private address
        "http://[64:ff9b::7f00:1]/hook",  # NAT64 of loopback
        "http://[64:ff9b:1::a00:1]/hook",  # the local-use NAT64 prefix
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
        "HTTP://LOCALHOST/hook",  # a name resolving to loopback, in capitals
    ],
)
async def test_private_targets_are_refused_unless_allowed(strict: GrpcStack, url: str) -> None:
    user = await new_user(strict)
    error = await rpc_error(register(strict, user, url))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "url" in (error.details() or "")
    assert await listed(strict, user) == []


async def test_public_targets_are_accepted_when_private_ones_are_refused(
    strict: GrpcStack,
) -> None:
    user = await new_user(strict)
    created = await register(strict, user, "https://1.1.1.1/ordermesh-test-hook")
    assert created.url == "https://1.1.1.1/ordermesh-test-hook"


@pytest.mark.parametrize(
    ("url", "events", "field"),
    [
        ("ftp://example.com/hook", ("*",), "url"),
        ("http://127.0.0.1/" + "x" * 2048, ("*",), "url"),
        (LOOPBACK_URL, (), "events"),
        (LOOPBACK_URL, ("order.created", "order.exploded"), "events"),
    ],
)
async def test_bad_registrations_are_refused(
    permissive: GrpcStack, url: str, events: tuple[str, ...], field: str
) -> None:
    error = await rpc_error(register(permissive, await new_user(permissive), url, events))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in (error.details() or "")


async def test_at_most_twenty_webhooks_per_user_even_when_registered_at_once(
    permissive: GrpcStack,
) -> None:
    user = await new_user(permissive)
    attempts = MAX_WEBHOOKS_PER_USER + 5
    results = await asyncio.gather(
        *(register(permissive, user) for _ in range(attempts)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == attempts - MAX_WEBHOOKS_PER_USER
    assert {error.code() for error in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert len(await listed(permissive, user)) == MAX_WEBHOOKS_PER_USER


async def test_webhook_calls_need_a_token(permissive: GrpcStack) -> None:
    error = await rpc_error(stub(permissive).ListWebhooks(webhook_pb2.ListWebhooksRequest()))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
