"""WebhookService over gRPC: translates protos to commands and results back."""

from typing import Any

import grpc
from ordermesh.webhook.v1 import webhook_pb2, webhook_pb2_grpc

from services.platform.convert import timestamp
from services.platform.interceptors import current_principal
from services.webhook import handlers
from services.webhook.domain.commands import DeleteWebhook, RegisterWebhook
from services.webhook.domain.model import Delivery, DeliveryAttempt, Webhook
from services.webhook.domain.ports import HostResolver, WebhookRepository
from services.webhook.settings import WebhookSettings

SERVICE = "ordermesh.webhook.v1.WebhookService"

Context = grpc.aio.ServicerContext[Any, Any]

_STATES = {
    "pending": webhook_pb2.DELIVERY_STATE_PENDING,
    "succeeded": webhook_pb2.DELIVERY_STATE_SUCCEEDED,
    "failed": webhook_pb2.DELIVERY_STATE_FAILED,
    "parked": webhook_pb2.DELIVERY_STATE_PARKED,
}


def webhook_to_proto(webhook: Webhook, secret: str = "") -> webhook_pb2.Webhook:
    return webhook_pb2.Webhook(
        webhook_id=webhook.webhook_id,
        url=webhook.url,
        events=webhook.events,
        description=webhook.description,
        active=webhook.active,
        secret=secret,
        created_at=timestamp(webhook.created_at),
        disabled_reason=webhook.disabled_reason,
        disabled_at=timestamp(webhook.disabled_at),
        consecutive_failures=webhook.consecutive_failures,
        previous_secret_expires_at=timestamp(webhook.previous_secret_expires_at),
        pending_deliveries=webhook.pending_deliveries,
        parked_deliveries=webhook.parked_deliveries,
    )


def attempt_to_proto(attempt: DeliveryAttempt) -> webhook_pb2.DeliveryAttempt:
    return webhook_pb2.DeliveryAttempt(
        number=attempt.number,
        started_at=timestamp(attempt.started_at),
        latency_ms=attempt.latency_ms,
        status_code=attempt.status_code or 0,
        response_excerpt=attempt.response_excerpt,
        error=attempt.error,
    )


def delivery_to_proto(delivery: Delivery) -> webhook_pb2.Delivery:
    return webhook_pb2.Delivery(
        delivery_id=delivery.delivery_id,
        webhook_id=delivery.webhook_id,
        event_type=delivery.event_type,
        order_id=delivery.order_id or "",
        state=_STATES[delivery.state],
        created_at=timestamp(delivery.created_at),
        next_attempt_at=timestamp(delivery.next_attempt_at),
        attempts=[attempt_to_proto(attempt) for attempt in delivery.attempts],
        last_error=delivery.last_error,
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
            command, self._webhooks, self._resolver, allowed=self._settings.allows
        )
        return webhook_pb2.RegisterWebhookResponse(
            webhook=webhook_to_proto(registered.webhook, registered.secret)
        )

    async def ListWebhooks(
        self, request: webhook_pb2.ListWebhooksRequest, context: Context
    ) -> webhook_pb2.ListWebhooksResponse:
        webhooks = await handlers.list_webhooks(current_principal().user_id, self._webhooks)
        return webhook_pb2.ListWebhooksResponse(webhooks=[webhook_to_proto(w) for w in webhooks])

    async def GetWebhook(
        self, request: webhook_pb2.GetWebhookRequest, context: Context
    ) -> webhook_pb2.GetWebhookResponse:
        webhook = await handlers.get_webhook(
            current_principal().user_id, request.webhook_id, self._webhooks
        )
        return webhook_pb2.GetWebhookResponse(webhook=webhook_to_proto(webhook))

    async def DeleteWebhook(
        self, request: webhook_pb2.DeleteWebhookRequest, context: Context
    ) -> webhook_pb2.DeleteWebhookResponse:
        await handlers.delete_webhook(
            DeleteWebhook(user_id=current_principal().user_id, webhook_id=request.webhook_id),
            self._webhooks,
        )
        return webhook_pb2.DeleteWebhookResponse()

    async def RotateWebhookSecret(
        self, request: webhook_pb2.RotateWebhookSecretRequest, context: Context
    ) -> webhook_pb2.RotateWebhookSecretResponse:
        rotated = await handlers.rotate_secret(
            current_principal().user_id,
            request.webhook_id,
            request.grace_period_seconds if request.HasField("grace_period_seconds") else None,
            self._webhooks,
            default_grace=self._settings.rotation_grace,
        )
        return webhook_pb2.RotateWebhookSecretResponse(
            webhook=webhook_to_proto(rotated.webhook, rotated.secret)
        )

    async def EnableWebhook(
        self, request: webhook_pb2.EnableWebhookRequest, context: Context
    ) -> webhook_pb2.EnableWebhookResponse:
        webhook = await handlers.enable_webhook(
            current_principal().user_id, request.webhook_id, self._webhooks
        )
        return webhook_pb2.EnableWebhookResponse(webhook=webhook_to_proto(webhook))

    async def SendTestEvent(
        self, request: webhook_pb2.SendTestEventRequest, context: Context
    ) -> webhook_pb2.SendTestEventResponse:
        delivery = await handlers.send_test_event(
            current_principal().user_id, request.webhook_id, self._webhooks
        )
        return webhook_pb2.SendTestEventResponse(delivery=delivery_to_proto(delivery))

    async def ListDeliveries(
        self, request: webhook_pb2.ListDeliveriesRequest, context: Context
    ) -> webhook_pb2.ListDeliveriesResponse:
        page = await handlers.list_deliveries(
            current_principal().user_id,
            request.webhook_id,
            size=request.page_size,
            token=request.page_token,
            state=request.state,
            webhooks=self._webhooks,
        )
        return webhook_pb2.ListDeliveriesResponse(
            deliveries=[delivery_to_proto(d) for d in page.deliveries],
            next_page_token=page.next_page_token,
        )

    async def ReplayDelivery(
        self, request: webhook_pb2.ReplayDeliveryRequest, context: Context
    ) -> webhook_pb2.ReplayDeliveryResponse:
        delivery = await handlers.replay_delivery(
            current_principal().user_id, request.webhook_id, request.delivery_id, self._webhooks
        )
        return webhook_pb2.ReplayDeliveryResponse(delivery=delivery_to_proto(delivery))

    async def ReplayParkedDeliveries(
        self, request: webhook_pb2.ReplayParkedDeliveriesRequest, context: Context
    ) -> webhook_pb2.ReplayParkedDeliveriesResponse:
        replayed = await handlers.replay_parked(
            current_principal().user_id, request.webhook_id, self._webhooks
        )
        return webhook_pb2.ReplayParkedDeliveriesResponse(replayed=replayed)
