"""Event-bus throughput: outbox insert → relay → Kafka → consumer applying through its inbox.

    python bench/event_bus.py --events 50000

Phases, each on fresh rows: encode; insert into an outbox; the relay publishing that
backlog; a consumer applying the published backlog (inbox row + one upsert per batch or
per event); then end to end, with inserts, relay and consumer running at once (events
encoded beforehand), measured against the goal (30,000 events/s with the relay in its own
process). Uses the running dev
stack's Postgres and Kafka, starting (and afterwards stopping) whichever is not running.
CPU figures are seconds of CPU per phase: this process (all its threads, librdkafka's
included), the Kafka broker and all Postgres processes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import plots
from devstack import kafka, postgres, procs
from services.platform import migrations
from services.platform.messaging.admin import delete_topics, ensure_topics
from services.platform.messaging.codec import SCHEMA_DIR, EventCodec, EventEnvelope
from services.platform.messaging.consumer import BatchHandler, EventConsumer
from services.platform.messaging.outbox import (
    OutboxMessage,
    add_messages_to_outbox,
    inbox_ddl,
    outbox_ddl,
    outbox_message,
)
from services.platform.messaging.registry import TopicSpec
from services.platform.messaging.relay import OutboxRelay

INSERT_BATCH = 5000
GOAL_EVENTS_PER_SECOND = 30_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    name: str
    events: int
    seconds: float
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _postgres_cpu() -> float:
    """Live Postgres processes plus what the postmaster has reaped.

    A backend that exits between two snapshots (a pool closing) leaves the live sum, but its
    time moves into its parent's cutime/cstime, so the total never goes down.
    """
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(v) for v in fields[11:15]) / CLOCK_TICKS
    return total


def _cpu_snapshot(children: Mapping[str, int]) -> dict[str, float]:
    kafka_pid = procs.read_pid(kafka.NAME)
    return {
        "bench": time.process_time(),
        **{name: _proc_cpu(pid) for name, pid in children.items()},
        "kafka": 0.0 if kafka_pid is None else _proc_cpu(kafka_pid),
        "postgres": _postgres_cpu(),
    }


MEASURED: list[Phase] = []  # every phase measured, in order (for --plot)


async def measure(
    name: str,
    events: int,
    work: Callable[[], Awaitable[None]],
    children: Mapping[str, int] | None = None,
) -> Phase:
    before, started = _cpu_snapshot(children or {}), time.perf_counter()
    await work()
    seconds = time.perf_counter() - started
    after = _cpu_snapshot(children or {})
    phase = Phase(name, events, seconds, {k: after[k] - before[k] for k in before})
    MEASURED.append(phase)
    print(
        f"{name:<24} {events:>7} events {seconds:7.2f} s {phase.rate:>9,.0f} events/s   cpu "
        + " ".join(f"{k}={v:.1f}s" for k, v in phase.cpu.items()),
        flush=True,
    )
    return phase


def order_created(order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "user_id": f"user-{hash(order_id) % 1000}",
        "items": [
            {"product_id": "sku-keyboard", "quantity": 1, "unit_price_minor": 8999},
            {"product_id": "sku-mouse", "quantity": 2, "unit_price_minor": 2450},
        ],
        "total_minor": 13899,
        "currency": "USD",
        "payment_method": "credit_card",
        "shipping_address": {
            "street": "1 Main St",
            "city": "Springfield",
            "state": "IL",
            "zip": "62701",
            "country": "US",
        },
        "created_at": datetime.now(UTC),
        "version": 1,
    }


def encode(codec: EventCodec, topic: str, count: int) -> list[OutboxMessage]:
    messages = []
    for _ in range(count):
        order_id = str(uuid.uuid4())
        messages.append(
            outbox_message(
                codec,
                topic=topic,
                key=order_id,
                event_name="OrderCreated",
                record=order_created(order_id),
                source="/ordermesh/bench",
            )
        )
    return messages


async def insert(
    pool: AsyncConnectionPool[Any], schema: str, messages: list[OutboxMessage]
) -> None:
    for start in range(0, len(messages), INSERT_BATCH):
        async with pool.connection() as conn, conn.transaction():
            await add_messages_to_outbox(conn, schema, messages[start : start + INSERT_BATCH])


async def until(check: Callable[[], bool], limit: float) -> None:
    deadline = time.perf_counter() + limit
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"bench phase did not finish within {limit:.0f}s")
        await asyncio.sleep(0.005)


def projector(schema: str) -> Callable[[EventEnvelope, AsyncConnection[Any]], Awaitable[None]]:
    """Per-event handler: one upsert per event."""
    statement = (
        f"INSERT INTO {schema}.order_status (order_id, status, version) VALUES (%s, %s, %s)"
        " ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,"
        " version = excluded.version"
    )

    async def apply(envelope: EventEnvelope, conn: AsyncConnection[Any]) -> None:
        record = envelope.record
        await conn.execute(statement, (record["order_id"], "PENDING", record["version"]))

    return apply


def batch_projector(schema: str) -> BatchHandler:
    """Batch handler: one upsert statement per run of events (latest version per order)."""
    statement = (
        f"INSERT INTO {schema}.order_status (order_id, status, version)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])"
        " ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,"
        " version = excluded.version"
    )

    async def apply(envelopes: Sequence[EventEnvelope], conn: AsyncConnection[Any]) -> None:
        latest = {e.record["order_id"]: e.record["version"] for e in envelopes}
        await conn.execute(
            statement, (list(latest), ["PENDING"] * len(latest), list(latest.values()))
        )

    return apply


@contextmanager
def servers() -> Iterator[None]:
    started = [s for s in (postgres, kafka) if not s.is_ready()]
    for server in started:
        server.start()
    try:
        yield
    finally:
        for server in reversed(started):
            server.stop()


def relay_process(dsn: str, bootstrap: str, schema: str, batch_size: int, stop: EventType) -> None:
    """Entry point of the child process that hosts the relay for the end-to-end phase."""

    async def serve() -> None:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=2)
        async with pool:
            stopping = asyncio.Event()
            relay = OutboxRelay(
                pool, {"bootstrap.servers": bootstrap}, [schema], batch_size=batch_size
            )
            task = asyncio.create_task(relay.run(stopping))
            await asyncio.to_thread(stop.wait)
            stopping.set()
            await task

    asyncio.run(serve())


@dataclass
class Bench:
    args: argparse.Namespace
    pool: AsyncConnectionPool[Any]
    codec: EventCodec
    bootstrap: str
    suffix: str
    schema: str
    progress: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    @property
    def limit(self) -> float:
        return max(120.0, float(self.args.events) / 1000)

    def topic(self, name: str) -> str:
        return f"bench.{self.suffix}.{name}"

    def consumer(self, topic: str) -> EventConsumer:
        batch = self.args.handler == "batch"
        return EventConsumer(
            self.bootstrap,
            f"{topic}.group",
            [topic],
            {} if batch else {"OrderCreated": projector(self.schema)},
            batch_handlers={"OrderCreated": batch_projector(self.schema)} if batch else {},
            pool=self.pool,
            codec=self.codec,
            inbox_schema=self.schema,
            batch_size=self.args.consumer_batch,
            pipeline=not self.args.no_pipeline,
        )

    def relay(self) -> OutboxRelay:
        config = {"bootstrap.servers": self.bootstrap}
        return OutboxRelay(self.pool, config, [self.schema], batch_size=self.args.relay_batch)

    async def create_schema(self) -> None:
        async with self.pool.connection() as conn:
            platform = migrations.discover("platform", migrations.PLATFORM_FOLDER)
            await migrations.apply(conn, platform)
            await conn.execute(f"CREATE SCHEMA {self.schema}")
            await conn.execute(outbox_ddl(self.schema))
            await conn.execute(inbox_ddl(self.schema))
            await conn.execute(
                f"CREATE TABLE {self.schema}.order_status"
                " (order_id text PRIMARY KEY, status text NOT NULL, version bigint NOT NULL)"
            )

    async def backlog_phases(self) -> None:
        events, topic = self.args.events, self.topic("backlog")
        backlog: list[OutboxMessage] = []

        async def encode_backlog() -> None:
            backlog.extend(encode(self.codec, topic, events))

        await measure("encode (Avro+envelope)", events, encode_backlog)
        await measure(
            "outbox insert",
            events,
            lambda: insert(self.pool, self.schema, backlog),
        )
        stop = asyncio.Event()
        relay, consumer = self.relay(), self.consumer(topic)
        tasks = [asyncio.create_task(relay.run(stop))]
        await measure(
            "relay publish",
            events,
            lambda: until(lambda: relay.published >= events, self.limit),
        )
        tasks.append(asyncio.create_task(consumer.run(stop)))
        await measure(
            "consume + apply",
            events,
            lambda: until(lambda: consumer.stats.applied >= events, self.limit),
        )
        stop.set()
        await asyncio.gather(*tasks)

    async def end_to_end(self, name: str, topic: str, *, relay_in_child: bool) -> Phase:
        events = self.args.events
        stop = asyncio.Event()
        consumer = self.consumer(topic)
        tasks = [asyncio.create_task(consumer.run(stop))]
        child_stop = multiprocessing.get_context("spawn").Event()
        child = None
        if relay_in_child:
            child = multiprocessing.get_context("spawn").Process(
                target=relay_process,
                args=(
                    postgres.dsn(),
                    self.bootstrap,
                    self.schema,
                    self.args.relay_batch,
                    child_stop,
                ),
            )
            child.start()
        else:
            tasks.append(asyncio.create_task(self.relay().run(stop)))
        await until(lambda: bool(consumer.assigned), self.limit)
        live = encode(self.codec, topic, events)

        async def insert_and_wait() -> None:
            await insert(self.pool, self.schema, live)
            await until(lambda: consumer.stats.applied >= events, self.limit)

        children = {"relay": child.pid} if child is not None and child.pid else {}
        sampling = None
        if self.args.plot is not None:
            # --plot: events applied so far, every 0.1 s (an attribute read; not measured).
            samples = self.progress.setdefault(name, [])
            began = time.perf_counter()

            async def sample() -> None:
                while True:
                    samples.append((time.perf_counter() - began, consumer.stats.applied))
                    await asyncio.sleep(0.1)

            sampling = asyncio.create_task(sample())
        phase = await measure(name, events, insert_and_wait, children)
        if sampling is not None:
            sampling.cancel()
            self.progress[name].append((time.perf_counter() - began, consumer.stats.applied))
        stop.set()
        child_stop.set()
        await asyncio.gather(*tasks)
        if child is not None:
            await asyncio.to_thread(child.join, 30)
        return phase


def plot(
    directory: Path, phases: Sequence[Phase], progress: Mapping[str, Sequence[tuple[float, int]]]
) -> None:
    """--plot: events/s of every phase, and the events applied over time in the two end to
    end phases (the consumer's count, sampled every 0.1 s)."""
    plots.print_written(
        [
            plots.bars(
                directory,
                "events-per-second",
                "event bus: events/s of each phase",
                {phase.name: phase.rate for phase in phases},
                xlabel="events per second",
            ),
            plots.lines(
                directory,
                "end-to-end-applied-over-time",
                "event bus end to end: events applied by the consumer since the phase began",
                {name: list(samples) for name, samples in progress.items()},
                xlabel="time since the phase began (s)",
                ylabel="events applied (cumulative)",
            ),
        ]
    )


def print_goal(one: Phase, two: Phase) -> None:
    """The goal is met by the deployed shape: the relay in a process of its own. Events are
    encoded before the clock starts (the encode phase above gives that cost on its own)."""
    print("\n== goal")
    print(
        f"  {'HIT ' if two.rate >= GOAL_EVENTS_PER_SECOND else 'MISS'}  end to end (outbox"
        f" insert, relay, Kafka, consumer applying through its inbox)"
        f" ≥ {GOAL_EVENTS_PER_SECOND:,} events/s: {two.rate:,.0f} events/s with the relay in"
        f" its own process ({one.rate:,.0f} with everything in one)"
    )


async def run(args: argparse.Namespace) -> None:
    bootstrap = kafka.bootstrap()
    suffix = uuid.uuid4().hex[:10]
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        postgres.dsn(), min_size=4, max_size=8, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    bench = Bench(
        args, pool, EventCodec.from_directory(SCHEMA_DIR), bootstrap, suffix, f"bench_{suffix}"
    )
    topics = [bench.topic(name) for name in ("backlog", "live1", "live2")]
    await asyncio.to_thread(ensure_topics, bootstrap, [TopicSpec(t, 3) for t in topics])
    try:
        await bench.create_schema()
        await bench.backlog_phases()
        one = await bench.end_to_end("end to end, 1 process", topics[1], relay_in_child=False)
        two = await bench.end_to_end("end to end, 2 processes", topics[2], relay_in_child=True)
        print_goal(one, two)
        if args.plot is not None:
            plot(args.plot, MEASURED, bench.progress)
    finally:
        if not args.keep:
            async with pool.connection() as conn:
                await conn.execute(f"DROP SCHEMA IF EXISTS {bench.schema} CASCADE")
            await asyncio.to_thread(delete_topics, bootstrap, topics)
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--relay-batch", type=int, default=1000)
    parser.add_argument("--consumer-batch", type=int, default=500)
    parser.add_argument(
        "--handler",
        choices=("batch", "event"),
        default="batch",
        help="apply with one upsert per polled batch, or one per event (pipelined)",
    )
    parser.add_argument("--no-pipeline", action="store_true", help="per-event: no pipelining")
    parser.add_argument("--keep", action="store_true", help="keep the bench schema and topics")
    plots.add_plot_argument(parser, "event_bus")
    args = parser.parse_args()
    with servers():
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
