"""One function per webhook command or query, taking its ports as arguments."""

from services.common.clock import new_id
from services.common.errors import NotFound
from services.webhook.domain.commands import DeleteWebhook, RegisterWebhook
from services.webhook.domain.model import NewWebhook, RegisteredWebhook, Webhook
from services.webhook.domain.ports import HostResolver, WebhookRepository
from services.webhook.domain.rules import (
    ensure_capacity,
    ensure_public_target,
    new_signing_secret,
    normalise_events,
    parse_target,
    parse_webhook_id,
    validate_description,
)


async def register_webhook(
    command: RegisterWebhook,
    webhooks: WebhookRepository,
    resolver: HostResolver,
    *,
    allow_private_targets: bool,
) -> RegisteredWebhook:
    target = parse_target(command.url)
    events = normalise_events(command.events)
    description = validate_description(command.description)
    if not allow_private_targets:
        ensure_public_target(target, await resolver.resolve(target.host, target.port))
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
            raise NotFound("webhook not found")
