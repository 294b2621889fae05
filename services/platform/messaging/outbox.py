"""Transactional outbox and inbox tables, and the writer services use inside their transactions.

A service never produces to Kafka from a request: it inserts an outbox row in the same
Postgres transaction as its state change, so both commit or neither does. The relay
(:mod:`.relay`) publishes committed rows. Consumers record processed event ids in an
inbox table in the transaction of their effects, which makes at-least-once delivery
effectively-once.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from services.platform.messaging.codec import EventCodec, cloudevent_headers

OUTBOX_CHANNEL = "ordermesh_outbox"

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_COLUMNS = (
    "event_id",
    "topic",
    "message_key",
    "event_type",
    "payload",
    "headers",
    "occurred_at",
)


def checked_schema(schema: str) -> str:
    """``schema`` if it is a plain lower-case identifier (safe to splice into DDL)."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"{schema!r} is not a plain lower-case Postgres schema name")
    return schema


def outbox_ddl(schema: str) -> str:
    """SQL creating ``schema``.outbox with the function every service's migration uses
    (defined once in services/platform/migrations)."""
    return f"SELECT public.ordermesh_create_outbox('{checked_schema(schema)}')"


def inbox_ddl(schema: str) -> str:
    """SQL creating ``schema``.inbox, like :func:`outbox_ddl`."""
    return f"SELECT public.ordermesh_create_inbox('{checked_schema(schema)}')"


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One encoded event ready to be stored in an outbox table."""

    event_id: uuid.UUID
    topic: str
    key: str
    event_type: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def outbox_message(
    codec: EventCodec,
    *,
    topic: str,
    key: str,
    event_name: str,
    record: Mapping[str, Any],
    source: str,
    event_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
) -> OutboxMessage:
    """Encode ``record`` and wrap it with its CloudEvents headers (subject = ``key``)."""
    event_id = event_id or uuid.uuid4()
    occurred_at = occurred_at or datetime.now(UTC)
    headers = cloudevent_headers(
        event_id=event_id, event_name=event_name, source=source, time=occurred_at, subject=key
    )
    return OutboxMessage(
        event_id=event_id,
        topic=topic,
        key=key,
        event_type=headers["ce_type"],
        payload=codec.encode(event_name, record),
        headers=headers,
        occurred_at=occurred_at,
    )


async def add_to_outbox(
    conn: AsyncConnection[Any],
    schema: str,
    *,
    codec: EventCodec,
    topic: str,
    key: str,
    event_name: str,
    record: Mapping[str, Any],
    source: str,
    event_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
) -> uuid.UUID:
    """Encode an event and insert it in the caller's transaction; returns its event id.

    ``source`` is the CloudEvents source, e.g. ``/ordermesh/order``; ``key`` is the Kafka
    message key, the ``order_id`` for every ordermesh event.
    """
    message = outbox_message(
        codec,
        topic=topic,
        key=key,
        event_name=event_name,
        record=record,
        source=source,
        event_id=event_id,
        occurred_at=occurred_at,
    )
    await conn.execute(_insert_statement(schema), _row(message))
    return message.event_id


async def add_messages_to_outbox(
    conn: AsyncConnection[Any], schema: str, messages: Iterable[OutboxMessage]
) -> int:
    """Bulk-insert pre-encoded messages with COPY, in the caller's transaction."""
    count = 0
    async with conn.cursor() as cursor, cursor.copy(_copy_statement(schema)) as copy:
        for message in messages:
            await copy.write_row(_row(message))
            count += 1
    return count


async def purge_published(conn: AsyncConnection[Any], schema: str, older_than: timedelta) -> int:
    """Delete outbox rows published more than ``older_than`` ago; returns how many."""
    query = sql.SQL("DELETE FROM {}.outbox WHERE published_at < now() - %s::interval").format(
        sql.Identifier(checked_schema(schema))
    )
    cursor = await conn.execute(query, (older_than,))
    return cursor.rowcount


async def purge_inbox(conn: AsyncConnection[Any], schema: str, older_than: timedelta) -> int:
    """Forget processed event ids older than ``older_than``.

    Safe once ``older_than`` exceeds how long a duplicate can still arrive (topic
    retention plus the longest DLQ replay delay).
    """
    query = sql.SQL("DELETE FROM {}.inbox WHERE processed_at < now() - %s::interval").format(
        sql.Identifier(checked_schema(schema))
    )
    cursor = await conn.execute(query, (older_than,))
    return cursor.rowcount


# The statements are rendered once per schema: a composed query would be rendered again on
# every execution, and these run once or more per event.
@functools.lru_cache(maxsize=64)
def _insert_statement(schema: str) -> str:
    return (
        sql.SQL("INSERT INTO {}.outbox ({}) VALUES ({})")
        .format(
            sql.Identifier(checked_schema(schema)),
            sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS),
            sql.SQL(", ").join(sql.Placeholder() for _ in _COLUMNS),
        )
        .as_string()
    )


@functools.lru_cache(maxsize=64)
def _copy_statement(schema: str) -> str:
    return (
        sql.SQL("COPY {}.outbox ({}) FROM STDIN")
        .format(
            sql.Identifier(checked_schema(schema)),
            sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS),
        )
        .as_string()
    )


def _row(message: OutboxMessage) -> tuple[Any, ...]:
    return (
        message.event_id,
        message.topic,
        message.key,
        message.event_type,
        message.payload,
        Jsonb(dict(message.headers)),
        message.occurred_at,
    )
