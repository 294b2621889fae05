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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from services.platform import tracing
from services.platform.db import columns
from services.platform.messaging.codec import EventCodec, cloudevent_headers
from services.platform.messaging.registry import topic_for

OUTBOX_CHANNEL = "ordermesh_outbox"

E = TypeVar("E")

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_COLUMN_TYPES = ("uuid", "text", "text", "text", "bytea", "jsonb", "timestamptz")
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
    # The trace this row continues (the CloudEvents distributed-tracing extension).
    headers.update(tracing.outbox_headers(key))
    return OutboxMessage(
        event_id=event_id,
        topic=topic,
        key=key,
        event_type=headers["ce_type"],
        payload=codec.encode(event_name, record),
        headers=headers,
        occurred_at=occurred_at,
    )


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A domain event as it goes on the wire: its event (Avro schema) name, its Kafka key
    (the order id for every ordermesh event), its record, and when it happened."""

    name: str
    key: str
    record: Mapping[str, Any]
    occurred_at: datetime | None = None


class EventOutbox(Generic[E]):
    """A context's outbox: ``write(conn, events)`` encodes domain events with the context's
    ``to_record`` and inserts them in the caller's transaction, in one statement, each to the
    topic the registry assigns its event type."""

    def __init__(
        self,
        codec: EventCodec,
        *,
        schema: str,
        source: str,
        to_record: Callable[[E], EventRecord],
    ) -> None:
        self._codec = codec
        self._schema = checked_schema(schema)
        self._source = source
        self._to_record = to_record

    def message(self, event: E) -> OutboxMessage:
        found = self._to_record(event)
        return outbox_message(
            self._codec,
            topic=topic_for(found.name),
            key=found.key,
            event_name=found.name,
            record=found.record,
            source=self._source,
            occurred_at=found.occurred_at,
        )

    async def write(self, conn: AsyncConnection[Any], events: Iterable[E]) -> int:
        """Inserts the events; returns how many."""
        return await add_messages_to_outbox(
            conn, self._schema, [self.message(event) for event in events]
        )


async def add_messages_to_outbox(
    conn: AsyncConnection[Any], schema: str, messages: Sequence[OutboxMessage]
) -> int:
    """Insert pre-encoded messages in the caller's transaction with one statement (one round
    trip, whatever their number); returns how many."""
    if not messages:
        return 0
    await conn.execute(
        _insert_statement(checked_schema(schema)), columns(_row(message) for message in messages)
    )
    return len(messages)


# The statement is rendered once per schema: a composed query would be rendered again on
# every execution, and this runs once or more per event.
@functools.lru_cache(maxsize=64)
def _insert_statement(schema: str) -> str:
    return (
        sql.SQL("INSERT INTO {} ({}) SELECT * FROM unnest({})")
        .format(
            sql.Identifier(checked_schema(schema), "outbox"),
            sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS),
            sql.SQL(", ").join(sql.SQL("%b::{}[]").format(sql.SQL(kind)) for kind in _COLUMN_TYPES),
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
