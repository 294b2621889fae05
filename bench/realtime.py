"""Real-time bench: status change → receipt, over WatchOrders, the WebSocket bridge, and a bare
Redis pub/sub → websockets relay (the floor); memory per idle watcher and socket.

    python bench/realtime.py [--counts 1,1000,10000] [--paths grpc,ws,relay] [--rate 30]

Talks to the running dev stack only (start it with `make up`). For every count, and for each
path at that count:

1. client processes (at most --per-process connections each) open the watchers at
   --open-rate per second in all, spread over ceil(count / --per-user) bench users, and wait
   for each one's first message (the heartbeat that follows the snapshot);
2. after --settle seconds idle, the RSS of the serving process (the order service for
   grpc, the bridge for ws, the bench's relay for relay) minus its RSS before the opens,
   divided by the connections open, is the memory per idle watcher/socket;
3. for --seconds, orders go in through REST at --rate per second (round robin over the
   users watched), then the bench waits until they are SHIPPED (or terminal). For the
   relay, the bench publishes instead --rate x 5 order.update messages per second to a Redis
   channel, one user each;
4. latency is receipt (client clock) minus the update's occurred_at: the projector's stamp
   just before its commit (the relay: the publish time). Same machine, same clock.

Bench users (bench-realtime-NNNNN@example.com) are inserted once into auth.users with the
password hash of one user registered through REST, and their access tokens are signed with
the auth service's active key (registering thousands of users through argon2 would take
longer than the bench). The bench's products are bench-realtime-NN (never the demo catalog).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import uvloop
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from psycopg import AsyncConnection
from redis.asyncio import Redis
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.asyncio.server import serve as ws_serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ordermesh.order.v1 import order_pb2, order_pb2_grpc

from bench import plots
from bench.pipeline import (
    BENCH_APPLICATION,
    SHIPPING_ADDRESS,
    BenchError,
    bench_user,
    percentile,
    prepare_products,
    retire_products,
    verdict,
)
from devstack import postgres, procs, secrets
from devstack.ports import HOST, Ports
from gateway.leases import lease_key
from services.auth.adapters.encryption import SIGNING_KEYS_PURPOSE, fernet_for
from services.auth.adapters.tokens import JwtTokenIssuer
from services.auth.bootstrap import token_policy
from services.auth.domain.model import User
from services.common.identity import Role, Tier
from services.platform.settings import Settings

GOAL_P99_SECONDS = 0.100
GOAL_P99_SOCKETS = 10_000
GOAL_RELAY_RATIO = 1.5
GOAL_BYTES_PER_SOCKET = 20 * 1024

PRODUCT_PREFIX = "bench-realtime-"
PRODUCT_COUNT = 8
USER_EMAIL = "bench-realtime-{:05d}@example.com"
STATUSES_PER_ORDER = 5  # PENDING, VALIDATED, PAID, FULFILLED, SHIPPED
TERMINAL = ("SHIPPED", "DELIVERED", "FAILED", "CANCELLED")
STREAMS_PER_CHANNEL = 500  # servers allow 1000 concurrent streams per HTTP/2 connection
READY_TIMEOUT = 60.0
PATHS = ("grpc", "ws", "relay")
RELAY_CHANNEL = "ordermesh:bench:realtime"
# The bridge's leases live 30 s after a release that failed.
LEASE_WAIT_SECONDS = 40.0
# Envoy holds two descriptors per proxied WebSocket (client side and bridge side).
ENVOY_SPARE_FILES = 200


# --- the bench's users and their tokens --------------------------------------------------


class _ActiveKey:
    """The auth service's active signing key, read and decrypted the way the service does."""

    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self._conn = conn
        self._key: tuple[str, RSAPrivateKey] | None = None

    async def signing_key(self) -> tuple[str, RSAPrivateKey]:
        if self._key is None:
            self._key = await self._load()
        return self._key

    async def _load(self) -> tuple[str, RSAPrivateKey]:
        cursor = await self._conn.execute(
            "SELECT kid, private_key_encrypted FROM auth.signing_keys"
            " WHERE activated_at IS NOT NULL AND retired_at IS NULL"
            " ORDER BY activated_at DESC, kid DESC LIMIT 1"
        )
        row = await cursor.fetchone()
        if row is None:
            raise BenchError("no active signing key: has the auth service started?")
        cipher = fernet_for(secrets.secret(secrets.KEY_ENCRYPTION_SECRET), SIGNING_KEYS_PURPOSE)
        key = serialization.load_pem_private_key(cipher.decrypt(bytes(row[1])), password=None)
        if not isinstance(key, RSAPrivateKey):
            raise BenchError("the signing key is not an RSA key")
        return str(row[0]), key


