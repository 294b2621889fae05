"""Composition root of the worker process: `python -m workers [--components relay,...]`.

Locally one process hosts every worker; in compose each container hosts one, and any
worker can run as several replicas (consumer groups share partitions, relays stand by on
an advisory lock).
"""

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping

import uvloop
from psycopg_pool import AsyncConnectionPool

from services.platform.logging import configure_logging
from services.platform.settings import Settings
from workers.admin import ensure_topics
from workers.relay import OutboxRelay

log = logging.getLogger("ordermesh.workers")

# Every schema whose service writes events through an outbox.
OUTBOX_SCHEMAS = ("orders",)

Worker = Callable[[Settings, asyncio.Event], Awaitable[None]]


async def run_relay(settings: Settings, stop: asyncio.Event) -> None:
    async with AsyncConnectionPool(
        settings.database_url,
        min_size=1,
        max_size=2,
        name="outbox-relay",
        kwargs={"autocommit": True, "application_name": "ordermesh-outbox-relay"},
        open=False,
    ) as pool:
        relay = OutboxRelay(pool, {"bootstrap.servers": settings.kafka_bootstrap}, OUTBOX_SCHEMAS)
        await relay.run(stop)


WORKERS: Mapping[str, Worker] = {"relay": run_relay}


async def run(settings: Settings, names: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("workers starting", extra={"workers": names})
    async with asyncio.TaskGroup() as group:
        for name in names:
            group.create_task(WORKERS[name](settings, stop), name=name)
    log.info("workers stopped")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument(
        "--components", default=",".join(WORKERS), help=f"subset of: {', '.join(WORKERS)}"
    )
    parser.add_argument(
        "--create-topics", action="store_true", help="create the Kafka topics and exit"
    )
    args = parser.parse_args()
    settings = Settings.from_env()
    configure_logging("workers", settings.log_level)
    if args.create_topics:
        ensure_topics(settings.kafka_bootstrap)
        return
    names = [name.strip() for name in args.components.split(",") if name.strip()]
    unknown = sorted(set(names) - set(WORKERS))
    if unknown:
        parser.error(f"unknown workers: {', '.join(unknown)}")
    uvloop.run(run(settings, names))


if __name__ == "__main__":
    main()
