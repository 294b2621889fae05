"""The webhook dispatcher: the consumer group that turns order events into deliveries.

For each order event it folds the order's document (what deliveries carry as ``data``) and
records one delivery per subscribed, active webhook of the order's owner, in the same
transaction as the consumer's inbox entry. It makes no HTTP call: senders do, later, outside
any consumer transaction (services/webhook/sender.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from services.platform.messaging.codec import EventEnvelope
from services.platform.messaging.consumer import Handlers
from services.webhook.adapters import deliveries
from services.webhook.domain.delivery import delivery_body, event_type_of, order_document

log = logging.getLogger(__name__)


class DeliveryRecorder:
    EVENTS = ("OrderCreated", "OrderStatusChanged", "OrderCancelled", "OrderDelivered")

    def handlers(self) -> Handlers:
        return Handlers(batch=dict.fromkeys(self.EVENTS, self.on_events))

    async def on_events(
        self, envelopes: Sequence[EventEnvelope], conn: AsyncConnection[Any]
    ) -> None:
        rows: list[tuple[str, str, str, str, str, bytes]] = []
        for envelope in envelopes:
            rows.extend(await self._deliveries_of(envelope, conn))
        await deliveries.record_deliveries(conn, rows)

    async def _deliveries_of(
        self, envelope: EventEnvelope, conn: AsyncConnection[Any]
    ) -> list[tuple[str, str, str, str, str, bytes]]:
        record = envelope.record
        order_id = str(record["order_id"])
        known = await deliveries.known_order(conn, order_id)
        if known is not None and known[0] >= int(record["version"]):
            # An event older than what the order's document already shows (a copy of one
            # already applied under another id): its deliveries were recorded then.
            log.info(
                "order event older than the known order: no delivery",
                extra={"order_id": order_id, "event": envelope.name, "known": known[0]},
            )
            return []
        document = order_document(envelope.name, record, None if known is None else known[1])
        await deliveries.save_order(conn, document)
        event_type = event_type_of(envelope.name, record)
        if event_type is None:
            return []
        webhooks = await deliveries.subscribed_webhooks(conn, document["user_id"], event_type)
        found = []
        for webhook_id in webhooks:
            delivery_id = deliveries.delivery_id_for(envelope.event_id, webhook_id)
            body = delivery_body(delivery_id, event_type, envelope.time, document)
            found.append(
                (delivery_id, webhook_id, str(envelope.event_id), event_type, order_id, body)
            )
        return found
