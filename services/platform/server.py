"""Hosting gRPC components: health (Check and Watch), reflection, interceptors, and graceful
shutdown on SIGTERM/SIGINT (health goes NOT_SERVING first, then in-flight calls get a grace
period)."""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.platform import validation
from services.platform.contexts import PUBLIC_SERVICE_NAMES
from services.platform.interceptors import PlatformInterceptor
from services.platform.tokens import TokenVerifier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Component:
    """One gRPC service hosted by a server: its full name and how to add it."""

    service_name: str
    register: Callable[[grpc.aio.Server], None]
    public_methods: Collection[str] = ()


def max_request_bytes(service_names: Iterable[str]) -> int:
    """The largest encoding of any valid request to these services, from the contract's
    bounds, rounded up to a whole KiB."""
    pool = descriptor_pool.Default()
    largest = max(
        validation.rules_for(method.input_type).max_bytes
        for name in service_names
        for method in pool.FindServiceByName(name).methods
    )
    return -(-largest // 1024) * 1024


class GrpcHost:
    def __init__(
        self,
        components: Sequence[Component],
        verifier: TokenVerifier,
        *,
        host: str,
        port: int,
        grace_seconds: float,
        max_concurrent_streams: int = 1000,
    ) -> None:
        public = [method for component in components for method in component.public_methods]
        self._components = components
        self._grace = grace_seconds
        self.max_receive_bytes = max_request_bytes(c.service_name for c in components)
        platform = PlatformInterceptor(verifier, public)
        self._server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.max_connection_age_grace_ms", 5_000),
                # Nothing larger than the largest valid request is read off the network.
                ("grpc.max_receive_message_length", self.max_receive_bytes),
                ("grpc.max_concurrent_streams", max_concurrent_streams),
            ],
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        for component in components:
            # Each handler is wrapped as it is registered; no interceptor runs per call.
            registry = platform.registering(self._server)
            component.register(cast(grpc.aio.Server, registry))
        reflection.enable_server_reflection(
            (*PUBLIC_SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {host}:{port}")

    async def start(self) -> None:
        await self._server.start()
        for component in self._components:
            await self._health.set(component.service_name, health_pb2.HealthCheckResponse.SERVING)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "grpc server started",
            extra={"port": self.port, "services": [c.service_name for c in self._components]},
        )

    async def stop(self) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self._grace)
        log.info("grpc server stopped")


async def run_until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Starts, waits for SIGTERM or SIGINT, stops. The process exits 0 after a clean stop."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await start()
    await stopping.wait()
    log.info("shutdown requested")
    await stop()
