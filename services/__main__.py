"""Composition root of the API process: `python -m services [--components auth,order,...]`.

Locally one process hosts every gRPC component (to spare a 2-core machine); in compose each
container hosts one. The components do not know which.
"""

import argparse
import importlib
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Protocol, cast

import grpc
import psycopg
import uvloop

from services.platform import migrations, tracing
from services.platform.contexts import CONTEXT_NAMES, context
from services.platform.db import Pool, open_pool
from services.platform.logging import configure_logging
from services.platform.messaging.codec import EventCodec
from services.platform.metrics import serving
from services.platform.resources import Resources
from services.platform.server import Component, GrpcHost, run_until_signalled
from services.platform.settings import Settings, SettingsError
from services.platform.tokens import token_verifier

log = logging.getLogger("ordermesh")


class ComponentBootstrap(Protocol):
    def component(self, resources: Resources) -> Component: ...


def component(name: str, resources: Resources) -> Component:
    """The gRPC component of the context ``name``, wired by its bootstrap."""
    module = importlib.import_module(context(name).bootstrap_module)
    return cast(ComponentBootstrap, module).component(resources)


async def serve(settings: Settings, names: Sequence[str]) -> None:
    with tracing.exporting(settings.zipkin_url, settings.trace_sample_ratio):
        await _serve(settings, names)


async def _serve(settings: Settings, names: Sequence[str]) -> None:
    # Each hosted component connects as its own database role.
    pools = {name: await open_pool(settings, name=name, component=name) for name in names}
    traced = tracing.client_interceptors()
    auth_channel = grpc.aio.insecure_channel(settings.auth_service_addr, interceptors=traced)
    inventory_channel = grpc.aio.insecure_channel(
        settings.inventory_service_addr, interceptors=traced
    )
    ratelimit_channel = grpc.aio.insecure_channel(
        settings.ratelimit_service_addr, interceptors=traced
    )
    channels = (auth_channel, inventory_channel, ratelimit_channel)
    verifier = token_verifier(settings, auth_channel)
    codec = EventCodec.from_directory(settings.schemas_dir)
    resources = Resources(
        settings, pools, verifier, auth_channel, inventory_channel, ratelimit_channel, codec
    )
    try:
        components = [component(name, resources) for name in names]
    except SettingsError:
        await _close(pools.values(), channels)
        raise
    host = GrpcHost(
        components,
        verifier,
        host=settings.grpc_host,
        port=settings.grpc_port,
        grace_seconds=settings.shutdown_grace_seconds,
        max_concurrent_streams=settings.grpc_max_concurrent_streams,
    )
    try:
        with serving(settings.metrics_port, settings.metrics_host):
            await run_until_signalled(host.start, host.stop)
    finally:
        await _close(pools.values(), channels)


async def _close(pools: Iterable[Pool], channels: Iterable[grpc.aio.Channel]) -> None:
    for channel in channels:
        await channel.close()
    for pool in pools:
        await pool.close()


async def migrate(settings: Settings) -> None:
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        applied = await migrations.apply(conn, migrations.all_migrations())
    log.info("migrations done", extra={"applied": len(applied)})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument(
        "--components",
        default=",".join(CONTEXT_NAMES),
        help=f"comma-separated subset of: {', '.join(CONTEXT_NAMES)}",
    )
    parser.add_argument("--migrate", action="store_true", help="apply migrations and exit")
    args = parser.parse_args()
    names = [name.strip() for name in args.components.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CONTEXT_NAMES))
    if unknown:
        parser.error(f"unknown components: {', '.join(unknown)}")
    try:
        settings = Settings.from_env()
        configure_logging("api", settings.log_level)
        if args.migrate:
            uvloop.run(migrate(settings))
            return
        uvloop.run(serve(settings, names))
    except SettingsError as error:
        sys.exit(f"python -m services: refusing to start: {error}")


if __name__ == "__main__":
    main()
