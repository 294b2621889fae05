"""Orders in the `orders` schema: state, items, status history, idempotency keys and the
outbox, always written in one transaction. Single reads that arrive together are answered by
one query (:class:`services.platform.batching.BatchedLookup`)."""

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, Protocol

from psycopg.types.json import Jsonb

from services.common.errors import Conflict
from services.common.money import Money
from services.common.paging import Page
from services.order.adapters.funnel import record_transitions
from services.order.domain.events import Event
from services.order.domain.idempotency import IdempotencyClaim, ensure_same_request
from services.order.domain.live import StatusUpdate, message_for
from services.order.domain.model import Address, Order, OrderLine, OrderStatus
from services.platform.batching import BatchedLookup
from services.platform.db import Connection, Pool

_ORDER_COLUMNS = (
    "o.order_id, o.user_id, o.status, o.status_reason, o.currency, o.shipping_address,"
    " o.payment_method, o.metadata, o.carrier, o.tracking_number, o.estimated_delivery,"
    " o.version, o.created_at,"
    " o.updated_at,"
    " (SELECT coalesce(jsonb_agg(jsonb_build_array(i.product_id, i.name, i.quantity,"
    "  i.unit_price_minor) ORDER BY i.line_no), '[]') FROM orders.order_items i"
    "  WHERE i.order_id = o.order_id) AS items"
)


class EventOutbox(Protocol):
    async def write(self, conn: Connection, events: Iterable[Event]) -> int: ...


