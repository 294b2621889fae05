"""Composition root of the worker processes: `python -m workers [--components a,b,...]`.

Which workers exist, what each consumer group reads and handles, and which context provides
its handlers is the messaging registry's data (:mod:`services.platform.messaging.registry`);
each context's ``bootstrap.consumers`` builds the handlers. This module only decides what one
process hosts and wires it: locally one process hosts every consumer, in compose each
container hosts one, and any worker can run as several replicas (consumers of one group
share the partitions; relays stand by on an advisory lock until the active one goes away).
"""

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, cast

import grpc
import uvloop

from services.order import bootstrap as order_bootstrap
from services.platform import tracing
from services.platform.contexts import CONTEXTS, context
from services.platform.db import RELAY_COMPONENT, Pool, open_pool
from services.platform.logging import configure_logging
from services.platform.messaging import registry
from services.platform.messaging.admin import ensure_topics
from services.platform.messaging.codec import EventCodec
from services.platform.messaging.consumer import EventConsumer, Handlers
from services.platform.messaging.registry import ConsumerGroup
from services.platform.messaging.relay import OutboxRelay
from services.platform.messaging.retention import (
    Purge,
    RetentionPurger,
    components_of,
    event_table_purges,
)
from services.platform.messaging.state import StateBoard, state_path
from services.platform.metrics import serving
from services.platform.resources import Resources
from services.platform.settings import Settings, SettingsError
from services.platform.tokens import TokenVerifier
from services.webhook import bootstrap as webhook_bootstrap

log = logging.getLogger("ordermesh.workers")

# A replica that died (kill -9, a lost host) hands its partitions over after 10 s instead of
# librdkafka's default 45 s.
CONSUMER_CONFIG = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000}


class ConsumersBootstrap(Protocol):
    def consumers(self, resources: Resources) -> Mapping[str, Handlers]: ...


class PurgesBootstrap(Protocol):
    def purges(self, settings: Settings) -> list[Purge]: ...


def handlers_of(group: ConsumerGroup, resources: Resources) -> Handlers:
    """The handlers the group's context provides, which must be exactly the events the
    registry says the group handles."""
    module = importlib.import_module(context(group.context).bootstrap_module)
    handlers = cast(ConsumersBootstrap, module).consumers(resources)[group.worker]
    if handlers.events != frozenset(group.events):
        raise RuntimeError(
            f"{group.worker}: the registry declares {sorted(group.events)}, its context"
            f" provides handlers for {sorted(handlers.events)}"
        )
    return handlers


def all_purges(settings: Settings) -> list[Purge]:
    """The outbox and inbox purges of the registry, then those a context's bootstrap
    declares (its ``purges``)."""
    found = event_table_purges(registry.OUTBOXES, settings)
    for bounded in CONTEXTS:
        module = importlib.import_module(bounded.bootstrap_module)
        if hasattr(module, "purges"):
            found.extend(cast(PurgesBootstrap, module).purges(settings))
    return found


def database_components(names: Sequence[str], settings: Settings) -> list[str]:
    """The database roles the workers ``names`` connect as, each once."""
    wanted: list[str] = []
    for name in names:
        if name == registry.RELAY_WORKER:
            wanted.append(RELAY_COMPONENT)
        elif name == registry.RETENTION_WORKER:
            wanted.extend(components_of(all_purges(settings)))
        elif name == registry.WEBHOOK_SENDER_WORKER:
            wanted.append(registry.WEBHOOK_SENDER_CONTEXT)
        else:
            wanted.append(registry.consumer_group(name).context)
    return list(dict.fromkeys(wanted))


Runner = Callable[[Resources, StateBoard, asyncio.Event], Coroutine[Any, Any, None]]


async def run_relay(resources: Resources, board: StateBoard, stop: asyncio.Event) -> None:
    relay = OutboxRelay(
        resources.pool(RELAY_COMPONENT),
        {"bootstrap.servers": resources.settings.kafka_bootstrap},
        registry.OUTBOX_SCHEMAS,
        board=board,
    )
    await relay.run(stop)


