"""Retention: rows that have served their purpose are deleted in the background, in small
batches, each by the role of the service that owns them.

- published outbox rows: 1 day, for inspection only (``ORDERMESH_OUTBOX_RETENTION_SECONDS``);
- inbox entries: 35 days, longer than a duplicate can still arrive: topic retention is 7 days
  and the dead-letter topic, from which a replay re-sends events, keeps 30
  (``ORDERMESH_INBOX_RETENTION_SECONDS``);
- idempotency keys: their lifetime, 24 hours (``ORDERMESH_IDEMPOTENCY_TTL_SECONDS``);
- refresh-token families: 1 day after their newest token expired
  (``ORDERMESH_SESSION_RETENTION_SECONDS``).

Each pass deletes at most ``batch`` rows per statement (``FOR UPDATE SKIP LOCKED``, so it
never waits for, nor blocks, the rows the pipeline is using) until a statement deletes fewer,
then sleeps ``interval`` seconds. Replicas may run side by side. Parked outbox rows and dead
letters are never purged: an operator decides about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.platform.messaging.outbox import checked_schema
from services.platform.messaging.registry import RETENTION_WORKER, Outbox
from services.platform.messaging.state import StateBoard
from services.platform.settings import Settings

log = logging.getLogger(__name__)

BATCH = 1000


@dataclass(frozen=True, slots=True)
class Purge:
    """One kind of row to purge: who deletes it (a component's pool), and the statement that
    deletes one batch of rows older than ``horizon`` (``%(horizon)s``, ``%(batch)s``)."""

    name: str
    component: str
    statement: str
    horizon: timedelta


def purge_older_than(table: str, column: str) -> str:
    return (
        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table}"
        f" WHERE {column} < now() - %(horizon)s LIMIT %(batch)s FOR UPDATE SKIP LOCKED))"
    )


def event_table_purges(outboxes: Iterable[Outbox], settings: Settings) -> list[Purge]:
    """Published outbox rows and old inbox entries of every outbox-owning context, each
    deleted by that context's role."""
    found: list[Purge] = []
    for outbox in outboxes:
        schema = checked_schema(outbox.schema)
        found.append(
            Purge(
                f"{schema}.outbox (published)",
                outbox.context,
                purge_older_than(f"{schema}.outbox", "published_at"),
                timedelta(seconds=settings.outbox_retention_seconds),
            )
        )
        found.append(
            Purge(
                f"{schema}.inbox",
                outbox.context,
                purge_older_than(f"{schema}.inbox", "processed_at"),
                timedelta(seconds=settings.inbox_retention_seconds),
            )
        )
    return found


def components_of(purge_list: Sequence[Purge]) -> list[str]:
    return list(dict.fromkeys(purge.component for purge in purge_list))


class RetentionPurger:
    def __init__(
        self,
        pools: Mapping[str, AsyncConnectionPool[Any]],
        purge_list: Sequence[Purge],
        *,
        interval: float,
        batch: int = BATCH,
        board: StateBoard | None = None,
    ) -> None:
        self._pools = pools
        self._purges = tuple(purge_list)
        self._interval = interval
        self._batch = batch
        self.board = board or StateBoard(RETENTION_WORKER)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                deleted = await self.purge_once(stop)
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
                log.warning("retention pass interrupted: %s", exc)
                self.board.block(RETENTION_WORKER, "postgres", str(exc) or repr(exc))
            else:
                self.board.unblock(RETENTION_WORKER)
                if any(deleted.values()):
                    log.info("retention pass", extra={"deleted": deleted})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def purge_once(self, stop: asyncio.Event | None = None) -> dict[str, int]:
        """One pass over every purge; returns the rows deleted by name."""
        deleted: dict[str, int] = {}
        for purge in self._purges:
            deleted[purge.name] = 0
            while stop is None or not stop.is_set():
                async with self._pools[purge.component].connection() as conn:
                    cursor = await conn.execute(
                        purge.statement, {"horizon": purge.horizon, "batch": self._batch}
                    )
                deleted[purge.name] += cursor.rowcount
                if cursor.rowcount < self._batch:
                    break
                await asyncio.sleep(0)
        return deleted