@dataclass(frozen=True, slots=True)
class BenchUser:
    user_id: str
    token: str


async def bench_users(
    conn: AsyncConnection[Any], client: httpx.AsyncClient, count: int
) -> list[BenchUser]:
    emails = [USER_EMAIL.format(i) for i in range(count)]
    cursor = await conn.execute("SELECT count(*) FROM auth.users WHERE email = ANY(%s)", (emails,))
    row = await cursor.fetchone()
    if row is None or row[0] < count:
        template_token = await bench_user(client)
        template = jwt.decode(template_token, options={"verify_signature": False})["sub"]
        await conn.execute(
            "INSERT INTO auth.users (user_id, email, password_hash, full_name)"
            " SELECT gen_random_uuid(), email, (SELECT password_hash FROM auth.users"
            " WHERE user_id = %s), 'Realtime Bench' FROM unnest(%s::text[]) AS email"
            " ON CONFLICT (email) DO NOTHING",
            (template, emails),
        )
    cursor = await conn.execute(
        "SELECT user_id::text, email, password_hash, created_at FROM auth.users"
        " WHERE email = ANY(%s) ORDER BY email",
        (emails,),
    )
    issuer = JwtTokenIssuer(_ActiveKey(conn), token_policy(Settings.from_env()))
    users = []
    for user_id, email, password_hash, created_at in await cursor.fetchall():
        user = User(user_id, email, "Realtime Bench", None, Tier.FREE, Role.USER, created_at,
                    password_hash)  # fmt: skip
        users.append(BenchUser(user_id, (await issuer.issue(user)).access_token))
    return users


# --- client processes ----------------------------------------------------------------------


def _timestamp_seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class ClientState:
    """One client process's watchers: how many are open, what failed, the latencies."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.latencies: list[float] = []
        self.tails: list[float] = []  # from the live feed's entry (Redis XADD time) to receipt
        self.ready = 0
        self.failed: Counter[str] = Counter()
        self.closed = 0
        self.settled = asyncio.Event()  # every watcher open or failed

    def opened(self) -> None:
        self.ready += 1
        self._check()

    def failure(self, name: str) -> None:
        self.failed[name] += 1
        self._check()

    def tail(self, received: float, cursor: str | None) -> None:
        """A cursor is ``<epoch>.<ms>-<seq>``: the ms of the feed entry's Redis stream id."""
        _epoch, dot, position = (cursor or "").rpartition(".")
        millis = position.partition("-")[0]
        if dot and millis.isdigit():
            self.tails.append(received - int(millis) / 1000)

    def _check(self) -> None:
        if self.ready + self.failed.total() >= self.total:
            self.settled.set()


async def _ws_watcher(url: str, state: ClientState) -> None:
    first = True
    try:
        async with ws_connect(
            url, compression=None, ping_interval=None, open_timeout=READY_TIMEOUT, max_queue=64
        ) as socket:
            async for message in socket:
                received = time.time()
                if first:
                    first = False
                    state.opened()
                data = json.loads(message)
                if data.get("type") == "order.update" and not data.get("snapshot"):
                    state.latencies.append(received - _timestamp_seconds(data["timestamp"]))
                    state.tail(received, data.get("cursor"))
            state.closed += 1
    except asyncio.CancelledError:
        raise
    except Exception as error:  # the bench reports every kind of failure, never stops on one
        state.failure(type(error).__name__)


async def _grpc_watcher(
    stub: order_pb2_grpc.OrderServiceAsyncStub, token: str, state: ClientState
) -> None:
    first = True
    call = stub.WatchOrders(
        order_pb2.WatchOrdersRequest(), metadata=(("authorization", f"Bearer {token}"),)
    )
    try:
        async for response in call:
            received = time.time()
            if first:
                first = False
                state.opened()
            if response.heartbeat or response.snapshot:
                continue
            occurred = response.occurred_at.seconds + response.occurred_at.nanos / 1e9
            state.latencies.append(received - occurred)
            state.tail(received, response.cursor)
        state.closed += 1
    except asyncio.CancelledError:
        call.cancel()
        raise
    except grpc.aio.AioRpcError as error:
        state.failure(error.code().name)


