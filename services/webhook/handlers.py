"""One function per webhook command or query, taking its ports as arguments."""

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from services.common.clock import new_id, utc_now
from services.common.errors import NotFound
from services.webhook.domain.commands import DeleteWebhook, RegisterWebhook
from services.webhook.domain.delivery import TEST_EVENT, delivery_body, test_event_data
from services.webhook.domain.model import (
    Delivery,
    DeliveryPage,
    NewWebhook,
    RegisteredWebhook,
    Webhook,
)
from services.webhook.domain.ports import HostResolver, NewDelivery, WebhookRepository
from services.webhook.domain.rules import (
    Address,
    ensure_capacity,
    ensure_public_target,
    new_signing_secret,
    normalise_events,
    page_size,
    page_token,
    parse_delivery_id,
    parse_delivery_state,
    parse_page_token,
    parse_target,
    parse_webhook_id,
    rotation_grace,
    validate_description,
)

WEBHOOK_NOT_FOUND = "webhook not found"
T = TypeVar("T")


async def register_webhook(
    command: RegisterWebhook,
    webhooks: WebhookRepository,
    resolver: HostResolver,
    *,
    allowed: Callable[[Address], bool] | None = None,
) -> RegisteredWebhook:
    target = parse_target(command.url)
    events = normalise_events(command.events)
    description = validate_description(command.description)
    ensure_public_target(target, await resolver.resolve(target.host, target.port), allowed)
    secret = new_signing_secret()
    async with webhooks.owned_by(command.user_id) as owned:
        ensure_capacity(await owned.count())
        webhook = await owned.add(
            NewWebhook(
                webhook_id=new_id(),
                user_id=command.user_id,
                url=target.url,
                events=events,
                description=description,
            ),
            secret,
        )
    return RegisteredWebhook(webhook=webhook, secret=secret)


async def list_webhooks(user_id: str, webhooks: WebhookRepository) -> list[Webhook]:
    async with webhooks.owned_by(user_id) as owned:
        return await owned.list()


async def delete_webhook(command: DeleteWebhook, webhooks: WebhookRepository) -> None:
    webhook_id = parse_webhook_id(command.webhook_id)
    async with webhooks.owned_by(command.user_id) as owned:
        if not await owned.delete(webhook_id):
            raise NotFound(WEBHOOK_NOT_FOUND)


def _found(value: T | None, what: str = WEBHOOK_NOT_FOUND) -> T:
    if value is None:
        raise NotFound(what)
    return value


async def get_webhook(user_id: str, webhook_id: str, webhooks: WebhookRepository) -> Webhook:
    webhook_id = parse_webhook_id(webhook_id)
    async with webhooks.owned_by(user_id) as owned:
        return _found(await owned.get(webhook_id))


async def rotate_secret(
    user_id: str,
    webhook_id: str,
    grace_seconds: int | None,
    webhooks: WebhookRepository,
    *,
    default_grace: timedelta,
) -> RegisteredWebhook:
    webhook_id = parse_webhook_id(webhook_id)
    grace = rotation_grace(grace_seconds, default_grace)
    secret = new_signing_secret()
    async with webhooks.owned_by(user_id) as owned:
        webhook = _found(await owned.rotate_secret(webhook_id, secret, grace))
    return RegisteredWebhook(webhook=webhook, secret=secret)


async def enable_webhook(user_id: str, webhook_id: str, webhooks: WebhookRepository) -> Webhook:
    webhook_id = parse_webhook_id(webhook_id)
    async with webhooks.owned_by(user_id) as owned:
        return _found(await owned.enable(webhook_id))


async def send_test_event(user_id: str, webhook_id: str, webhooks: WebhookRepository) -> Delivery:
    webhook_id = parse_webhook_id(webhook_id)
    delivery_id = new_id()
    body = delivery_body(delivery_id, TEST_EVENT, utc_now(), test_event_data(webhook_id))
    async with webhooks.owned_by(user_id) as owned:
        return _found(
            await owned.add_delivery(
                webhook_id, NewDelivery(delivery_id, new_id(), TEST_EVENT, body)
            )
        )


async def list_deliveries(
    user_id: str,
    webhook_id: str,
    *,
    size: int,
    token: str,
    state: str,
    webhooks: WebhookRepository,
) -> DeliveryPage:
    webhook_id = parse_webhook_id(webhook_id)
    limit = page_size(size)
    before = parse_page_token(token)
    wanted = parse_delivery_state(state)
    async with webhooks.owned_by(user_id) as owned:
        found, position = _found(
            await owned.deliveries(webhook_id, state=wanted, before=before, limit=limit)
        )
    return DeliveryPage(found, page_token(position))


async def replay_delivery(
    user_id: str, webhook_id: str, delivery_id: str, webhooks: WebhookRepository
) -> Delivery:
    webhook_id = parse_webhook_id(webhook_id)
    delivery_id = parse_delivery_id(delivery_id)
    async with webhooks.owned_by(user_id) as owned:
        _found(await owned.get(webhook_id))
        return _found(await owned.replay(webhook_id, delivery_id), "delivery not found")


async def replay_parked(user_id: str, webhook_id: str, webhooks: WebhookRepository) -> int:
    webhook_id = parse_webhook_id(webhook_id)
    async with webhooks.owned_by(user_id) as owned:
        return _found(await owned.replay_parked(webhook_id))
