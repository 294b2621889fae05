"""Composition root of the worker process: `python -m workers [--components a,b,...]`.

Locally one process hosts every worker; in compose each container hosts one, and any worker
can run as several replicas: consumers of one group share the partitions, and relays stand
by on an advisory lock until the active one goes away.
"""

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import uvloop

from services.fulfillment.consumers import FulfillmentWorker
from services.inventory.consumers import InventoryManager
from services.order.adapters.catalog import InventoryCatalog
from services.order.consumers import OrderStatusProjector, OrderValidator
from services.payment.adapters.simulated_provider import SimulatedPaymentProvider
from services.payment.consumers import PaymentProcessor
from services.platform.db import Pool, open_pool
from services.platform.logging import configure_logging
from services.platform.settings import Settings, SettingsError
from workers import topics
from workers.admin import ensure_topics
from workers.codec import EventCodec
from workers.consumer import BatchHandler, EventConsumer, Handler
from workers.relay import OutboxRelay
from workers.retention import RETENTION, RetentionPurger, components_of, purges
from workers.state import StateBoard, state_path

log = logging.getLogger("ordermesh.workers")

# Every schema whose service writes events through an outbox.
OUTBOX_SCHEMAS = ("orders", "payment", "inventory", "fulfillment")


@dataclass(frozen=True, slots=True)
class WorkerResources:
    settings: Settings
    pools: Mapping[str, Pool]
    codec: EventCodec
    inventory_channel: grpc.aio.Channel
    board: StateBoard


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A consumer worker: its group, what it reads, whose inbox records what it applied,
    and how to build its handlers (one event at a time, or a batch's run of one event type at
    once)."""

    group: str
    topics: tuple[str, ...]
    component: str
    inbox_schema: str
    handlers: Callable[[WorkerResources], Mapping[str, Handler]]
    batch_handlers: Callable[[WorkerResources], Mapping[str, BatchHandler]] | None = None


CONSUMERS: Mapping[str, ConsumerSpec] = {
    "order_validator": ConsumerSpec(
        topics.ORDER_VALIDATOR_GROUP,
        (topics.ORDERS,),
        "order",
        "orders",
        lambda _: {},
        batch_handlers=lambda r: OrderValidator(
            r.codec, InventoryCatalog(r.inventory_channel)
        ).batch_handlers(),
    ),
    "order_status_projector": ConsumerSpec(
        topics.ORDER_STATUS_PROJECTOR_GROUP,
        (topics.ORDERS, topics.PAYMENTS, topics.INVENTORY, topics.FULFILLMENT),
        "order",
        "orders",
        lambda _: {},
        batch_handlers=lambda r: OrderStatusProjector(r.codec).batch_handlers(),
    ),
    "payment_processor": ConsumerSpec(
        topics.PAYMENT_PROCESSOR_GROUP,
        (topics.ORDERS, topics.INVENTORY),
        "payment",
        "payment",
        lambda r: PaymentProcessor(r.codec, SimulatedPaymentProvider()).handlers(),
    ),
    "inventory_manager": ConsumerSpec(
        topics.INVENTORY_MANAGER_GROUP,
        (topics.PAYMENTS, topics.ORDERS),
        "inventory",
        "inventory",
        lambda r: InventoryManager(r.codec).single_handlers(),
        batch_handlers=lambda r: InventoryManager(r.codec).batch_handlers(),
    ),
    "fulfillment": ConsumerSpec(
        topics.FULFILLMENT_GROUP,
        (topics.ORDERS,),
        "fulfillment",
        "fulfillment",
        lambda r: FulfillmentWorker(r.codec).handlers(),
    ),
}

WORKER_NAMES = ("relay", *CONSUMERS, RETENTION)
RELAY_COMPONENT = "relay"


def database_components(names: Sequence[str], settings: Settings) -> list[str]:
    """The database roles the workers ``names`` connect as, each once."""
    wanted: list[str] = []
    for name in names:
        if name == "relay":
            wanted.append(RELAY_COMPONENT)
        elif name == RETENTION:
            wanted.extend(components_of(purges(settings)))
        else:
            wanted.append(CONSUMERS[name].component)
    return list(dict.fromkeys(wanted))


async def run_retention(resources: WorkerResources, stop: asyncio.Event) -> None:
    settings = resources.settings
    purger = RetentionPurger(
        resources.pools,
        purges(settings),
        interval=settings.retention_interval_seconds,
        board=resources.board,
    )
    await purger.run(stop)


async def run_relay(resources: WorkerResources, stop: asyncio.Event) -> None:
    relay = OutboxRelay(
        resources.pools[RELAY_COMPONENT],
        {"bootstrap.servers": resources.settings.kafka_bootstrap},
        OUTBOX_SCHEMAS,
        board=resources.board,
    )
    await relay.run(stop)


Runner = Callable[[WorkerResources, asyncio.Event], Coroutine[Any, Any, None]]


def consumer_runner(spec: ConsumerSpec) -> Runner:
    async def run(resources: WorkerResources, stop: asyncio.Event) -> None:
        consumer = EventConsumer(
            resources.settings.kafka_bootstrap,
            spec.group,
            spec.topics,
            spec.handlers(resources),
            batch_handlers=None if spec.batch_handlers is None else spec.batch_handlers(resources),
            pool=resources.pools[spec.component],
            codec=resources.codec,
            inbox_schema=spec.inbox_schema,
            # A replica that died (kill -9, lost host) hands its partitions over after 10 s
            # instead of librdkafka's default 45 s.
            consumer_config={"session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000},
            board=resources.board,
        )
        await consumer.run(stop)

    return run


async def run(settings: Settings, names: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pools = {
        component: await open_pool(settings, name=f"workers-{component}", component=component)
        for component in database_components(names, settings)
    }
    channel = grpc.aio.insecure_channel(settings.inventory_service_addr)
    state_dir = settings.state_dir
    label = names[0] if len(names) == 1 else "workers"
    board = StateBoard(label, None if state_dir is None else state_path(state_dir, label))
    resources = WorkerResources(
        settings, pools, EventCodec.from_directory(settings.schemas_dir), channel, board
    )
    runners: dict[str, Runner] = {
        "relay": run_relay,
        RETENTION: run_retention,
        **{n: consumer_runner(s) for n, s in CONSUMERS.items()},
    }
    log.info("workers starting", extra={"workers": names})
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(board.run(stop), name="state")
            for name in names:
                group.create_task(runners[name](resources, stop), name=name)
    finally:
        await channel.close()
        for pool in pools.values():
            await pool.close()
    log.info("workers stopped")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument(
        "--components",
        default=",".join(WORKER_NAMES),
        help=f"comma-separated subset of: {', '.join(WORKER_NAMES)}; 'consumers' means every "
        "consumer",
    )
    parser.add_argument(
        "--create-topics", action="store_true", help="create the Kafka topics and exit"
    )
    args = parser.parse_args()
    names = [name.strip() for name in args.components.split(",") if name.strip()]
    if "consumers" in names:
        names = [n for n in names if n != "consumers"] + [n for n in CONSUMERS if n not in names]
    unknown = sorted(set(names) - set(WORKER_NAMES))
    if unknown:
        parser.error(f"unknown workers: {', '.join(unknown)}")
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        sys.exit(f"python -m workers: refusing to start: {error}")
    configure_logging("workers", settings.log_level)
    if args.create_topics:
        ensure_topics(settings.kafka_bootstrap)
        return
    uvloop.run(run(settings, names))


if __name__ == "__main__":
    main()