async def client_main() -> None:
    """One client process: config on stdin (one JSON line), "ready" and the result on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = json.loads(await reader.readline())
    path: str = config["path"]
    watchers: list[list[str]] = config["watchers"]  # [user_id, token]
    interval = 1.0 / config["open_rate"]
    state = ClientState(len(watchers))
    channels: list[grpc.aio.Channel] = []
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for index, (user_id, token) in enumerate(watchers):
        due = started + index * interval
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        if path == "grpc":
            if index % STREAMS_PER_CHANNEL == 0:
                channels.append(
                    grpc.aio.insecure_channel(
                        config["target"],
                        # a connection of its own, not the process's shared subchannel
                        options=[("grpc.use_local_subchannel_pool", 1)],
                    )
                )
            stub = order_pb2_grpc.OrderServiceStub(channels[-1])
            tasks.append(asyncio.create_task(_grpc_watcher(stub, token, state)))
        else:
            url = f"{config['target']}/{user_id}?token={token}"
            tasks.append(asyncio.create_task(_ws_watcher(url, state)))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(READY_TIMEOUT):
            await state.settled.wait()
    # Thousands of connections make a full collection of this process's heap take 100 ms
    # and more: a pause the client would add to every latency it is taking at that moment.
    gc.collect()
    gc.freeze()
    print(
        json.dumps(
            {
                "ready": state.ready,
                "failed": dict(state.failed),
                "seconds": time.perf_counter() - started,
            }
        ),
        flush=True,
    )
    await reader.readline()  # "stop"
    latencies, tails = state.latencies, state.tails
    state.latencies, state.tails = [], []
    lost = state.closed
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    print(
        json.dumps(
            {"latencies": latencies, "tails": tails, "failed": dict(state.failed), "closed": lost}
        ),
        flush=True,
    )


# --- the bare relay: Redis pub/sub → websockets -------------------------------------------


async def relay_main(port: int, redis_url: str) -> None:
    """The floor: one Redis subscription, each message broadcast to its user's sockets."""
    sockets: dict[str, set[ServerConnection]] = {}

    async def handler(connection: ServerConnection) -> None:
        assert connection.request is not None
        user_id = connection.request.path.partition("?")[0].rsplit("/", 1)[-1]
        sockets.setdefault(user_id, set()).add(connection)
        try:
            await connection.send('{"type":"heartbeat","status":"alive"}')
            await connection.wait_closed()
        finally:
            sockets[user_id].discard(connection)

    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(RELAY_CHANNEL)
    async with ws_serve(handler, HOST, port, compression=None, ping_interval=None):
        print("listening", flush=True)
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            user_id, _, payload = message["data"].decode().partition("\n")
            broadcast(sockets.get(user_id, ()), payload)


# --- the bench process --------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


@dataclass
class PhaseResult:
    path: str
    count: int
    via: str
    users: int
    ready: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    open_seconds: float = 0.0
    rss_delta: int = 0
    rss_after: int = 0
    latencies: list[float] = field(default_factory=list)
    tails: list[float] = field(default_factory=list)
    expected: int = 0
    orders: int = 0
    order_errors: Counter[str] = field(default_factory=Counter)
    closed_early: int = 0

    @property
    def p50(self) -> float | None:
        return percentile(sorted(self.latencies), 50) if self.latencies else None

    @property
    def p99(self) -> float | None:
        return percentile(sorted(self.latencies), 99) if self.latencies else None

    @property
    def per_connection(self) -> float | None:
        """None when the process gave back more than the opens took (freed earlier phases)."""
        return self.rss_delta / self.ready if self.ready and self.rss_delta > 0 else None


