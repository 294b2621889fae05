"""Where orders are stuck: consumer-group lag on Kafka and outbox backlog in Postgres.

Read-only queries for the operator (``ordermesh status``), each bounded by a short
timeout, so a dead broker or database is reported rather than waited for.

Lag of a group is the sum, over the partitions of the topics it consumes, of the high
watermark minus the group's committed offset; a partition without a committed offset (or
whose committed offset fell below the retention horizon) counts from its low watermark,
which is where the group will start (``auto.offset.reset=earliest``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from psycopg import sql

from services.platform.messaging.codec import event_name_of
from services.platform.messaging.dead_letters import DeadLetter
from services.platform.messaging.outbox import checked_schema
from services.platform.messaging.parked import ParkedRow, parked_counts
from services.platform.messaging.registry import CONSUMER_GROUPS, OUTBOX_SCHEMAS
from services.platform.messaging.state import ProcessState

DEFAULT_TIMEOUT = 3.0

# librdkafka reports every refused connection itself; the caller reports one clear line.
_QUIET = logging.getLogger("ordermesh.inspect.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


@dataclass(frozen=True, slots=True)
class GroupLag:
    """How far one consumer group is behind the topics it consumes."""

    group: str
    lag: int
    by_topic: Mapping[str, int]
    members: int
    state: str
    missing_topics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """Rows of one schema's outbox that the relay has not published yet, and rows it parked
    (see ``ordermesh outbox list``)."""

    schema: str
    unpublished: int
    oldest_age: timedelta | None
    table_exists: bool = True
    parked: int = 0


@dataclass(frozen=True, slots=True)
class TableSize:
    """A table's live rows (Postgres' estimate) and bytes on disk with its indexes."""

    table: str
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class PipelineReport:
    groups: Sequence[GroupLag] = ()
    outboxes: Sequence[OutboxBacklog] = ()
    tables: Sequence[TableSize] = ()
    kafka_error: str | None = None
    postgres_error: str | None = None
    group_names: Sequence[str] = ()
    outbox_schemas: Sequence[str] = ()


def registered_groups() -> dict[str, tuple[str, ...]]:
    """Consumer group → the topics it reads, from the registry."""
    return {group.group: group.topics for group in CONSUMER_GROUPS}


def registered_outbox_schemas() -> tuple[str, ...]:
    return OUTBOX_SCHEMAS


def consumer_lag(
    bootstrap: str, groups: Mapping[str, Sequence[str]], *, timeout: float = DEFAULT_TIMEOUT
) -> list[GroupLag]:
    """Lag of each group in ``groups`` (group → topics); raises ``KafkaException``."""
    if not groups:
        return []
    config: dict[str, str | int | float | bool] = {
        "bootstrap.servers": bootstrap,
        "socket.connection.setup.timeout.ms": int(timeout * 1000),
    }
    admin = AdminClient(config, logger=_QUIET)
    metadata = admin.list_topics(timeout=timeout)
    wanted = {topic for topics in groups.values() for topic in topics}
    partitions = [
        TopicPartition(topic, partition)
        for topic in sorted(wanted)
        if topic in metadata.topics and metadata.topics[topic].error is None
        for partition in sorted(metadata.topics[topic].partitions)
    ]
    low, high = _watermarks(config, partitions, timeout)
    committed_futures = {
        group: admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [tp for tp in partitions if tp.topic in topics])],
            request_timeout=timeout,
        )[group]
        for group, topics in groups.items()
    }
    descriptions = admin.describe_consumer_groups(list(groups), request_timeout=timeout)
    report = []
    for group, topics in groups.items():
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in committed_futures[group].result().topic_partitions
        }
        by_topic = dict.fromkeys(topics, 0)
        for key, offset in committed.items():
            if key in high and key[0] in by_topic:
                by_topic[key[0]] += max(0, high[key] - max(offset, low[key]))
        description = descriptions[group].result()
        report.append(
            GroupLag(
                group=group,
                lag=sum(by_topic.values()),
                by_topic=by_topic,
                members=len(description.members),
                state=_state_name(description.state),
                missing_topics=tuple(t for t in topics if t not in metadata.topics),
            )
        )
    return report


def outbox_backlog(
    dsn: str, schemas: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT
) -> list[OutboxBacklog]:
    """Unpublished rows and the age of the oldest one per schema; raises ``psycopg.Error``."""
    statement_timeout = f"-c statement_timeout={int(timeout * 1000)}"
    report = []
    with psycopg.connect(
        dsn, connect_timeout=max(2, round(timeout)), autocommit=True, options=statement_timeout
    ) as conn:
        for schema in schemas:
            table = f"{checked_schema(schema)}.outbox"
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            if not (exists and exists[0]):
                report.append(OutboxBacklog(schema, 0, None, table_exists=False))
                continue
            query = sql.SQL(
                "SELECT count(*), now() - min(occurred_at) FROM {}.outbox"
                " WHERE published_at IS NULL"
            ).format(sql.Identifier(schema))
            row = conn.execute(query).fetchone()
            count, age = (0, None) if row is None else row
            report.append(
                OutboxBacklog(schema, int(count), age, parked=parked_counts(conn, schema))
            )
    return report


TABLES_SHOWN = 12


def table_sizes(dsn: str, *, timeout: float = DEFAULT_TIMEOUT) -> list[TableSize]:
    """The largest tables outside Postgres' own schemas (the outbox and inbox tables grow
    with traffic; the retention purge keeps them bounded)."""
    statement_timeout = f"-c statement_timeout={int(timeout * 1000)}"
    with psycopg.connect(
        dsn, connect_timeout=max(2, round(timeout)), autocommit=True, options=statement_timeout
    ) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || relname, greatest(n_live_tup, 0),"
            " pg_total_relation_size(relid) FROM pg_stat_user_tables"
            " WHERE schemaname NOT IN ('public', 'pg_catalog', 'information_schema')"
            " ORDER BY pg_total_relation_size(relid) DESC, 1 LIMIT %s",
            (TABLES_SHOWN,),
        ).fetchall()
    return [TableSize(name, int(count), int(size)) for name, count, size in rows]


def pipeline_report(
    bootstrap: str | None,
    dsn: str | None,
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    outbox_schemas: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PipelineReport:
    """Lag of the registered groups and backlog of the registered outboxes.

    A broker or database that is not running (``None``) or cannot be reached is reported
    in ``kafka_error``/``postgres_error`` instead of raising.
    """
    groups = registered_groups() if groups is None else groups
    schemas = registered_outbox_schemas() if outbox_schemas is None else tuple(outbox_schemas)
    lags: list[GroupLag] = []
    backlog: list[OutboxBacklog] = []
    kafka_error: str | None = "not running"
    postgres_error: str | None = "not running"
    if bootstrap is not None:
        try:
            lags, kafka_error = consumer_lag(bootstrap, groups, timeout=timeout), None
        except KafkaException as exc:
            kafka_error = f"unreachable: {_kafka_problem(exc)}"
    tables: list[TableSize] = []
    if dsn is not None:
        try:
            backlog, postgres_error = outbox_backlog(dsn, schemas, timeout=timeout), None
            tables = table_sizes(dsn, timeout=timeout)
        except psycopg.Error as exc:
            postgres_error = f"unreachable: {_first_line(exc)}"
    return PipelineReport(
        lags,
        backlog,
        tables,
        kafka_error,
        postgres_error,
        tuple(groups),
        schemas,
    )


def report_lines(report: PipelineReport) -> list[str]:
    """The report as the aligned text ``ordermesh status`` prints."""
    width = max([len("consumer group"), *(len(g) for g in report.group_names)])
    lines = [f"{'consumer group':<{width}}  {'lag':>7}  {'members':>7}  state"]
    if report.kafka_error is not None:
        lines.append(f"{'(all)':<{width}}  unknown: kafka {report.kafka_error}")
    for lag in report.groups:
        behind = " ".join(f"{t}={n}" for t, n in lag.by_topic.items() if n)
        missing = " ".join(f"{t}=missing" for t in lag.missing_topics)
        detail = "  ".join(part for part in (behind, missing) if part)
        lines.append(
            f"{lag.group:<{width}}  {lag.lag:>7}  {lag.members:>7}  {lag.state}"
            + (f"  behind: {detail}" if detail else "")
        )
    width = max([len("outbox schema"), *(len(s) for s in report.outbox_schemas)])
    lines += [
        "",
        f"{'outbox schema':<{width}}  {'unpublished':>11}  {'parked':>6}  oldest unpublished",
    ]
    if report.postgres_error is not None:
        lines.append(f"{'(all)':<{width}}  unknown: postgres {report.postgres_error}")
    for backlog in report.outboxes:
        if not backlog.table_exists:
            lines.append(f"{backlog.schema:<{width}}  {'-':>11}  no outbox table (migrations?)")
            continue
        age = "-" if backlog.oldest_age is None else format_age(backlog.oldest_age)
        parked = f"{backlog.parked:>6}"
        lines.append(f"{backlog.schema:<{width}}  {backlog.unpublished:>11}  {parked}  {age}")
    if any(backlog.parked for backlog in report.outboxes):
        lines.append("parked rows: see `ordermesh outbox list`, then replay or discard them")
    if report.tables:
        width = max(len("largest tables"), *(len(size.table) for size in report.tables))
        lines += ["", f"{'largest tables':<{width}}  {'rows':>10}  {'size':>9}"]
        lines += [
            f"{size.table:<{width}}  {size.rows:>10}  {format_bytes(size.bytes):>9}"
            for size in report.tables
        ]
    return lines


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def waiting_lines(states: Sequence[ProcessState], now: datetime | None = None) -> list[str]:
    """Workers waiting for a dependency (an outage: they retry without limit), for status."""
    now = now or datetime.now(UTC)
    rows = [(state, blockage) for state in states for blockage in state.blocked]
    if not rows:
        return ["", "waiting on dependencies: none"]
    lines = ["", "waiting on dependencies:"]
    for state, blockage in rows:
        waited = format_age(now - datetime.fromisoformat(blockage.since))
        lines.append(
            f"  {blockage.worker} (pid {state.pid}) BLOCKED {waited} on {blockage.dependency}"
            f" after {blockage.retries} retries: {' '.join(blockage.error.split())}"
        )
    return lines


def dead_letter_line(letter: DeadLetter) -> str:
    """One dead letter on one line: when, where it came from, what, who failed and why."""
    try:
        failed_at = (
            datetime.fromisoformat(letter.failed_at).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
    except ValueError:
        failed_at = letter.failed_at or "?"
    origin = f"{letter.original_topic}[{letter.original_partition}]@{letter.original_offset}"
    event = event_name_of(letter.event_type) if letter.event_type else "?"
    key = letter.key.decode(errors="replace") if letter.key is not None else "-"
    return "  ".join(
        (
            failed_at,
            origin,
            event,
            f"id={letter.event_id or '-'}",
            f"key={key}",
            f"group={letter.consumer_group or '?'}",
            f"attempts={letter.attempts}",
            "error=" + " ".join(letter.error.split()),
        )
    )


def parked_line(row: ParkedRow) -> str:
    """One parked outbox row on one line: when, where, what, and why."""
    why = (
        f"held behind row {row.held_behind}"
        if row.held_behind is not None
        else "reason=" + " ".join(row.reason.split())
    )
    return "  ".join(
        (
            row.parked_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            f"{row.schema}#{row.outbox_id}",
            row.event_type,
            f"id={row.event_id}",
            f"key={row.message_key}",
            f"bytes={row.size}",
            why,
        )
    )


def format_age(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def _watermarks(
    config: Mapping[str, str | int | float | bool],
    partitions: Sequence[TopicPartition],
    timeout: float,
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """Low and high watermark of each partition, read without joining any group."""
    low: dict[tuple[str, int], int] = {}
    high: dict[tuple[str, int], int] = {}
    consumer = Consumer(
        {**config, "group.id": "ordermesh.inspect", "enable.auto.commit": False}, logger=_QUIET
    )
    try:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            low[key], high[key] = consumer.get_watermark_offsets(tp, timeout=timeout)
    finally:
        consumer.close()
    return low, high


def _state_name(state: Any) -> str:
    name = getattr(state, "name", str(state))
    return str(name).lower()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def _kafka_problem(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else exc
    return error.str() if isinstance(error, KafkaError) else str(error)
