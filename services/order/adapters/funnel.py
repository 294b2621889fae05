"""The order funnel's metrics: status transitions and creation-to-shipment time as the
order service records them, and the age of the oldest order in each non-terminal status
(a cheap periodic query: one index probe per status)."""

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime

import psycopg
from psycopg_pool import PoolTimeout

from services.common.clock import utc_now
from services.order.domain.events import Event, OrderCancelled, OrderStatusChanged
from services.order.domain.model import OrderStatus
from services.platform import metrics
from services.platform.db import Pool

log = logging.getLogger(__name__)

# How often the workers process refreshes ordermesh_orders_oldest_in_status_seconds.
STATUS_AGE_INTERVAL = 10.0
OPEN_STATUSES = tuple(status.value for status in OrderStatus if not status.is_terminal)

# The oldest order of a status is the last entry of orders_by_status (status, created_at
# DESC) for it: one index probe per status, whatever the table's size.
_STATUS_AGES = (
    "SELECT s.status, extract(epoch FROM now() - (SELECT min(o.created_at)"
    " FROM orders.orders o WHERE o.status = s.status)) AS age"
    " FROM unnest(%s::text[]) AS s (status)"
)


def record_transitions(events: Iterable[Event], now: datetime | None = None) -> None:
    """Counts the status changes among ``events`` (after they were written), and observes
    the creation-to-shipment time of the orders that reached SHIPPED."""
    for event in events:
        if isinstance(event, OrderStatusChanged):
            metrics.record_transition(event.previous_status.value, event.order.status.value)
            if event.order.status is OrderStatus.SHIPPED:
                shipped = (now or utc_now()) - event.order.created_at
                metrics.order_create_to_shipped_seconds.observe(shipped.total_seconds())
        elif isinstance(event, OrderCancelled):
            metrics.record_transition(event.previous_status.value, OrderStatus.CANCELLED.value)


async def refresh_status_ages(pool: Pool) -> None:
    async with pool.connection() as conn:
        cursor = await conn.execute(_STATUS_AGES, (list(OPEN_STATUSES),))
        rows = await cursor.fetchall()
    for row in rows:
        age = row["age"]
        metrics.orders_oldest_in_status_seconds.labels(row["status"]).set(float(age or 0))


async def watch_status_ages(
    pool: Pool, stop: asyncio.Event, interval: float = STATUS_AGE_INTERVAL
) -> None:
    """Refreshes the oldest-in-status gauge every ``interval`` until ``stop``; a database
    outage only skips a refresh (the consumers report outages), and no failure of it stops
    the process that hosts it."""
    while not stop.is_set():
        try:
            await refresh_status_ages(pool)
        except (psycopg.Error, PoolTimeout) as error:
            log.debug("order status ages not refreshed: %s", error)
        except Exception:
            log.exception("order status ages not refreshed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