class Clients:
    """The client processes of one phase."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(
        self, path: str, target: str, watchers: Sequence[BenchUser], open_rate: float, per: int
    ) -> None:
        chunks = [watchers[i : i + per] for i in range(0, len(watchers), per)]
        for chunk in chunks:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--client",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=64 * 1024 * 1024,
            )
            assert process.stdin is not None
            config = {
                "path": path,
                "target": target,
                "watchers": [[w.user_id, w.token] for w in chunk],
                "open_rate": open_rate / len(chunks),
            }
            process.stdin.write(json.dumps(config).encode() + b"\n")
            await process.stdin.drain()
            self.processes.append(process)

    async def _lines(self) -> list[dict[str, Any]]:
        lines = []
        for process in self.processes:
            assert process.stdout is not None
            line = await process.stdout.readline()
            if not line:
                raise BenchError("a client process ended early (see its stderr)")
            lines.append(json.loads(line))
        return lines

    async def ready(self, result: PhaseResult) -> None:
        for line in await self._lines():
            result.ready += line["ready"]
            result.failed.update(line["failed"])
            result.open_seconds = max(result.open_seconds, line["seconds"])

    async def stop(self, result: PhaseResult) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(b"stop\n")
            await process.stdin.drain()
        for line in await self._lines():
            result.latencies.extend(line["latencies"])
            result.tails.extend(line["tails"])
            result.failed.update(line["failed"])
            result.closed_early += line["closed"]
        for process in self.processes:
            await process.wait()

    def kill(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()


@dataclass
class Stack:
    ports: Ports
    api_pid: int
    gateway_pid: int
    envoy_pid: int


class Bench:
    def __init__(self, args: argparse.Namespace, stack: Stack, conn: AsyncConnection[Any]) -> None:
        self.args = args
        self.stack = stack
        self.conn = conn
        self.products: list[str] = []
        self.users: list[BenchUser] = []

    def order_body(self, index: int) -> bytes:
        return json.dumps(
            {
                "items": [{"product_id": self.products[index % len(self.products)], "quantity": 1}],
                "shipping_address": SHIPPING_ADDRESS,
                "payment_method": "tok_visa",
            }
        ).encode()

    async def orders(self, client: httpx.AsyncClient, users: Sequence[BenchUser]) -> list[str]:
        """Orders at --rate for --seconds, round robin over ``users``; waits for them to end."""
        rate, total = self.args.rate, int(self.args.rate * self.args.seconds)
        order_ids: list[str] = []
        errors: Counter[str] = Counter()
        inflight = asyncio.Semaphore(32)

        async def create(index: int) -> None:
            user = users[index % len(users)]
            async with inflight:
                try:
                    response = await client.post(
                        "/api/v1/orders",
                        content=self.order_body(index),
                        headers={
                            "Authorization": f"Bearer {user.token}",
                            "Content-Type": "application/json",
                            "Idempotency-Key": str(uuid.uuid4()),
                        },
                    )
                except httpx.HTTPError as error:
                    errors[type(error).__name__] += 1
                    return
            if response.status_code != 200:
                errors[f"HTTP {response.status_code}"] += 1
                return
            order_ids.append(str(response.json()["order_id"]))

        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for index in range(total):
                if (delay := start + index / rate - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                group.create_task(create(index))
        self.order_errors = errors
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            cursor = await self.conn.execute(
                "SELECT count(*) FROM orders.orders WHERE order_id = ANY(%s::uuid[])"
                " AND status <> ALL(%s)",
                (order_ids, list(TERMINAL)),
            )
            row = await cursor.fetchone()
            if row is not None and row[0] == 0:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # the last updates on their way
        return order_ids

    async def expected(self, order_ids: Sequence[str], watchers: Counter[str]) -> int:
        cursor = await self.conn.execute(
            "SELECT o.user_id, count(*) FROM orders.status_history h"
            " JOIN orders.orders o USING (order_id) WHERE h.order_id = ANY(%s::uuid[])"
            " GROUP BY o.user_id",
            (list(order_ids),),
        )
        return sum(n * watchers[user_id] for user_id, n in await cursor.fetchall())

    async def publish(self, redis: Redis, users: Sequence[BenchUser]) -> None:
        """The relay's load: --rate x 5 updates per second for --seconds, one user each."""
        rate = self.args.rate * STATUSES_PER_ORDER
        total = int(rate * self.args.seconds)
        start = time.perf_counter()
        for index in range(total):
            if (delay := start + index / rate - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            user = users[index % len(users)]
            payload = json.dumps(
                {
                    "type": "order.update",
                    "order_id": str(uuid.uuid4()),
                    "status": "paid",
                    "message": "Payment processed",
                    "version": 3,
                    "timestamp": datetime.now(UTC).isoformat(),
                    "cursor": f"{index}-0",
                    "data": {"tracking_number": None, "carrier": None, "estimated_delivery": None},
                }
            )
            await redis.publish(RELAY_CHANNEL, f"{user.user_id}\n{payload}")
        await asyncio.sleep(1.0)

    def target(self, path: str, count: int, relay_port: int) -> tuple[str, str, int]:
        """(where clients connect, how to describe it, the serving process's pid)."""
        ports = self.stack.ports
        if path == "grpc":
            if self.args.grpc_via == "envoy":
                return f"{HOST}:{ports.envoy}", "through Envoy", self.stack.api_pid
            return f"{HOST}:{ports.grpc}", "direct to the order service", self.stack.api_pid
        if path == "relay":
            return f"ws://{HOST}:{relay_port}/ws/orders", "bench relay", 0
        via = self.args.ws_via
        if via == "auto":
            fits = 2 * count + ENVOY_SPARE_FILES <= open_files_limit(self.stack.envoy_pid)
            via = "envoy" if fits else "bridge"
        if via == "envoy":
            return f"ws://{HOST}:{ports.envoy}/ws/orders", "through Envoy", self.stack.gateway_pid
        return (
            f"ws://{HOST}:{ports.gateway}/ws/orders",
            "direct to the bridge (Envoy's open files cannot hold 2 per socket)"
            if self.args.ws_via == "auto"
            else "direct to the bridge",
            self.stack.gateway_pid,
        )

    async def phase(
        self, path: str, count: int, client: httpx.AsyncClient, redis: Redis, relay_pid: int
    ) -> PhaseResult:
        target, via, pid = self.target(path, count, self.args.relay_port)
        pid = pid or relay_pid
        user_count = min(len(self.users), math.ceil(count / self.args.per_user))
        users = self.users[:user_count]
        watchers = [users[i % user_count] for i in range(count)]
        result = PhaseResult(path, count, via, user_count)
        print(f"  {path} x {count:,} ({via}, {user_count:,} users) ...", flush=True)
        if path == "ws":
            await self.leases_gone(redis, users)
        before = rss_bytes(pid)
        clients = Clients()
        try:
            await clients.start(path, target, watchers, self.args.open_rate, self.args.per_process)
            await clients.ready(result)
            await asyncio.sleep(self.args.settle)
            result.rss_after = rss_bytes(pid)
            result.rss_delta = result.rss_after - before
            if path == "relay":
                await self.publish(redis, users)
                result.expected = self._relay_expected(count, user_count)
            else:
                order_ids = await self.orders(client, users)
                result.orders = len(order_ids)
                result.order_errors = self.order_errors
                result.expected = await self.expected(
                    order_ids, Counter(w.user_id for w in watchers)
                )
            await clients.stop(result)
        finally:
            clients.kill()
        await asyncio.sleep(self.args.settle)  # let the servers notice the closes
        return result

    async def leases_gone(self, redis: Redis, users: Sequence[BenchUser]) -> None:
        """Waits for the bridge's socket leases of the previous phase: a lease whose release
        failed counts against its user until it expires."""
        started = time.monotonic()
        while time.monotonic() - started < LEASE_WAIT_SECONDS:
            async with redis.pipeline(transaction=False) as pipe:
                for user in users:
                    pipe.zcard(lease_key(user.user_id))
                held = sum(await pipe.execute())
            if not held:
                break
            await asyncio.sleep(1.0)
        if (waited := time.monotonic() - started) >= 1.0:
            print(f"    waited {waited:.0f} s for the last phase's socket leases to go", flush=True)

    def _relay_expected(self, count: int, user_count: int) -> int:
        total = int(self.args.rate * STATUSES_PER_ORDER * self.args.seconds)
        per_user = Counter(i % user_count for i in range(count))
        return sum(per_user[i % user_count] for i in range(total))


# --- output --------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def kb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f} KB"


def print_machine(args: argparse.Namespace, stack: Stack) -> None:
    load = os.getloadavg()
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f}"
        f" {load[2]:.2f}; open files per process {open_files_limit(os.getpid()):,};"
        f" Python {platform.python_version()}, grpcio {grpc.__version__},"
        f" websockets {importlib.metadata.version('websockets')}"
    )
    print(
        f"ran: paths {','.join(args.paths)}; watchers {', '.join(f'{c:,}' for c in args.counts)};"
        f" {args.per_user} per user; orders {args.rate}/s for {args.seconds} s through REST"
        f" (relay: {args.rate * STATUSES_PER_ORDER}/s published); opens {args.open_rate}/s;"
        f" at most {args.per_process:,} connections per client process"
    )


