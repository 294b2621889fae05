"""Composition root of the API process: `python -m services [--components auth,order,...]`.

Locally one process hosts every gRPC component (to spare a 2-core machine); in compose each
container hosts one. The components do not know which.
"""

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import psycopg
import uvloop
from google.protobuf import json_format
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc

from services.auth import api as auth_api
from services.fulfillment import api as fulfillment_api
from services.inventory import api as inventory_api
from services.order import api as order_api
from services.payment import api as payment_api
from services.platform import migrations
from services.platform.db import Pool, open_pool
from services.platform.logging import configure_logging
from services.platform.resources import Resources
from services.platform.server import Component, GrpcHost, run_until_signalled
from services.platform.settings import Settings, SettingsError
from services.platform.tokens import TokenVerifier
from services.webhook import api as webhook_api
from workers.codec import EventCodec

log = logging.getLogger("ordermesh")

COMPONENTS: Mapping[str, Callable[[Resources], Component]] = {
    "auth": auth_api.component,
    "inventory": inventory_api.component,
    "order": order_api.component,
    "payment": payment_api.component,
    "fulfillment": fulfillment_api.component,
    "webhook": webhook_api.component,
}

SERVICES_ROOT = Path(__file__).parent


def all_migrations() -> list[migrations.Migration]:
    """The platform's shared definitions first, then each component's own schema."""
    found = migrations.discover("platform", migrations.PLATFORM_FOLDER)
    for name in COMPONENTS:
        folder = SERVICES_ROOT / name / "migrations"
        if folder.is_dir():
            found.extend(migrations.discover(name, folder))
    return found


def jwks_fetcher(channel: grpc.aio.Channel) -> Callable[[], Any]:
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def fetch() -> Mapping[str, Any]:
        response = await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    return fetch


def token_verifier(settings: Settings, auth_channel: grpc.aio.Channel) -> TokenVerifier:
    return TokenVerifier(
        jwks_fetcher(auth_channel),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        cache_seconds=settings.jwks_cache_seconds,
        stale_grace_seconds=settings.jwks_stale_grace_seconds,
    )


async def serve(settings: Settings, names: Sequence[str]) -> None:
    # Each hosted component connects as its own database role.
    pools = {name: await open_pool(settings, name=name, component=name) for name in names}
    auth_channel = grpc.aio.insecure_channel(settings.auth_service_addr)
    inventory_channel = grpc.aio.insecure_channel(settings.inventory_service_addr)
    verifier = token_verifier(settings, auth_channel)
    codec = EventCodec.from_directory(settings.schemas_dir)
    resources = Resources(settings, pools, verifier, auth_channel, inventory_channel, codec)
    try:
        components = [COMPONENTS[name](resources) for name in names]
    except SettingsError:
        await _close(pools.values(), (auth_channel, inventory_channel))
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
        await run_until_signalled(host.start, host.stop)
    finally:
        await _close(pools.values(), (auth_channel, inventory_channel))


async def _close(pools: Iterable[Pool], channels: Iterable[grpc.aio.Channel]) -> None:
    for channel in channels:
        await channel.close()
    for pool in pools:
        await pool.close()


async def migrate(settings: Settings) -> None:
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        applied = await migrations.apply(conn, all_migrations())
    log.info("migrations done", extra={"applied": len(applied)})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument(
        "--components",
        default=",".join(COMPONENTS),
        help=f"comma-separated subset of: {', '.join(COMPONENTS)}",
    )
    parser.add_argument("--migrate", action="store_true", help="apply migrations and exit")
    args = parser.parse_args()
    names = [name.strip() for name in args.components.split(",") if name.strip()]
    unknown = sorted(set(names) - set(COMPONENTS))
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
