"""Stock, reservations and cancellations in the `inventory` schema, on the caller's
connection: the inventory manager changes stock, records its decision, its inbox entry and
its outbox event in one transaction."""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from services.inventory.domain.reservations import (
    Reservation,
    ReservationStatus,
    Shortage,
    StockLine,
)
from services.platform.db import Connection, columns
from services.platform.order_guard import OrderGuard

_RESERVATION_COLUMNS = (
    "reservation_id::text, order_id, user_id, status, lines, shortages, created_at, updated_at"
)


class StockInvariantError(RuntimeError):
    """Stock changed under a lock this transaction holds: a bug, never a business outcome."""


def _reservation(row: Mapping[str, Any]) -> Reservation:
    return Reservation(
        reservation_id=row["reservation_id"],
        order_id=row["order_id"],
        user_id=row["user_id"],
        status=ReservationStatus(row["status"]),
        lines=tuple(
            StockLine(line["product_id"], int(line["quantity"]), int(line["unit_price_minor"]))
            for line in row["lines"]
        ),
        shortages=tuple(
            Shortage(s["product_id"], int(s["requested"]), int(s["available"]))
            for s in row["shortages"]
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PostgresStockLedger(OrderGuard):
    def __init__(self, conn: Connection) -> None:
        super().__init__(conn, "inventory")

    async def settled_orders(self, order_ids: Iterable[str]) -> set[str]:
        """The orders among ``order_ids`` that must not reserve: cancelled, or decided."""
        ids = sorted(set(order_ids))
        cursor = await self._conn.execute(
            "SELECT order_id FROM inventory.cancelled_orders WHERE order_id = ANY(%s)"
            " UNION SELECT order_id FROM inventory.reservations WHERE order_id = ANY(%s)",
            (ids, ids),
        )
        return {row["order_id"] for row in await cursor.fetchall()}

    async def reservation(self, order_id: str) -> Reservation | None:
        cursor = await self._conn.execute(
            f"SELECT {_RESERVATION_COLUMNS} FROM inventory.reservations WHERE order_id = %s",
            (order_id,),
        )
        row = await cursor.fetchone()
        return None if row is None else _reservation(row)

    async def lock_stock(self, product_ids: Sequence[str]) -> Mapping[str, int]:
        # The sort below the row locks makes Postgres take them in product_id order.
        cursor = await self._conn.execute(
            "SELECT product_id, stock, active FROM inventory.products"
            " WHERE product_id = ANY(%s) ORDER BY product_id FOR UPDATE",
            (list(product_ids),),
        )
        return {
            row["product_id"]: int(row["stock"]) for row in await cursor.fetchall() if row["active"]
        }

    async def take_stock(self, quantities: Mapping[str, int]) -> None:
        cursor = await self._conn.execute(
            "UPDATE inventory.products AS p SET stock = p.stock - r.quantity, updated_at = now()"
            " FROM unnest(%b::text[], %b::bigint[]) AS r (product_id, quantity)"
            " WHERE p.product_id = r.product_id AND p.stock >= r.quantity",
            (list(quantities), list(quantities.values())),
        )
        if cursor.rowcount != len(quantities):
            raise StockInvariantError(
                f"took stock of {cursor.rowcount} of {len(quantities)} locked products"
            )

    async def return_stock(self, quantities: Mapping[str, int]) -> None:
        await self._conn.execute(
            "UPDATE inventory.products AS p SET stock = p.stock + r.quantity, updated_at = now()"
            " FROM unnest(%b::text[], %b::bigint[]) AS r (product_id, quantity)"
            " WHERE p.product_id = r.product_id",
            (list(quantities), list(quantities.values())),
        )

    async def add_reservations(self, reservations: Iterable[Reservation]) -> None:
        """Stores several reservations with one statement."""
        rows = [_reservation_row(reservation) for reservation in reservations]
        if not rows:
            return
        await self._conn.execute(
            "INSERT INTO inventory.reservations (reservation_id, order_id, user_id, status,"
            " lines, shortages, created_at, updated_at)"
            " SELECT * FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::text[], %b::jsonb[],"
            " %b::jsonb[], %b::timestamptz[], %b::timestamptz[])",
            columns(rows),
        )

    async def mark_released(self, order_id: str, at: datetime) -> None:
        await self._conn.execute(
            "UPDATE inventory.reservations SET status = 'released', released_at = %s,"
            " updated_at = %s WHERE order_id = %s AND status = 'reserved'",
            (at, at, order_id),
        )


def _reservation_row(reservation: Reservation) -> tuple[Any, ...]:
    return (
        reservation.reservation_id,
        reservation.order_id,
        reservation.user_id,
        reservation.status.value,
        Jsonb([_line(line) for line in reservation.lines]),
        Jsonb([_shortage(s) for s in reservation.shortages]),
        reservation.created_at,
        reservation.updated_at,
    )


def _line(line: StockLine) -> dict[str, Any]:
    return {
        "product_id": line.product_id,
        "quantity": line.quantity,
        "unit_price_minor": line.unit_price_minor,
    }


def _shortage(shortage: Shortage) -> dict[str, Any]:
    return {
        "product_id": shortage.product_id,
        "requested": shortage.requested,
        "available": shortage.available,
    }