def print_results(results: Sequence[PhaseResult]) -> None:
    print()
    header = (
        f"{'path':<6} {'watchers':>8} {'users':>6} {'open':>7} {'received':>17} {'p50':>10}"
        f" {'p99':>10} {'max':>10} {'RSS/conn':>10}  via"
    )
    print(header)
    for r in results:
        got = f"{len(r.latencies):,}/{r.expected:,}"
        worst = max(r.latencies) if r.latencies else None
        per = r.per_connection if r.count >= 100 else None
        print(
            f"{r.path:<6} {r.count:>8,} {r.users:>6,} {r.ready:>7,} {got:>17} {ms(r.p50):>10}"
            f" {ms(r.p99):>10} {ms(worst):>10} {kb(per):>10}  {r.via}"
        )
        notes = [f"serving RSS {r.rss_after / 2**20:.0f} MB ({r.rss_delta / 2**20:+.0f} MB)"]
        if r.tails:
            tails = sorted(r.tails)
            feed = sorted(total - tail for total, tail in zip(r.latencies, r.tails, strict=False))
            notes.append(
                f"commit -> feed entry (Kafka, live-feed consumer, XADD) p50"
                f" {ms(percentile(feed, 50))} p99 {ms(percentile(feed, 99))};"
                f" feed entry -> receipt p50 {ms(percentile(tails, 50))}"
                f" p99 {ms(percentile(tails, 99))} (ms-resolution stream ids)"
            )
        if r.failed:
            notes.append(f"failed to open or broke: {dict(r.failed)}")
        if r.closed_early:
            notes.append(f"closed by the server: {r.closed_early}")
        if r.order_errors:
            notes.append(f"order errors: {dict(r.order_errors)}")
        if notes:
            print(f"{'':16}{'; '.join(notes)}")
    relay = {r.count: r for r in results if r.path == "relay"}
    ratios = []
    for r in results:
        floor = relay.get(r.count)
        if r.path != "relay" and floor is not None and floor.p99 and r.p99 is not None:
            ratios.append(f"{r.path} x {r.count:,}: {r.p99 / floor.p99:.2f}x")
            if r.tails:
                tail = percentile(sorted(r.tails), 99)
                ratios[-1] += f" (feed entry -> receipt: {tail / floor.p99:.2f}x)"
    if ratios:
        print(f"p99 / bare relay p99 at the same count: {'; '.join(ratios)}")


