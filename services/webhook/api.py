"""WebhookService over gRPC: translates protos to commands and results back."""

from typing import Any

import grpc
from ordermesh.webhook.v1 import webhook_pb2, webhook_pb2_grpc

from services.platform.convert import timestamp
from services.platform.interceptors import current_principal
from services.webhook import handlers
from services.webhook.domain.commands import DeleteWebhook, RegisterWebhook
from services.webhook.domain.model import Webhook
from services.webhook.domain.ports import HostResolver, WebhookRepository
from services.webhook.settings import WebhookSettings

SERVICE = "ordermesh.webhook.v1.WebhookService"

Context = grpc.aio.ServicerContext[Any, Any]


def webhook_to_proto(webhook: Webhook, secret: str = "") -> webhook_pb2.Webhook:
    return webhook_pb2.Webhook(
        webhook_id=webhook.webhook_id,
        url=webhook.url,
        events=webhook.events,
        description=webhook.description,
        active=webhook.active,
        secret=secret,
        created_at=timestamp(webhook.created_at),
    )


class WebhookApi(webhook_pb2_grpc.WebhookServiceServicer):
    def __init__(
        self, webhooks: WebhookRepository, resolver: HostResolver, settings: WebhookSettings
    ) -> None:
        self._webhooks = webhooks
        self._resolver = resolver
        self._settings = settings

    async def RegisterWebhook(
        self, request: webhook_pb2.RegisterWebhookRequest, context: Context
    ) -> webhook_pb2.RegisterWebhookResponse:
        command = RegisterWebhook(
            user_id=current_principal().user_id,
            url=request.url,
            events=tuple(request.events),
            description=request.description,
        )
        registered = await handlers.register_webhook(
            command,
            self._webhooks,
            self._resolver,
            allow_private_targets=self._settings.allow_private_targets,
        )
        return webhook_pb2.RegisterWebhookResponse(
            webhook=webhook_to_proto(registered.webhook, registered.secret)
        )

    async def ListWebhooks(
        self, request: webhook_pb2.ListWebhooksRequest, context: Context
    ) -> webhook_pb2.ListWebhooksResponse:
        webhooks = await handlers.list_webhooks(current_principal().user_id, self._webhooks)
        return webhook_pb2.ListWebhooksResponse(webhooks=[webhook_to_proto(w) for w in webhooks])

    async def DeleteWebhook(
        self, request: webhook_pb2.DeleteWebhookRequest, context: Context
    ) -> webhook_pb2.DeleteWebhookResponse:
        await handlers.delete_webhook(
            DeleteWebhook(user_id=current_principal().user_id, webhook_id=request.webhook_id),
            self._webhooks,
        )
        return webhook_pb2.DeleteWebhookResponse()
