"""The bridge's HTTP and WebSocket surface, and its composition root (:func:`serve`).

- ``GET /ws/orders/{user_id}`` (WebSocket): authenticate, admit under the per-user limit,
  join the user's feed, then pump messages until either side closes.
- ``GET /healthz``: the counters as JSON (503 while shutting down).
- ``GET /`` and ``GET /static/...``: the live order page (:mod:`gateway.static`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import itertools
import json
import logging
import signal
import time
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from gateway import messages
from gateway.auth import Grant, authorize, parse_request, select_subprotocol
from gateway.closecodes import CloseCode, Refusal
from gateway.feed import FeedSettings, Hub, Session
from gateway.leases import SocketLeases
from gateway.settings import GatewaySettings
from gateway.static import StaticFiles, plain
from gateway.upstream import WATCH_CHANNEL_OPTIONS, GrpcWatchSource, WatchSource
from services.platform import metrics
from services.platform.tokens import TokenVerifier, token_verifier

log = logging.getLogger("gateway")

HEALTH_PATH = "/healthz"
# Clients send only pings (and the odd short message): nothing large is ever read.
MAX_CLIENT_MESSAGE_BYTES = 4096
REDIS_TIMEOUT_SECONDS = 0.5


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        verifier: TokenVerifier,
        leases: SocketLeases,
        source: WatchSource,
    ) -> None:
        self.settings = settings
        self._verifier = verifier
        self.leases = leases
        self.hub = Hub(
            source,
            FeedSettings(
                send_queue_size=settings.send_queue_size,
                upstream_grace_seconds=settings.upstream_grace_seconds,
            ),
        )
        self.static = StaticFiles(settings.static_dir)
        self.refusals: dict[str, int] = {}
        self.messages_sent = 0
        self.stopping = False
        self._numbers = itertools.count(1)

    # --- HTTP -----------------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        route = request.path.partition("?")[0]
        if route.startswith("/ws/"):
            return None
        if route == HEALTH_PATH:
            return self._health()
        if self.static.handles(request.path):
            return self.static.response(request.path, request.headers.get("If-None-Match"))
        return plain(http.HTTPStatus.NOT_FOUND, "not found")

    def counters(self) -> dict[str, Any]:
        return {
            **self.hub.counters(),
            "messages_sent": self.messages_sent,
            "redis_available": self.leases.redis_available,
            "refused": dict(self.refusals),
        }

    def _health(self) -> Response:
        status = http.HTTPStatus.SERVICE_UNAVAILABLE if self.stopping else http.HTTPStatus.OK
        body = json.dumps(
            {"status": "stopping" if self.stopping else "ok", **self.counters()}
        ).encode()
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("Connection", "close"),
            ]
        )
        return Response(status.value, status.phrase, headers, body)

    def select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        chosen = select_subprotocol(offered)
        return Subprotocol(chosen) if chosen is not None else None

    # --- WebSocket ------------------------------------------------------------------------

    async def handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None  # the handler runs after the handshake
        try:
            socket_request = parse_request(
                request.path, request.headers.get("Authorization"), _offered(request.headers)
            )
            grant = await authorize(self._verifier, socket_request)
        except Refusal as refusal:
            await self._refuse(connection, refusal, user_id=None)
            return
        lease = await self.leases.acquire(grant.principal.user_id)
        if lease is None:
            limit = self.settings.max_sockets_per_user
            await self._refuse(
                connection,
                Refusal(CloseCode.TOO_MANY_SOCKETS, f"at most {limit} concurrent sockets per user"),
                user_id=grant.principal.user_id,
            )
            return
        try:
            await self._serve_socket(
                connection, grant, socket_request.user_id, socket_request.cursor
            )
        finally:
            await self.leases.release(lease)

    async def _serve_socket(
        self, connection: ServerConnection, grant: Grant, user_id: str, cursor: str
    ) -> None:
        session = Session(
            f"{next(self._numbers)}", grant, cursor, queue_size=self.settings.send_queue_size
        )
        session.on_queued = functools.partial(self._write_soon, connection, session)
        started = time.monotonic()
        feed = self.hub.join(session, user_id, cursor)
        log.info(
            "socket open",
            extra={
                "socket": session.id,
                "user_id": user_id,
                "principal": grant.principal.user_id,
                "resume": bool(cursor),
            },
        )
        try:
            async for message in connection:
                if messages.is_ping(message):
                    session.send(messages.PONG)
        except ConnectionClosed:
            pass
        finally:
            self.hub.leave(session, feed)
            session.on_queued = None
            if session.writer is not None:
                session.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await session.writer
            if session.ended is not None:
                self._count(session.ended)
            log.info(
                "socket closed",
                extra={
                    "socket": session.id,
                    "user_id": user_id,
                    "code": connection.close_code,
                    "reason": connection.close_reason,
                    "seconds": round(time.monotonic() - started, 1),
                },
            )

    def _write_soon(self, connection: ServerConnection, session: Session) -> None:
        """Starts the socket's writer unless it is running (it stops when all is sent)."""
        if session.writer is None or session.writer.done():
            session.writer = asyncio.create_task(self._pump(connection, session))

    async def _pump(self, connection: ServerConnection, session: Session) -> None:
        """The socket's only writer while it runs: what is queued, in order, then the close
        a feed asked for."""
        try:
            while True:
                items = session.take()
                if not items:
                    if session.ended is not None:
                        await connection.close(session.ended.code, session.ended.reason)
                    return
                for text in items:
                    await connection.send(text)
                    self.messages_sent += 1
                    metrics.gateway_messages.inc()
                session.last_sent = time.monotonic()
        except ConnectionClosed:
            return

    async def heartbeats(self) -> None:
        """One ticker for every socket (rather than a timer each): a socket that sent nothing
        for the heartbeat interval gets a heartbeat."""
        interval = self.settings.heartbeat_seconds
        while True:
            await asyncio.sleep(min(interval / 4, 5.0))
            idle_since = time.monotonic() - interval
            for feed in list(self.hub.feeds.values()):
                for session in feed.sessions:
                    if session.last_sent <= idle_since and not session.queued:
                        session.last_sent = time.monotonic()
                        session.send(messages.heartbeat(session.position))

    async def _refuse(
        self, connection: ServerConnection, refusal: Refusal, *, user_id: str | None
    ) -> None:
        self._count(refusal)
        log.info(
            "socket refused",
            extra={"code": int(refusal.code), "reason": refusal.reason, "principal": user_id},
        )
        await connection.close(refusal.code, refusal.reason)

    def _count(self, refusal: Refusal) -> None:
        name = refusal.code.name.lower()
        if refusal.code is CloseCode.SLOW_CONSUMER:
            metrics.gateway_drops.inc()
        self.refusals[name] = self.refusals.get(name, 0) + 1