def print_goals(results: Sequence[PhaseResult]) -> None:
    ws = [r for r in results if r.path == "ws"]
    relay = {r.count: r for r in results if r.path == "relay"}
    print()
    big = max(ws, key=lambda r: r.count, default=None)
    if big is None:
        print("goals: the ws path did not run")
        return
    reached = big.count >= GOAL_P99_SOCKETS and big.ready >= GOAL_P99_SOCKETS
    complete = len(big.latencies) >= big.expected > 0
    ok = reached and complete and big.p99 is not None and big.p99 < GOAL_P99_SECONDS
    print(
        f"goal: p99 under {GOAL_P99_SECONDS * 1000:.0f} ms at {GOAL_P99_SOCKETS:,} sockets:"
        f" {verdict(ok)} (p99 {ms(big.p99)} with {big.ready:,} sockets open,"
        f" {len(big.latencies):,} of {big.expected:,} updates received)"
    )
    floor = relay.get(big.count)
    if floor is not None and floor.p99 and big.p99 is not None:
        ratio = big.p99 / floor.p99
        print(
            f"goal: p99 at most {GOAL_RELAY_RATIO}x the bare relay's at {big.count:,} sockets:"
            f" {verdict(ratio <= GOAL_RELAY_RATIO and complete)} ({ratio:.2f}x:"
            f" {ms(big.p99)} vs {ms(floor.p99)})"
        )
    else:
        print("goal: p99 at most 1.5x the bare relay's: not measured (run the relay path)")
    per = big.per_connection
    print(
        f"goal: under {GOAL_BYTES_PER_SOCKET // 1024} KB per idle socket (bridge RSS):"
        f" {verdict(per is not None and per < GOAL_BYTES_PER_SOCKET)} ({kb(per)} at"
        f" {big.ready:,} sockets)"
    )


# --- main ----------------------------------------------------------------------------------