async def run_retention(resources: Resources, board: StateBoard, stop: asyncio.Event) -> None:
    settings = resources.settings
    purger = RetentionPurger(
        resources.pools,
        all_purges(settings),
        interval=settings.retention_interval_seconds,
        board=board,
    )
    await purger.run(stop)


async def run_webhook_sender(resources: Resources, board: StateBoard, stop: asyncio.Event) -> None:
    sender = webhook_bootstrap.sender(resources, board)
    await sender.run(stop)


# The order funnel's oldest-in-status gauge is refreshed where the status projector runs.
STATUS_AGES_WORKER = "order_status_projector"


def consumer_runner(group: ConsumerGroup) -> Runner:
    async def run(resources: Resources, board: StateBoard, stop: asyncio.Event) -> None:
        handlers = handlers_of(group, resources)
        consumer = EventConsumer(
            resources.settings.kafka_bootstrap,
            group.group,
            group.topics,
            handlers.single,
            batch_handlers=handlers.batch,
            pool=resources.pool(group.context),
            codec=resources.codec,
            inbox_schema=group.inbox_schema,
            consumer_config=CONSUMER_CONFIG,
            board=board,
        )
        async with asyncio.TaskGroup() as tasks:
            if group.worker == STATUS_AGES_WORKER:
                tasks.create_task(order_bootstrap.status_ages(resources, stop), name="ages")
            tasks.create_task(consumer.run(stop), name=group.worker)

    return run


RUNNERS: Mapping[str, Runner] = {
    registry.RELAY_WORKER: run_relay,
    registry.RETENTION_WORKER: run_retention,
    registry.WEBHOOK_SENDER_WORKER: run_webhook_sender,
    **{group.worker: consumer_runner(group) for group in registry.CONSUMER_GROUPS},
}


async def run(settings: Settings, names: list[str]) -> None:
    with tracing.exporting(settings.zipkin_url, settings.trace_sample_ratio):
        await _run(settings, names)


async def _run(settings: Settings, names: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pools: dict[str, Pool] = {
        component: await open_pool(settings, name=f"workers-{component}", component=component)
        for component in database_components(names, settings)
    }
    channel = grpc.aio.insecure_channel(
        settings.inventory_service_addr, interceptors=tracing.client_interceptors()
    )
    label = names[0] if len(names) == 1 else "workers"
    state_dir = settings.state_dir
    board = StateBoard(label, None if state_dir is None else state_path(state_dir, label))
    resources = Resources(
        settings,
        pools,
        _no_tokens(settings),
        channel,
        channel,
        channel,
        EventCodec.from_directory(settings.schemas_dir),
    )
    log.info("workers starting", extra={"workers": names})
    try:
        with serving(settings.metrics_port, settings.metrics_host):
            async with asyncio.TaskGroup() as group:
                group.create_task(board.run(stop), name="state")
                for name in names:
                    group.create_task(RUNNERS[name](resources, board, stop), name=name)
    finally:
        await channel.close()
        for pool in pools.values():
            await pool.close()
    log.info("workers stopped")


def _no_tokens(settings: Settings) -> TokenVerifier:
    """Workers verify no caller's token: a verifier that would refuse every one."""

    async def no_keys() -> Mapping[str, Any]:
        return {"keys": []}

    return TokenVerifier(no_keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument(
        "--components",
        default=",".join(registry.WORKERS),
        help=f"comma-separated subset of: {', '.join(registry.WORKERS)}; 'consumers' means every"
        " consumer",
    )
    parser.add_argument(
        "--create-topics", action="store_true", help="create the Kafka topics and exit"
    )
    args = parser.parse_args()
    consumers = [group.worker for group in registry.CONSUMER_GROUPS]
    names = [name.strip() for name in args.components.split(",") if name.strip()]
    if "consumers" in names:
        names = [n for n in names if n != "consumers"] + [n for n in consumers if n not in names]
    unknown = sorted(set(names) - set(registry.WORKERS))
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