def _offered(headers: Headers) -> list[str]:
    return [
        protocol.strip()
        for header in headers.get_all("Sec-WebSocket-Protocol")
        for protocol in header.split(",")
        if protocol.strip()
    ]


def open_server(gateway: Gateway, *, host: str, port: int) -> Any:
    """The (unstarted) WebSocket server of ``gateway``; ``await`` it or use ``async with``."""
    return ws_serve(
        gateway.handle,
        host,
        port,
        process_request=gateway.process_request,
        select_subprotocol=gateway.select_subprotocol,
        # ~15 KB per idle socket without compression, ~48 KB with it (FIELD-NOTES): the
        # messages are small JSON, not worth the memory.
        compression=None,
        ping_interval=gateway.settings.ping_seconds,
        ping_timeout=gateway.settings.ping_seconds,
        close_timeout=5,
        max_size=MAX_CLIENT_MESSAGE_BYTES,
        max_queue=4,
        server_header="ordermesh-gateway",
    )


async def _renew_leases(leases: SocketLeases) -> None:
    while True:
        await asyncio.sleep(leases.renew_interval)
        await leases.renew()


async def _log_stats(gateway: Gateway, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        log.info("gateway counters", extra=gateway.counters())


def redis_client(url: str) -> Redis:
    """A client that fails fast: the bridge never waits on Redis (see gateway.leases)."""
    return Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )


async def serve(settings: GatewaySettings, ready: asyncio.Event | None = None) -> None:
    """Runs the bridge until SIGTERM or SIGINT, then closes every socket with 1001."""
    platform = settings.platform
    auth_channel = grpc.aio.insecure_channel(platform.auth_service_addr)
    order_channels = [
        grpc.aio.insecure_channel(settings.order_service_addr, options=WATCH_CHANNEL_OPTIONS)
        for _ in range(settings.upstream_channels)
    ]
    redis = redis_client(platform.redis_url)
    leases = SocketLeases(
        redis,
        limit=settings.max_sockets_per_user,
        ttl_seconds=settings.lease_ttl_seconds,
        instance_id=uuid.uuid4().hex[:12],
    )
    gateway = Gateway(
        settings, token_verifier(platform, auth_channel), leases, GrpcWatchSource(order_channels)
    )
    metrics.gateway_sockets.set_function(lambda: gateway.hub.sockets)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    background: list[asyncio.Task[None]] = []
    metrics_server = contextlib.ExitStack()
    try:
        metrics_server.enter_context(metrics.serving(platform.metrics_port, platform.metrics_host))
        server: Server = await open_server(gateway, host=settings.host, port=settings.port)
        background = [
            asyncio.create_task(_renew_leases(leases), name="lease renewal"),
            asyncio.create_task(_log_stats(gateway, settings.stats_seconds), name="stats"),
            asyncio.create_task(gateway.heartbeats(), name="heartbeats"),
        ]
        log.info(
            "gateway started",
            extra={
                "host": settings.host,
                "port": settings.port,
                "order_service": settings.order_service_addr,
                "max_sockets_per_user": settings.max_sockets_per_user,
            },
        )
        if ready is not None:
            ready.set()
        await stopping.wait()
        log.info("shutdown requested", extra=gateway.counters())
        gateway.stopping = True
        server.close()  # every socket gets 1001 (going away)
        try:
            async with asyncio.timeout(platform.shutdown_grace_seconds):
                await server.wait_closed()
        except TimeoutError:
            log.warning("sockets still open after the grace period")
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await gateway.hub.close()
        await leases.release_all()
        await redis.aclose()
        for channel in order_channels:
            await channel.close()
        await auth_channel.close()
        metrics_server.close()
        log.info("gateway stopped")