async def start_relay(port: int, redis_url: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--relay",
        "--relay-port",
        str(port),
        "--redis-url",
        redis_url,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(10):
        await process.stdout.readline()
    return process


async def run(args: argparse.Namespace) -> None:
    ports = Ports.from_env()
    pids = {name: procs.read_pid(name) for name in ("api", "gateway", "envoy")}
    missing = [name for name, pid in pids.items() if pid is None]
    if missing:
        raise BenchError(f"not running: {', '.join(missing)} (start the stack: make up)")
    stack = Stack(ports, pids["api"] or 0, pids["gateway"] or 0, pids["envoy"] or 0)
    print_machine(args, stack)
    redis_url = f"redis://{HOST}:{ports.redis}/0"
    conn = await AsyncConnection.connect(
        postgres.dsn(), autocommit=True, application_name=BENCH_APPLICATION
    )
    bench = Bench(args, stack, conn)
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    results: list[PhaseResult] = []
    relay: asyncio.subprocess.Process | None = None
    async with (
        conn,
        httpx.AsyncClient(
            base_url=f"http://{HOST}:{ports.envoy}", timeout=30, limits=limits
        ) as client,
        Redis.from_url(redis_url) as redis,
    ):
        bench.products = await prepare_products(conn, PRODUCT_PREFIX, PRODUCT_COUNT)
        try:
            started = time.perf_counter()
            users = math.ceil(max(args.counts) / args.per_user)
            bench.users = await bench_users(conn, client, users)
            print(
                f"{len(bench.users):,} bench users ready in {time.perf_counter() - started:.1f} s"
            )
            if "relay" in args.paths:
                relay = await start_relay(args.relay_port, redis_url)
            # Count by count, the paths one after the other: the floor is measured minutes
            # apart from ours at most, on a machine whose load changes.
            for count in args.counts:
                for path in args.paths:
                    results.append(
                        await bench.phase(path, count, client, redis, relay.pid if relay else 0)
                    )
        finally:
            if relay is not None:
                relay.terminate()
                await relay.wait()
            await retire_products(conn, bench.products)
    print_results(results)
    print_goals(results)
    if args.plot is not None:
        plot(args.plot, results)


def plot(directory: Path, results: Sequence[PhaseResult]) -> None:
    """--plot: per watcher count, the latency CDF (update's occurred_at → receipt) of each
    path, and the serving process's RSS per open connection of each phase. The client
    processes report latencies only, no receipt times: no chart over time."""
    written: list[Path | None] = []
    for count in sorted({r.count for r in results}):
        written.append(
            plots.latency_cdf(
                directory,
                f"latency-cdf-{count}-watchers",
                f"live feed, {count:,} watchers: order update committed → received",
                {
                    f"{r.path} ({r.via})": [s * 1000 for s in r.latencies]
                    for r in results
                    if r.count == count
                },
            )
        )
    written.append(
        plots.bars(
            directory,
            "rss-per-connection",
            "live feed: serving process RSS growth per open connection (after --settle)",
            {
                f"{r.path} x {r.count:,}": (r.per_connection or math.nan) / 1024
                for r in results
                if r.count >= 100
            },
            xlabel="KB per connection",
        )
    )
    plots.print_written(written)


def counts(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def paths(text: str) -> list[str]:
    chosen = [part for part in text.split(",") if part]
    unknown = set(chosen) - set(PATHS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown paths: {', '.join(sorted(unknown))}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=counts, default=[1, 1000, 10000])
    parser.add_argument("--paths", type=paths, default=list(PATHS))
    parser.add_argument("--rate", type=float, default=30.0, help="orders per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of orders")
    parser.add_argument("--per-user", type=int, default=5, help="watchers per user")
    parser.add_argument("--open-rate", type=float, default=400.0, help="opens per second")
    parser.add_argument("--per-process", type=int, default=5000, help="per client process")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before RSS")
    parser.add_argument("--grpc-via", choices=("envoy", "direct"), default="envoy")
    parser.add_argument("--ws-via", choices=("auto", "envoy", "bridge"), default="auto")
    parser.add_argument("--relay-port", type=int, default=0, help="the bare relay's port")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--relay", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default="", help=argparse.SUPPRESS)
    plots.add_plot_argument(parser, "realtime")
    args = parser.parse_args()
    if args.client:
        uvloop.run(client_main())
        return
    if args.relay:
        uvloop.run(relay_main(args.relay_port, args.redis_url))
        return
    if not args.relay_port:
        args.relay_port = Ports.from_env().gateway + 100
    try:
        uvloop.run(run(args))
    except BenchError as error:
        sys.exit(f"realtime bench: {error}")


if __name__ == "__main__":
    main()
