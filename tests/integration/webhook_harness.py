"""What the webhook delivery tests share: real HTTP receivers on 127.0.77.x (spoken with h11,
counting the requests they hold at once), the webhook context wired by its own bootstrap over
a pool connected as its own database role (conftest's ``webhooks`` fixture), webhooks
registered through the real handler (and deleted again, deliveries and all), deliveries
recorded as the dispatcher records them, and senders run until the test is done."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import h11

from devstack import postgres
from services.platform.db import Pool, open_pool
from services.platform.messaging.codec import EventCodec
from services.platform.resources import Resources
from services.platform.settings import Settings
from services.platform.tokens import TokenVerifier
from services.webhook import bootstrap as webhook_bootstrap
from services.webhook import handlers
from services.webhook.adapters import deliveries
from services.webhook.adapters.deliveries import PostgresDeliveryQueue
from services.webhook.adapters.repository import PostgresOwnedWebhooks, PostgresWebhookRepository
from services.webhook.adapters.resolver import DnsResolver
from services.webhook.adapters.secrets import SecretCipher
from services.webhook.domain.commands import DeleteWebhook, RegisterWebhook
from services.webhook.domain.delivery import delivery_body
from services.webhook.domain.model import Delivery, RegisteredWebhook
from services.webhook.sender import WebhookSender
from services.webhook.settings import PREFIX, WebhookSettings

RECEIVER_NETWORK = "127.0.77.0/24"
# Every receiver gets an address of its own in the allow-listed network (Linux routes all of
# 127/8 to the loopback interface).
_octets = itertools.cycle(range(2, 255))


def receiver_address() -> str:
    """An address of its own in the allow-listed network, for a server a test starts."""
    return f"127.0.77.{next(_octets)}"


def fast_settings(**overrides: str) -> dict[str, str]:
    """Sender settings that let the tests' receivers in and retry within a second;
    ``overrides`` by the name after ORDERMESH_WEBHOOK_."""
    env = {
        "ALLOWED_NETWORKS": RECEIVER_NETWORK,
        "POLL_SECONDS": "0.1",
        "RETRY_BASE_SECONDS": "0.2",
        "RETRY_MIN_SPAN_SECONDS": "0",
        "CONNECT_TIMEOUT_SECONDS": "1",
        "TIMEOUT_SECONDS": "5",
        "LEASE_SECONDS": "10",
        **overrides,
    }
    return {PREFIX + name: value for name, value in env.items()}


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 15.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{check.__qualname__} not true within {within} s")
        await asyncio.sleep(interval)


# --- receivers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    target: str
    headers: Mapping[str, str]
    body: bytes
    arrived: float  # time.monotonic()

    @property
    def document(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)
        return found

    @property
    def delivery_id(self) -> str:
        return self.headers["x-webhook-id"]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: Sequence[tuple[str, str]] = ()


# What a receiver does with a request: a reply, or None to hold the connection open without
# ever answering (until the client goes away).
Behaviour = Callable[[Request], Awaitable[Reply | None]]


def answering(*replies: Reply) -> Behaviour:
    """The replies in turn, the last one from then on (200 "ok" if none)."""
    queue = list(replies or (Reply(),))

    async def reply(request: Request) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return reply


def slow(seconds: float, then: Reply = Reply()) -> Behaviour:
    async def reply(request: Request) -> Reply:
        await asyncio.sleep(seconds)
        return then

    return reply


async def never_answering(request: Request) -> None:
    return None


# What a raw receiver does with each connection: reads and writes whatever bytes it likes.
Responder = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class _Connections:
    """A receiver's asyncio server and the connections it is serving: started on an
    address, each connection tracked and closed (bounded) when its handler ends, all of them
    cancelled when the receiver closes."""

    server: asyncio.Server | None = None
    serving: set[asyncio.Task[Any]] = field(default_factory=set)
    count: int = 0

    async def start(
        self, handle: Responder, host: str, port: int, tls: ssl.SSLContext | None
    ) -> tuple[str, int]:
        self.server = await asyncio.start_server(handle, host, port, ssl=tls)
        bound_host, bound_port = self.server.sockets[0].getsockname()[:2]
        return bound_host, bound_port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.serving):
            task.cancel()
        await asyncio.gather(*self.serving, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    @asynccontextmanager
    async def connection(self, writer: asyncio.StreamWriter) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self.serving.add(task)
        self.count += 1
        try:
            yield
        except (ConnectionError, h11.ProtocolError):
            pass  # the sender hung up (it reads only the start of a long answer)
        except asyncio.CancelledError:
            pass  # the receiver is closing: the connection ends with it
        finally:
            # A bounded close: a handler may have left the connection in any state (a TLS
            # one that stopped reading would otherwise wait for its shutdown indefinitely).
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            writer.transport.abort()
            self.serving.discard(task)


@dataclass
class Receiver:
    """An HTTP/1.1 server on an address of its own that records every request it gets;
    HTTPS with ``tls`` (a server context)."""

    behaviour: Behaviour
    host: str = ""
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    _connections: _Connections = field(default_factory=_Connections)
    tls: ssl.SSLContext | None = None

    @property
    def connections(self) -> int:
        return self._connections.count

    def url(self, path: str = "/hook") -> str:
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://{self.host}:{self.port}{path}"

    def ids(self) -> list[str]:
        return [request.delivery_id for request in self.requests]

    async def start(self, host: str, port: int = 0) -> None:
        self.host, self.port = await self._connections.start(self._serve, host, port, self.tls)

    async def close(self) -> None:
        await self._connections.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(our_role=h11.SERVER)
        async with self._connections.connection(writer):
            request = await self._request(connection, reader)
            if request is None:
                return
            self.requests.append(request)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                reply = await self.behaviour(request)
                if reply is None:
                    while await reader.read(65536):
                        pass
                    return
            finally:
                self.in_flight -= 1
            head = h11.Response(
                status_code=reply.status,
                headers=[
                    ("Content-Length", str(len(reply.body))),
                    ("Connection", "close"),
                    *reply.headers,
                ],
            )
            writer.write(connection.send(head) or b"")
            writer.write(connection.send(h11.Data(data=reply.body)) or b"")
            writer.write(connection.send(h11.EndOfMessage()) or b"")
            await writer.drain()

    async def _request(
        self, connection: h11.Connection, reader: asyncio.StreamReader
    ) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return Request(
                    target=head.target.decode(),
                    headers={name.decode().lower(): value.decode() for name, value in head.headers},
                    body=bytes(body),
                    arrived=time.monotonic(),
                )
            else:
                return None


@asynccontextmanager
async def receivers(
    *behaviours: Behaviour, tls: ssl.SSLContext | None = None
) -> AsyncIterator[list[Receiver]]:
    started: list[Receiver] = []
    try:
        for behaviour in behaviours:
            receiver = Receiver(behaviour, tls=tls)
            await receiver.start(receiver_address())
            started.append(receiver)
        yield started
    finally:
        for receiver in started:
            await receiver.close()


@dataclass
class RawReceiver:
    """A TCP server (TLS with ``tls``) on an address of its own whose connections
    ``respond`` handles byte by byte: for answers no HTTP library would write."""

    respond: Responder
    tls: ssl.SSLContext | None = None
    host: str = ""
    port: int = 0
    _connections: _Connections = field(default_factory=_Connections)

    @property
    def connections(self) -> int:
        return self._connections.count

    def url(self, path: str = "/hook", scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    async def start(self, host: str) -> None:
        self.host, self.port = await self._connections.start(self._serve, host, 0, self.tls)

    async def close(self) -> None:
        await self._connections.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._connections.connection(writer):
            await self.respond(reader, writer)


@asynccontextmanager
async def raw_receiver(
    respond: Responder, tls: ssl.SSLContext | None = None
) -> AsyncIterator[RawReceiver]:
    receiver = RawReceiver(respond, tls)
    await receiver.start(receiver_address())
    try:
        yield receiver
    finally:
        await receiver.close()


async def read_request(reader: asyncio.StreamReader) -> h11.Request:
    """Reads the request on the connection whole; its head."""
    connection = h11.Connection(our_role=h11.SERVER)
    head: h11.Request | None = None
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return head
        elif not isinstance(event, h11.Data):
            raise h11.RemoteProtocolError(f"no request: {event!r}")


# --- the webhook context ---------------------------------------------------------------------


@asynccontextmanager
async def open_webhook_resources(settings: Settings, database: str) -> AsyncIterator[Resources]:
    """What the workers hand the webhook sender: a pool connected as the webhook role (and
    its LISTEN connection too, from the same settings); no caller's token is ever verified
    (a verifier with no keys) and no other service is called."""
    own = dataclasses.replace(
        settings, component_database_urls={"webhook": postgres.dsn("webhook", database=database)}
    )
    pool = await open_pool(own, name="itest-webhook", component="webhook")
    channel = grpc.aio.insecure_channel(own.inventory_service_addr)

    async def no_keys() -> Mapping[str, Any]:
        return {"keys": []}

    try:
        yield Resources(
            own,
            {"webhook": pool},
            TokenVerifier(no_keys, issuer=own.jwt_issuer, audience=own.jwt_audience),
            channel,
            channel,
            channel,
            EventCodec.from_directory(own.schemas_dir),
        )
    finally:
        await channel.close()
        await pool.close()


@dataclass
class WebhookContext:
    """The webhook context of one test: its webhooks, registered through the real handler
    and deleted (with their deliveries) when the test is done."""

    resources: Resources
    registered: list[tuple[str, str]] = field(default_factory=list)

    @property
    def pool(self) -> Pool:
        return self.resources.pool("webhook")

    @property
    def repository(self) -> PostgresWebhookRepository:
        cipher = SecretCipher(self.resources.settings.require_key_encryption_secret())
        return PostgresWebhookRepository(self.pool, cipher)

    def sender(self, env: Mapping[str, str]) -> WebhookSender:
        return webhook_bootstrap.sender(self.resources, None, env)

    def queue(self, env: Mapping[str, str]) -> PostgresDeliveryQueue:
        """The queue a sender with these settings claims from, for a test to claim as a
        sender would (and then not finish)."""
        settings = WebhookSettings.from_env(env)
        return PostgresDeliveryQueue(
            self.pool,
            SecretCipher(self.resources.settings.require_key_encryption_secret()),
            lease=settings.lease,
            per_endpoint=settings.per_endpoint_concurrency,
            per_user=settings.per_user_concurrency,
            disable_after_failures=settings.disable_after_failures,
        )

    async def register(
        self,
        url: str,
        *,
        user_id: str | None = None,
        events: tuple[str, ...] = ("*",),
        env: Mapping[str, str] | None = None,
    ) -> RegisteredWebhook:
        settings = WebhookSettings.from_env(env or fast_settings())
        registered = await handlers.register_webhook(
            RegisterWebhook(user_id or f"itest-{uuid.uuid4()}", url, events),
            self.repository,
            DnsResolver(hosts_file=settings.hosts_file),
            allowed=settings.allows,
        )
        self.registered.append((registered.webhook.user_id, registered.webhook.webhook_id))
        return registered

    @asynccontextmanager
    async def owned_by(self, user_id: str) -> AsyncIterator[PostgresOwnedWebhooks]:
        async with self.repository.owned_by(user_id) as owned:
            yield owned

    async def log(self, hook: RegisteredWebhook) -> list[Delivery]:
        """The webhook's delivery log as its owner lists it, newest first."""
        async with self.owned_by(hook.webhook.user_id) as owned:
            found = await owned.deliveries(
                hook.webhook.webhook_id, state=None, before=None, limit=100
            )
        assert found is not None
        return found[0]

    async def record(
        self, hook: RegisteredWebhook, order_id: str | None = None, count: int = 1
    ) -> list[str]:
        """``count`` deliveries of one order (a new one unless given), committed in order as
        the dispatcher records them; their ids."""
        return await self.record_many([(hook, order_id or str(uuid.uuid4()), count)])

    async def record_for_orders(self, hook: RegisteredWebhook, count: int) -> list[str]:
        """One delivery for each of ``count`` new orders (none waits for another)."""
        return await self.record_many([(hook, str(uuid.uuid4()), 1) for _ in range(count)])

    async def record_many(self, plan: Sequence[tuple[RegisteredWebhook, str, int]]) -> list[str]:
        rows = []
        for hook, order_id, count in plan:
            for version in range(1, count + 1):
                event_id = uuid.uuid4()
                webhook_id = hook.webhook.webhook_id
                delivery_id = deliveries.delivery_id_for(event_id, webhook_id)
                document = {
                    "order_id": order_id,
                    "user_id": hook.webhook.user_id,
                    "version": version,
                }
                body = delivery_body(delivery_id, "order.paid", datetime.now(UTC), document)
                rows.append((delivery_id, webhook_id, str(event_id), "order.paid", order_id, body))
        async with self.pool.connection() as conn, conn.transaction():
            assert await deliveries.record_deliveries(conn, rows) == len(rows)
        return [row[0] for row in rows]

    async def rows(self, *delivery_ids: str) -> dict[str, dict[str, Any]]:
        """The deliveries' rows, by id."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT delivery_id::text, state, attempts, last_error, lease_owner,"
                " lease_expires_at, next_attempt_at, waiting FROM webhook.deliveries"
                " WHERE delivery_id = ANY(%s::uuid[])",
                (list(delivery_ids),),
            )
            return {row["delivery_id"]: row for row in await cursor.fetchall()}

    async def states(self, *delivery_ids: str) -> dict[str, str]:
        return {key: row["state"] for key, row in (await self.rows(*delivery_ids)).items()}

    async def until_states(
        self, delivery_ids: Sequence[str], *wanted: str, within: float = 15.0
    ) -> None:
        """Waits until every delivery is in one of the ``wanted`` states."""

        async def settled() -> bool:
            states = await self.states(*delivery_ids)
            return len(states) == len(delivery_ids) and set(states.values()) <= set(wanted)

        await eventually(settled, within)

    async def record_and_time(
        self, hook: RegisteredWebhook, receiver: Receiver
    ) -> tuple[str, float]:
        """Records one delivery for ``hook`` and waits until ``receiver`` has it: its id and
        the seconds from recording to arrival. A running sender's listener wakes it once
        when it (re)connects; a delivery recorded before that claim would be sent without
        a notification, so this waits a moment first (which can only make a test of the
        notification stricter, never flaky)."""
        await asyncio.sleep(0.3)
        recorded_at = time.monotonic()
        [delivery_id] = await self.record(hook)

        async def sent() -> bool:
            return bool(receiver.requests)

        await eventually(sent, within=5)
        latency = receiver.requests[0].arrived - recorded_at
        await self.until_states([delivery_id], "succeeded", within=5)
        return delivery_id, latency

    async def until_attempted(self, hook: RegisteredWebhook) -> None:
        """Waits until the webhook's (one) delivery has an attempt recorded."""

        async def attempted() -> bool:
            return any(delivery.attempts for delivery in await self.log(hook))

        await eventually(attempted)

    async def close(self) -> None:
        for user_id, webhook_id in self.registered:
            with contextlib.suppress(Exception):
                await handlers.delete_webhook(DeleteWebhook(user_id, webhook_id), self.repository)


@asynccontextmanager
async def running(*senders: WebhookSender) -> AsyncIterator[asyncio.Event]:
    """The senders running until the block ends (or the test sets the event)."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(sender.run(stop)) for sender in senders]
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