def _order(row: dict[str, Any]) -> Order:
    currency = row["currency"]
    return Order(
        order_id=str(row["order_id"]),
        user_id=row["user_id"],
        status=OrderStatus(row["status"]),
        status_reason=row["status_reason"],
        lines=tuple(
            OrderLine(product_id, name, quantity, Money(unit_price_minor, currency))
            for product_id, name, quantity, unit_price_minor in row["items"]
        ),
        shipping_address=Address(**row["shipping_address"]),
        payment_method=row["payment_method"],
        metadata=row["metadata"],
        carrier=row["carrier"],
        tracking_number=row["tracking_number"],
        estimated_delivery=row["estimated_delivery"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _history_update(row: dict[str, Any]) -> StatusUpdate:
    status = OrderStatus(row["status"])
    shipped = status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED)
    return StatusUpdate(
        order_id=str(row["order_id"]),
        user_id=row["user_id"],
        status=status,
        version=row["version"],
        message=message_for(status, row["reason"]),
        occurred_at=row["occurred_at"],
        carrier=row["carrier"] if shipped else "",
        tracking_number=row["tracking_number"] if shipped else "",
        estimated_delivery=row["estimated_delivery"] if shipped else None,
    )


class PostgresOrderStore:
    def __init__(self, pool: Pool, outbox: EventOutbox, idempotency_ttl: timedelta) -> None:
        self._pool = pool
        self._outbox = outbox
        self._ttl = idempotency_ttl
        self._reads: BatchedLookup[str, Order] = BatchedLookup(self._fetch)

    async def find_by_idempotency_key(self, user_id: str, key: str) -> tuple[Order, str] | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_ORDER_COLUMNS}, k.fingerprint FROM orders.idempotency_keys k"
                " JOIN orders.orders o USING (order_id)"
                " WHERE k.user_id = %s AND k.key = %s AND k.created_at > now() - %s",
                (user_id, key, self._ttl),
            )
            row = await cursor.fetchone()
        return (_order(row), row["fingerprint"]) if row else None

    async def add(
        self, order: Order, events: Iterable[Event], claim: IdempotencyClaim | None
    ) -> Order:
        # One pipeline, one Sync at its end: every statement in it is one implicit
        # transaction, committed at the Sync or rolled back whole if any of them fails (no
        # BEGIN or COMMIT of their own). Only the key's claim is waited for (its answer
        # decides what comes next): two round trips with a key, one without, instead of one
        # per statement plus BEGIN and COMMIT.
        async with self._pool.connection() as conn, conn.pipeline():
            if claim is not None:
                existing = await self._claim(conn, order, claim)
                if existing is not None:
                    return existing
            # The order, its lines and its first history row in one statement (the lines'
            # foreign key is checked at its end, when the order row exists).
            await conn.execute(
                "WITH new_order AS (INSERT INTO orders.orders (order_id, user_id, status,"
                "  status_reason, total_minor, currency, shipping_address, payment_method,"
                "  metadata, version, created_at, updated_at)"
                "  VALUES (%(order_id)s, %(user_id)s, %(status)s, %(reason)s, %(total_minor)s,"
                "  %(currency)s, %(shipping_address)s, %(payment_method)s, %(metadata)s,"
                "  %(version)s, %(created_at)s, %(updated_at)s)),"
                " lines AS (INSERT INTO orders.order_items (order_id, line_no, product_id, name,"
                "  quantity, unit_price_minor)"
                "  SELECT %(order_id)s, line_no, product_id, name, quantity, unit_price_minor"
                "  FROM unnest(%(product_ids)b::text[], %(names)b::text[], %(quantities)b::int[],"
                "  %(prices)b::bigint[]) WITH ORDINALITY"
                "  AS l (product_id, name, quantity, unit_price_minor, line_no))"
                " INSERT INTO orders.status_history (order_id, version, status, reason,"
                " occurred_at) VALUES (%(order_id)s, %(version)s, %(status)s, %(reason)s,"
                " %(updated_at)s)",
                {
                    "order_id": order.order_id,
                    "user_id": order.user_id,
                    "status": order.status.value,
                    "reason": order.status_reason,
                    "total_minor": order.total.amount_minor,
                    "currency": order.currency,
                    "shipping_address": Jsonb(asdict(order.shipping_address)),
                    "payment_method": order.payment_method,
                    "metadata": Jsonb(order.metadata),
                    "version": order.version,
                    "created_at": order.created_at,
                    "updated_at": order.updated_at,
                    "product_ids": [line.product_id for line in order.lines],
                    "names": [line.name for line in order.lines],
                    "quantities": [line.quantity for line in order.lines],
                    "prices": [line.unit_price.amount_minor for line in order.lines],
                },
            )
            await self._outbox.write(conn, events)
        return order

    async def _claim(self, conn: Connection, order: Order, claim: IdempotencyClaim) -> Order | None:
        """Takes the key for this order, or returns the order a concurrent request made.

        The key row is inserted before the order exists (deferred foreign key), so a racing
        request with the same key blocks on the primary key until this transaction ends,
        then finds the committed key and returns its order."""
        # An expired key is taken over as if it had been deleted first.
        cursor = await conn.execute(
            "INSERT INTO orders.idempotency_keys AS k (user_id, key, fingerprint, order_id)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, key) DO UPDATE"
            " SET fingerprint = excluded.fingerprint, order_id = excluded.order_id,"
            " created_at = now() WHERE k.created_at <= now() - %s RETURNING key",
            (order.user_id, claim.key, claim.fingerprint, order.order_id, self._ttl),
        )
        if await cursor.fetchone() is not None:
            return None
        cursor = await conn.execute(
            f"SELECT {_ORDER_COLUMNS}, k.fingerprint FROM orders.idempotency_keys k"
            " JOIN orders.orders o USING (order_id) WHERE k.user_id = %s AND k.key = %s",
            (order.user_id, claim.key),
        )
        row = await cursor.fetchone()
        if row is None:
            raise Conflict("a request with this idempotency key is still in progress; retry")
        ensure_same_request(claim, row["fingerprint"])
        return _order(row)

    async def get(self, order_id: str) -> Order | None:
        try:
            # The canonical form: it is what the batched query answers by, and a malformed
            # id must not fail the other reads of its batch.
            key = str(uuid.UUID(order_id))
        except ValueError:
            return None
        return await self._reads.get(key)

    async def _fetch(self, order_ids: Sequence[str]) -> dict[str, Order]:
        async with self._pool.connection() as conn:
            return await fetch_orders(conn, order_ids)

    async def list(
        self, user_id: str | None, status: OrderStatus | None, page: Page
    ) -> tuple[list[Order], int]:
        conditions = []
        params: list[Any] = []
        if user_id is not None:
            conditions.append("o.user_id = %s")
            params.append(user_id)
        if status is not None:
            conditions.append("o.status = %s")
            params.append(status.value)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT count(*) AS total FROM orders.orders o {where}", params
            )
            counted = await cursor.fetchone()
            cursor = await conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders.orders o {where}"
                " ORDER BY o.created_at DESC, o.order_id LIMIT %s OFFSET %s",
                [*params, page.size, page.offset],
            )
            rows = await cursor.fetchall()
        return [_order(row) for row in rows], int(counted["total"]) if counted else 0

    async def recent(self, user_id: str, limit: int) -> Sequence[Order]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders.orders o WHERE o.user_id = %s"
                " ORDER BY o.updated_at DESC, o.order_id LIMIT %s",
                (user_id, limit),
            )
            return [_order(row) for row in await cursor.fetchall()]

    async def status_history(
        self,
        user_ids: Sequence[str],
        *,
        since: datetime | None = None,
        order_id: str | None = None,
        versions: tuple[int, int] | None = None,
    ) -> Sequence[StatusUpdate]:
        conditions = ["o.user_id = ANY(%s)"]
        params: list[Any] = [list(user_ids)]
        if since is not None:
            conditions.append("h.occurred_at >= %s")
            params.append(since)
        if order_id is not None:
            conditions.append("h.order_id = %s")
            params.append(order_id)
        if versions is not None:
            conditions.append("h.version > %s AND h.version < %s")
            params.extend(versions)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT h.order_id, o.user_id, h.status, h.version, h.reason, h.occurred_at,"
                " o.carrier, o.tracking_number, o.estimated_delivery"
                " FROM orders.status_history h JOIN orders.orders o USING (order_id)"
                f" WHERE {' AND '.join(conditions)}"
                " ORDER BY h.occurred_at, h.order_id, h.version",
                params,
            )
            rows = await cursor.fetchall()
        return [_history_update(row) for row in rows]

    async def update(self, order: Order, expected_version: int, events: Iterable[Event]) -> None:
        written = list(events)
        async with self._pool.connection() as conn, conn.transaction():
            await save_order(conn, order, expected_version)
            await self._outbox.write(conn, written)
        record_transitions(written)


