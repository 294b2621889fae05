"""The operator's side of parked outbox rows (``ordermesh outbox list|replay|discard``).

The relay parks a row Kafka can never accept in ``<schema>.outbox_parked``, with the reason,
and holds the later rows of its message key behind it (see :mod:`.relay`). Here an
operator, after fixing the cause (say, raising a size limit), *replays* a parked row and
the rows held behind it (back into the outbox, in their original order, where the relay
publishes them), or *discards* a row that can never succeed, which releases the rows held
behind it to the outbox.

Rows are named by their event id (unique across schemas). Each command runs in one
transaction per schema, so a concurrent relay sees a row either parked or back in the outbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from services.platform.messaging.outbox import checked_schema

_COLUMNS = "event_id, topic, message_key, event_type, payload, headers, occurred_at"


@dataclass(frozen=True, slots=True)
class ParkedRow:
    schema: str
    outbox_id: int
    event_id: str
    event_type: str
    message_key: str
    topic: str
    size: int
    parked_at: datetime
    reason: str
    held_behind: int | None


class UnknownParkedRowError(LookupError):
    """Some requested event ids name no parked row; nothing was changed."""

    def __init__(self, event_ids: Collection[str]) -> None:
        self.event_ids = tuple(sorted(event_ids))
        super().__init__("no parked outbox row with event id " + ", ".join(self.event_ids))


def list_parked(dsn: str, schemas: Sequence[str], limit: int = 100) -> list[ParkedRow]:
    """Parked rows of every schema, oldest first (at most ``limit``)."""
    found: list[ParkedRow] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for schema in schemas:
            found.extend(_rows(conn, schema, None, limit))
    return sorted(found, key=lambda row: (row.parked_at, row.schema, row.outbox_id))[:limit]


def replay_parked(
    dsn: str, schemas: Sequence[str], event_ids: Collection[str] | None = None
) -> int:
    """Move the chosen parked rows (all with ``event_ids=None``) and the rows held behind
    them back to the outbox, in their original order; returns how many rows moved."""
    return _settle(dsn, schemas, event_ids, discard=False)


def discard_parked(dsn: str, schemas: Sequence[str], event_ids: Collection[str] | None) -> int:
    """Delete the chosen parked rows (all with ``event_ids=None``); the rows held behind them
    go back to the outbox. Returns how many rows were deleted."""
    return _settle(dsn, schemas, event_ids, discard=True)


def parked_counts(conn: psycopg.Connection[Any], schema: str) -> int:
    """Rows parked in ``schema`` (0 while its migrations have not created the table)."""
    table = f"{checked_schema(schema)}.outbox_parked"
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if not (exists and exists[0]):
        return 0
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "outbox_parked"))
    row = conn.execute(query).fetchone()
    return 0 if row is None else int(row[0])


def _settle(
    dsn: str, schemas: Sequence[str], event_ids: Collection[str] | None, *, discard: bool
) -> int:
    wanted = None if event_ids is None else {_checked_uuid(e) for e in event_ids}
    settled = 0
    with psycopg.connect(dsn) as conn:
        chosen_by_schema = {
            schema: [row for row in _rows(conn, schema, wanted, None)] for schema in schemas
        }
        if wanted is not None:
            seen = {row.event_id for rows in chosen_by_schema.values() for row in rows}
            if wanted - seen:
                raise UnknownParkedRowError(wanted - seen)
        for schema, chosen in chosen_by_schema.items():
            if not chosen:
                continue
            ids = [row.outbox_id for row in chosen]
            held = _held_behind(conn, schema, ids)
            if discard:
                settled += _delete(conn, schema, ids)
                _move_back(conn, schema, sorted(set(held) - set(ids)))
            else:
                settled += _move_back(conn, schema, sorted(set(ids) | set(held)))
        conn.commit()
    return settled


def _rows(
    conn: psycopg.Connection[Any], schema: str, event_ids: set[str] | None, limit: int | None
) -> list[ParkedRow]:
    table = sql.Identifier(checked_schema(schema), "outbox_parked")
    where = sql.SQL("") if event_ids is None else sql.SQL("WHERE event_id = ANY(%(ids)s)")
    query = sql.SQL(
        "SELECT id, event_id::text, event_type, message_key, topic, octet_length(payload),"
        " parked_at, reason, held_behind FROM {} {} ORDER BY id LIMIT %(limit)s"
    ).format(table, where)
    params = {"ids": sorted(event_ids or ()), "limit": limit}
    return [ParkedRow(schema, *values) for values in conn.execute(query, params).fetchall()]


def _held_behind(conn: psycopg.Connection[Any], schema: str, ids: list[int]) -> list[int]:
    query = sql.SQL("SELECT id FROM {} WHERE held_behind = ANY(%s) ORDER BY id").format(
        sql.Identifier(schema, "outbox_parked")
    )
    return [row[0] for row in conn.execute(query, (ids,)).fetchall()]


def _delete(conn: psycopg.Connection[Any], schema: str, ids: list[int]) -> int:
    query = sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(
        sql.Identifier(schema, "outbox_parked")
    )
    return conn.execute(query, (ids,)).rowcount


def _move_back(conn: psycopg.Connection[Any], schema: str, ids: list[int]) -> int:
    """Re-insert parked rows into the outbox one by one in their original order (each gets a
    new, higher outbox id, so they keep their order), then drop them from the parked table."""
    insert = sql.SQL(
        "INSERT INTO {outbox} ({columns}) SELECT {columns} FROM {parked} WHERE id = %s"
    ).format(
        outbox=sql.Identifier(schema, "outbox"),
        parked=sql.Identifier(schema, "outbox_parked"),
        columns=sql.SQL(_COLUMNS),
    )
    with conn.cursor() as cursor:
        cursor.executemany(insert, [(row_id,) for row_id in ids])
    return _delete(conn, schema, ids) if ids else 0


def _checked_uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise UnknownParkedRowError([text]) from None
