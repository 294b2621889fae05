"""Composition root of the rate-limit service: Redis counters, the live limits, the gRPC
server (with health and reflection), SIGHUP reloads and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import cast

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from ordermesh.vendor.envoy_rls.v3 import rls_pb2_grpc

from ratelimit.api import SERVICE, RateLimitApi
from ratelimit.config import LiveConfig
from ratelimit.settings import RateLimitSettings
from ratelimit.window import RedisCounters
from services.platform.interceptors import metered

log = logging.getLogger(__name__)


class RateLimitServer:
    def __init__(self, settings: RateLimitSettings) -> None:
        self._settings = settings
        self.config = LiveConfig(settings.config_path)
        self._redis = aioredis.Redis.from_url(
            settings.platform.redis_url,
            socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout,
            max_connections=64,
        )
        self.counters = RedisCounters(self._redis)
        self._server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.max_receive_message_length", 64 * 1024),
            ]
        )
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
            RateLimitApi(lambda: self.config.current, self.counters),
            cast(grpc.aio.Server, metered(self._server)),
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = self._server.add_insecure_port(f"{settings.host}:{settings.port}")
        if self.port == 0:
            raise OSError(f"cannot bind the rate-limit service to {settings.host}:{settings.port}")
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._server.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.config.reload, "SIGHUP")
        self._watcher = asyncio.create_task(self.config.watch(), name="limits-watcher")
        for name in (SERVICE, ""):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "rate-limit service started",
            extra={"port": self.port, "config": str(self.config.path)},
        )

    async def stop(self) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self._settings.platform.shutdown_grace_seconds)
        if self._watcher is not None:
            self._watcher.cancel()
        await self._redis.aclose()
        log.info("rate-limit service stopped")