async def fetch_order(conn: Connection, order_id: str, *, for_update: bool = False) -> Order | None:
    """One order; with ``for_update`` its row stays locked until the transaction ends, which
    serialises every writer of that order (and so the order of its outbox rows)."""
    lock = " FOR UPDATE OF o" if for_update else ""
    cursor = await conn.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders.orders o WHERE o.order_id = %s{lock}", (order_id,)
    )
    row = await cursor.fetchone()
    return _order(row) if row else None


async def fetch_orders(
    conn: Connection, order_ids: Iterable[str], *, for_update: bool = False
) -> dict[str, Order]:
    """The orders among ``order_ids`` that exist, by id, in one query. With ``for_update``
    their rows stay locked until the transaction ends; they are locked in order_id order, so
    two transactions locking overlapping sets cannot deadlock on them."""
    lock = " FOR UPDATE OF o" if for_update else ""
    cursor = await conn.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders.orders o WHERE o.order_id = ANY(%b::uuid[])"
        f" ORDER BY o.order_id{lock}",
        (sorted(set(order_ids)),),
    )
    return {order.order_id: order for order in map(_order, await cursor.fetchall())}


async def save_order(conn: Connection, order: Order, expected_version: int) -> None:
    """Writes a changed order if nobody else changed it since ``expected_version``, and
    records the new version in its status history."""
    cursor = await conn.execute(
        "UPDATE orders.orders SET status = %s, status_reason = %s, metadata = %s,"
        " carrier = %s, tracking_number = %s, estimated_delivery = %s, version = %s,"
        " updated_at = %s"
        " WHERE order_id = %s AND version = %s",
        (
            order.status.value,
            order.status_reason,
            Jsonb(order.metadata),
            order.carrier,
            order.tracking_number,
            order.estimated_delivery,
            order.version,
            order.updated_at,
            order.order_id,
            expected_version,
        ),
    )
    if cursor.rowcount != 1:
        raise Conflict(f"order {order.order_id} was changed concurrently; retry")
    await record_history(conn, order)


async def save_orders(
    conn: Connection, states: Sequence[Order], expected_versions: Mapping[str, int]
) -> None:
    """Set-based :func:`save_order` for many orders: the last of ``states`` for each order is
    written if nobody changed that order since ``expected_versions[order_id]``, and every one
    of ``states`` (successive states, oldest first) is recorded in the status history."""
    latest = {state.order_id: state for state in states}
    if not latest:
        return
    cursor = await conn.execute(
        "UPDATE orders.orders o SET status = v.status, status_reason = v.status_reason,"
        " metadata = v.metadata, carrier = v.carrier, tracking_number = v.tracking_number,"
        " estimated_delivery = v.estimated_delivery, version = v.version,"
        " updated_at = v.updated_at"
        " FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::text[], %b::jsonb[],"
        "  %b::text[], %b::text[], %b::timestamptz[], %b::bigint[], %b::timestamptz[])"
        "  AS v(order_id, expected_version, status, status_reason, metadata, carrier,"
        "  tracking_number, estimated_delivery, version, updated_at)"
        " WHERE o.order_id = v.order_id AND o.version = v.expected_version"
        " RETURNING o.order_id",
        (
            list(latest),
            [expected_versions[order_id] for order_id in latest],
            [order.status.value for order in latest.values()],
            [order.status_reason for order in latest.values()],
            [Jsonb(order.metadata) for order in latest.values()],
            [order.carrier for order in latest.values()],
            [order.tracking_number for order in latest.values()],
            [order.estimated_delivery for order in latest.values()],
            [order.version for order in latest.values()],
            [order.updated_at for order in latest.values()],
        ),
    )
    saved = {str(row["order_id"]) for row in await cursor.fetchall()}
    if len(saved) != len(latest):
        stale = sorted(set(latest) - saved)
        raise Conflict(f"orders {', '.join(stale)} were changed concurrently; retry")
    await conn.execute(
        "INSERT INTO orders.status_history (order_id, version, status, reason, occurred_at)"
        " SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::text[],"
        "  %b::timestamptz[])",
        (
            [order.order_id for order in states],
            [order.version for order in states],
            [order.status.value for order in states],
            [order.status_reason for order in states],
            [order.updated_at for order in states],
        ),
    )


async def record_history(conn: Connection, order: Order) -> None:
    await conn.execute(
        "INSERT INTO orders.status_history (order_id, version, status, reason, occurred_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (order.order_id, order.version, order.status.value, order.status_reason, order.updated_at),
    )
