"""Webhook delivery bench: order events POSTed by the stack's webhook sender to local
receivers, with every endpoint healthy, then with a share of them failing, then healthy again.

    python bench/webhooks.py [--users U] [--webhooks-per-user W] [--rate R] [--seconds S]
                             [--burst-orders N] [--failure timeout|503|slow-200]

Talks to the running dev stack only (start it with `make up`): bench users, their webhooks
and their orders go through Envoy's REST port; Postgres is read directly for the delivery
log, for when a phase's orders and deliveries are finished, and for the counters of
webhook.deliveries. The receivers run in a child process (its own event loop, so creating
orders does not delay an arrival's timestamp): one HTTP server per endpoint on 127.0.77.x,
the local stack's allow-listed webhook network, on a free port. Each checks every request's
X-Webhook-Signature against the webhook's secret and records when the body arrived
(time.time()).

After a warm-up that lasts until autovacuum has analyzed webhook.deliveries, three
scenarios on the same webhooks: healthy (every endpoint answers 200 at once), failing
(--failing-share of the endpoints, on the first users, never answer, or answer 503 or a
late 200 after --fail-delay), healthy again (the failing endpoints' webhooks replaced).
Each has a paced phase (--rate orders/s for --seconds: the latency) and a burst
(--burst-orders created at once: how fast the sender empties a backlog). Latency is the
order's status change (the body's data.updated_at, the event's own time) to the delivery's
arrival at the receiver. The failing scenario's healthy endpoints are compared with the same
endpoints in the healthy runs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import hmac
import importlib.util
import ipaddress
import json
import math
import multiprocessing
import os
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import httpx
import uvloop
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import plots
from bench.pipeline import (
    BENCH_APPLICATION,
    BenchError,
    CpuSampler,
    CpuUsage,
    order_bodies,
    percentile,
    prepare_products,
    retire_products,
)
from devstack import postgres, procs
from devstack.paths import log_path
from devstack.ports import HOST, Ports
from devstack.stack import LOCAL_WEBHOOK_NETWORK
from services.webhook.settings import WebhookSettings

SENDER = "webhook-sender"
PRODUCT_PREFIX = "bench-webhooks-"
PRODUCT_COUNT = 8
PASSWORD = "bench webhooks password"
FIRST_HOST = 100
TERMINAL = ("SHIPPED", "DELIVERED", "FAILED", "CANCELLED")
# The dispatcher's own copy of the order (webhook.orders) shows statuses in lower case.
TERMINAL_DOCUMENT = tuple(status.lower() for status in TERMINAL)
STEADY_SKIP = 2.0
LEASE_SAMPLE = 0.1
EVENT_ORDER = {
    event: rank
    for rank, event in enumerate(
        ("order.created", "order.validated", "order.paid", "order.fulfilled", "order.shipped")
    )
}
TIMELINE_BUCKET = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# "Not slowed": the healthy endpoints' figures with failing ones beside them, against the
# same endpoints when all were healthy (the same run, so the same machine).
GOAL_P50_RATIO = 1.25
GOAL_P99_RATIO = 1.5
GOAL_RATE_RATIO = 0.9
OTHER_USERS = "other users' endpoints"
SAME_USER = "sharing a user with failing"

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
FAIL_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
NO_ANSWER = 0


# ---------------------------------------------------------------- the receivers (child process)

# What a receiver records of each request: endpoint, arrival (time.time()), the status it
# answered (0: none, the sender gave up), X-Webhook-Id, X-Webhook-Attempt, the body's type,
# data.order_id, data.updated_at (epoch seconds), data.version, and whether the signature
# matched. Plain tuples: they cross the pipe pickled.
Record = tuple[int, float, int, str, int, str, str, float, int, bool]


class Receivers:
    """Every endpoint's server, in one event loop: endpoint i is the server on hosts[i]."""

    def __init__(self) -> None:
        self.secrets: dict[int, bytes] = {}
        self.failing: frozenset[int] = frozenset()
        self.failure = "timeout"
        self.fail_delay = 2.0
        self.release = asyncio.Event()
        self.released = False
        self.records: list[Record] = []
        self.open: Counter[int] = Counter()
        self.peak: Counter[int] = Counter()
        self.problems: Counter[str] = Counter()

    async def handle(
        self, endpoint: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.open[endpoint] += 1
        self.peak[endpoint] = max(self.peak[endpoint], self.open[endpoint])
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = _headers(head)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            arrived = time.time()
            failing = endpoint in self.failing
            status = 200
            if failing and (self.released or self.failure != "slow-200"):
                status = 503 if self.released or self.failure == "503" else NO_ANSWER
            self.records.append(self._record(endpoint, arrived, status, headers, body))
            if failing and not self.released and not await self._held(reader):
                return
            answer_ok = status == 200 and not (failing and self.released)
            writer.write(OK_RESPONSE if answer_ok else FAIL_RESPONSE)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
            self.problems[f"malformed request: {type(error).__name__}"] += 1
        except ConnectionError:
            pass
        finally:
            self.open[endpoint] -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _held(self, reader: asyncio.StreamReader) -> bool:
        """A failing endpoint's wait: whether to answer after it (False: the sender gave up
        and closed first). The bench's release cuts every wait short (a 503 then)."""
        release = asyncio.ensure_future(self.release.wait())
        if self.failure != "timeout":
            waiting: asyncio.Future[Any] = asyncio.ensure_future(asyncio.sleep(self.fail_delay))
        else:
            waiting = asyncio.ensure_future(reader.read())  # returns at the sender's close
        try:
            done, _ = await asyncio.wait({release, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (release, waiting):
                future.cancel()
        return release in done or self.failure != "timeout"

    def _record(
        self, endpoint: int, arrived: float, status: int, headers: Mapping[str, str], body: bytes
    ) -> Record:
        secret = self.secrets.get(endpoint, b"")
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        signed = bool(secret) and hmac.compare_digest(
            expected, headers.get("x-webhook-signature", "")
        )
        try:
            envelope = json.loads(body)
            data = envelope["data"]
            updated = datetime.fromisoformat(data["updated_at"]).timestamp()
            event_type, order_id, version = envelope["type"], data["order_id"], data["version"]
        except (ValueError, KeyError, TypeError):
            self.problems["body without type, data.order_id, data.updated_at, version"] += 1
            updated, event_type, order_id, version = math.nan, "", "", 0
        return (
            endpoint,
            arrived,
            status,
            headers.get("x-webhook-id", ""),
            int(headers.get("x-webhook-attempt", "0") or 0),
            str(event_type),
            str(order_id),
            updated,
            int(version),
            signed,
        )

    def collect(self) -> tuple[list[Record], dict[int, int], dict[str, int]]:
        found = (self.records, dict(self.peak), dict(self.problems))
        self.records, self.peak, self.problems = [], Counter(self.open), Counter()
        return found


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


async def _serve(control: Pipe, hosts: Sequence[str]) -> None:
    receivers = Receivers()
    servers = [
        await asyncio.start_server(
            functools.partial(receivers.handle, index), host, 0, backlog=1024
        )
        for index, host in enumerate(hosts)
    ]
    control.send([server.sockets[0].getsockname()[1] for server in servers])
    loop = asyncio.get_running_loop()
    while True:
        command, argument = await loop.run_in_executor(None, control.recv)
        answer: object = None
        if command == "secrets":
            receivers.secrets = {index: secret.encode() for index, secret in argument.items()}
        elif command == "failing":
            receivers.failing, receivers.failure, receivers.fail_delay = argument
            receivers.release, receivers.released = asyncio.Event(), False
        elif command == "release":
            # Failing endpoints answer 503 at once from now on, held requests included: the
            # sender ends their attempts quickly (and soon disables them).
            receivers.released = True
            receivers.release.set()
        elif command == "collect":
            answer = receivers.collect()
        elif command == "stop":
            control.send(None)
            break
        control.send(answer)
    for server in servers:
        server.close()


def receivers_main(control: Pipe, hosts: Sequence[str]) -> None:
    uvloop.run(_serve(control, hosts))


class ReceiverProcess:
    """The parent's side of the receivers' child process."""

    def __init__(self, hosts: Sequence[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self.process = context.Process(
            target=receivers_main, args=(child, list(hosts)), name="bench-receivers", daemon=True
        )
        self.process.start()
        if not self._pipe.poll(60):
            raise BenchError("the receivers' process did not start")
        self.ports: list[int] = self._pipe.recv()
        self._lock = asyncio.Lock()

    async def call(self, command: str, argument: object = None) -> Any:
        async with self._lock:
            await asyncio.to_thread(self._pipe.send, (command, argument))
            return await asyncio.to_thread(self._pipe.recv)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("stop"), 10)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()

    def cpu_seconds(self) -> float:
        return _process_cpu(self.process.pid or 0)


def _process_cpu(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# ---------------------------------------------------------------- users, webhooks, orders


@dataclass
class Endpoint:
    index: int
    host: str
    port: int
    user: int
    webhook_id: str = ""
    secret: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks/{self.index}"


@dataclass(frozen=True)
class User:
    email: str
    token: str


async def bench_user(client: httpx.AsyncClient, conn: AsyncConnection[Any]) -> User:
    """A new account in the enterprise tier (no rate limit), set as `ordermesh users
    set-tier` sets it, before the login so the token carries it."""
    email = f"bench-webhooks-{uuid.uuid4().hex[:12]}@example.com"
    registered = await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "full_name": "Webhook Bench", "phone": ""},
    )
    if registered.status_code != 200:
        raise BenchError(f"register → {registered.status_code}: {registered.text[:300]}")
    await conn.execute("UPDATE auth.users SET tier = 'enterprise' WHERE email = %s", (email,))
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    if login.status_code != 200:
        raise BenchError(f"login → {login.status_code}: {login.text[:300]}")
    return User(email, str(login.json()["access_token"]))


def _auth(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.token}"}


async def register_webhook(client: httpx.AsyncClient, user: User, endpoint: Endpoint) -> None:
    response = await client.post(
        "/api/v1/webhooks",
        json={"url": endpoint.url, "events": ["*"], "description": "bench/webhooks.py"},
        headers=_auth(user),
    )
    if response.status_code != 200:
        raise BenchError(f"register webhook → {response.status_code}: {response.text[:300]}")
    body = response.json()
    endpoint.webhook_id, endpoint.secret = str(body["webhook_id"]), str(body["secret"])


async def delete_webhooks(
    client: httpx.AsyncClient, users: Sequence[User], endpoints: Sequence[Endpoint]
) -> int:
    deleted = 0
    for endpoint in endpoints:
        if not endpoint.webhook_id:
            continue
        response = await client.delete(
            f"/api/v1/webhooks/{endpoint.webhook_id}", headers=_auth(users[endpoint.user])
        )
        deleted += response.status_code == 200
    return deleted


@dataclass
class Orders:
    """The orders a phase created: id → time the create call was sent."""

    sent: dict[str, float] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str = ""
    late: int = 0
    first_send: float = math.inf
    last_send: float = 0.0


class OrderMaker:
    """Creates two-line orders (tok_visa, an Idempotency-Key) through REST, the users taking
    turns, each request on a free one of the keep-alive clients."""

    def __init__(
        self, clients: Sequence[httpx.AsyncClient], users: Sequence[User], products: Sequence[str]
    ) -> None:
        self._clients = clients
        self._users = users
        self._bodies = order_bodies(products, second_line=3)

    async def create(self, client: httpx.AsyncClient, orders: Orders, index: int) -> None:
        user = self._users[index % len(self._users)]
        headers = {
            **_auth(user),
            "Content-Type": "application/json",
            "Idempotency-Key": str(uuid.uuid4()),
        }
        sent = time.time()
        orders.first_send = min(orders.first_send, sent)
        orders.last_send = max(orders.last_send, sent)
        try:
            response = await client.post(
                "/api/v1/orders", content=self._bodies[index % len(self._bodies)], headers=headers
            )
        except httpx.HTTPError as error:
            orders.errors[type(error).__name__] += 1
            orders.first_error = orders.first_error or repr(error)
            return
        if response.status_code != 200:
            orders.errors[f"HTTP {response.status_code}"] += 1
            orders.first_error = orders.first_error or response.text[:300]
            return
        orders.sent[str(response.json()["order_id"])] = sent

    async def burst(self, count: int) -> Orders:
        orders = Orders()
        indices = iter(range(count))

        async def connection(client: httpx.AsyncClient) -> None:
            for index in indices:
                await self.create(client, orders, index)

        await asyncio.gather(*(connection(client) for client in self._clients[:count]))
        return orders

    async def paced(self, rate: float, seconds: float) -> Orders:
        orders = Orders()
        idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in self._clients:
            idle.put_nowait(client)

        async def send(client: httpx.AsyncClient, index: int) -> None:
            try:
                await self.create(client, orders, index)
            finally:
                idle.put_nowait(client)

        start = time.perf_counter() + 0.01
        async with asyncio.TaskGroup() as group:
            for index in range(max(1, round(rate * seconds))):
                due = start + index / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                client = await idle.get()
                if time.perf_counter() - due > 0.05:
                    orders.late += 1
                group.create_task(send(client, index))
        return orders


# ---------------------------------------------------------------- a phase and what it measured


@dataclass(frozen=True)
class TableStats:
    """webhook.deliveries as Postgres counts it: sequential scans and the rows they read,
    live rows, the row count the planner's statistics hold, and when those were taken."""

    seq_scans: int
    seq_rows: int
    index_scans: int
    index_rows: int
    live_rows: int
    planner_rows: float
    analyzed: datetime | None


async def table_stats(conn: AsyncConnection[Any]) -> TableStats:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT s.seq_scan, s.seq_tup_read, coalesce(s.idx_scan, 0),"
        " coalesce(s.idx_tup_fetch, 0), s.n_live_tup, c.reltuples,"
        " greatest(s.last_analyze, s.last_autoanalyze)"
        " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
        " WHERE s.relid = 'webhook.deliveries'::regclass"
    )
    row = await cursor.fetchone()
    assert row is not None
    return TableStats(
        int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), float(row[5]), row[6]
    )


@dataclass(frozen=True)
class Row:
    """A delivery of the phase's orders as the delivery log has it (times: epoch seconds)."""

    delivery_id: str
    webhook_id: str
    state: str
    attempts: int
    recorded: float
    last_attempt: float


@dataclass
class Phase:
    name: str
    scenario: str
    orders: Orders
    started: float
    ended: float
    drained: bool
    records: list[Record]
    peak: dict[int, int]
    problems: dict[str, int]
    rows: list[Row]
    cpu: CpuUsage
    receiver_cpu: float
    healthy: frozenset[int]
    failing: frozenset[int]
    webhook_endpoint: dict[str, int]
    leased: list[tuple[float, int, int]]
    table: tuple[TableStats, TableStats]

    @functools.cached_property
    def deliveries(self) -> list[Record]:
        """First 200-answered arrival of each delivery of the phase's orders at a healthy
        endpoint."""
        seen: set[str] = set()
        found = []
        for record in sorted(self.records, key=lambda r: r[1]):
            if (
                record[0] in self.healthy
                and record[2] == 200
                and record[6] in self.orders.sent
                and record[3] not in seen
            ):
                seen.add(record[3])
                found.append(record)
        return found

    @property
    def latencies(self) -> list[float]:
        return sorted(r[1] - r[7] for r in self.deliveries)

    @property
    def duplicates(self) -> int:
        counted = Counter(
            r[3] for r in self.records if r[0] in self.healthy and r[6] in self.orders.sent
        )
        return sum(n - 1 for n in counted.values() if n > 1)

    @property
    def failing_requests(self) -> list[Record]:
        return [r for r in self.records if r[0] in self.failing]

    def healthy_rows(self) -> list[Row]:
        return [r for r in self.rows if self.webhook_endpoint.get(r.webhook_id) in self.healthy]

    def to(self, endpoints: frozenset[int] | None) -> list[Record]:
        """The deliveries to some of the healthy endpoints (None: all)."""
        if endpoints is None:
            return self.deliveries
        return [r for r in self.deliveries if r[0] in endpoints]

    def rate_in(self, start: float, end: float, endpoints: frozenset[int] | None = None) -> float:
        arrivals = [r[1] for r in self.to(endpoints) if start <= r[1] <= end]
        return len(arrivals) / max(end - start, 1e-9)

    @property
    def steady_rate(self) -> float:
        """Paced: healthy deliveries a second while orders were sent (after STEADY_SKIP)."""
        return self.steady_rate_to(None)

    def steady_rate_to(self, endpoints: frozenset[int] | None) -> float:
        start = self.orders.first_send + STEADY_SKIP
        return self.rate_in(start, self.orders.last_send, endpoints)

    def burst_rate_to(self, endpoints: frozenset[int] | None) -> float:
        arrivals = [r[1] for r in self.to(endpoints)]
        if not arrivals:
            return 0.0
        return len(arrivals) / max(max(arrivals) - self.orders.first_send, 1e-9)

    @property
    def offered_rate(self) -> float:
        """Paced: healthy deliveries a second the phase's orders asked for."""
        span = max(self.orders.last_send - self.orders.first_send, 1e-9)
        return len(self.healthy_rows()) / span

    @property
    def burst_rate(self) -> float:
        """Burst: healthy deliveries from the first create sent to the last arrival."""
        return self.burst_rate_to(None)

    @property
    def burst_steady_rate(self) -> float:
        """Burst: between the 10th and the 90th percentile of the arrivals."""
        arrivals = sorted(r[1] for r in self.deliveries)
        if len(arrivals) < 20:
            return math.nan
        low, high = len(arrivals) // 10, len(arrivals) * 9 // 10
        return (high - low) / max(arrivals[high] - arrivals[low], 1e-9)


async def delivery_rows(conn: AsyncConnection[Any], order_ids: Iterable[str]) -> list[Row]:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT d.delivery_id::text, d.webhook_id::text, d.state, d.attempts,"
        " extract(epoch FROM d.created_at)::float8,"
        " extract(epoch FROM max(a.started_at))::float8"
        " FROM webhook.deliveries d LEFT JOIN webhook.delivery_attempts a USING (delivery_id)"
        " WHERE d.order_id = ANY(%s) GROUP BY d.delivery_id",
        (list(order_ids),),
    )
    return [
        Row(str(i), str(w), str(s), int(n), float(r), math.nan if a is None else float(a))
        for i, w, s, n, r, a in await cursor.fetchall()
    ]


async def drained(
    conn: AsyncConnection[Any], order_ids: Sequence[str], webhooks: Sequence[str]
) -> bool:
    """Every order finished, its last event folded by the dispatcher, and nothing pending for
    the ``webhooks``."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT (SELECT count(*) FROM orders.orders WHERE order_id = ANY(%(uuids)s::uuid[])"
        "        AND status = ANY(%(terminal)s)),"
        " (SELECT count(*) FROM webhook.orders WHERE order_id = ANY(%(ids)s)"
        "        AND document->>'status' = ANY(%(documents)s)),"
        " (SELECT count(*) FROM webhook.deliveries WHERE order_id = ANY(%(ids)s)"
        "        AND webhook_id = ANY(%(webhooks)s::uuid[]) AND state = 'pending')",
        {
            "ids": list(order_ids),
            "uuids": list(order_ids),
            "terminal": list(TERMINAL),
            "documents": list(TERMINAL_DOCUMENT),
            "webhooks": list(webhooks),
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    finished, folded, pending = row
    return bool(finished == folded == len(order_ids) and pending == 0)


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        *,
        conn: AsyncConnection[Any],
        leases_conn: AsyncConnection[Any],
        client: httpx.AsyncClient,
        receivers: ReceiverProcess,
        maker: OrderMaker,
        users: Sequence[User],
        endpoints: Sequence[Endpoint],
        failing: frozenset[int],
        settings: WebhookSettings,
    ) -> None:
        self.settings = settings
        self.args = args
        self.conn = conn
        self.leases_conn = leases_conn
        self.client = client
        self.receivers = receivers
        self.maker = maker
        self.users = users
        self.endpoints = endpoints
        self.failing = failing
        self.healthy = frozenset(e.index for e in endpoints) - failing
        failing_users = {e.user for e in endpoints if e.index in failing}
        shared = frozenset(e.index for e in endpoints if e.user in failing_users) - failing
        self.groups: list[tuple[str, frozenset[int] | None]] = [
            (f"all healthy ({len(self.healthy)})", None),
            (OTHER_USERS, self.healthy - shared),
        ]
        if shared:
            self.groups.append((SAME_USER, shared))
        self.sampler = CpuSampler(conn)
        self.webhook_endpoint: dict[str, int] = {}

    async def register(self, endpoints: Iterable[Endpoint]) -> None:
        for endpoint in endpoints:
            await register_webhook(self.client, self.users[endpoint.user], endpoint)
            self.webhook_endpoint[endpoint.webhook_id] = endpoint.index
        await self.receivers.call("secrets", {e.index: e.secret for e in self.endpoints})

    async def delete(self, endpoints: Sequence[Endpoint]) -> int:
        """Deletes the endpoints' webhooks (and so their deliveries) once no attempt to them
        is in flight or due: failing endpoints answer 503 at once from now on, so held
        attempts end and are recorded (a delivery deleted under an attempt makes the sender
        log a lost lease), and the sender soon disables them, parking the rest."""
        await self.receivers.call("release")
        ids = [e.webhook_id for e in endpoints if e.webhook_id]
        deadline = time.monotonic() + self.args.drain_timeout
        while time.monotonic() < deadline:
            cursor = await self.conn.execute(
                "SELECT count(*) FROM webhook.deliveries WHERE webhook_id = ANY(%s::uuid[])"
                " AND (lease_owner IS NOT NULL"
                "      OR (state = 'pending' AND next_attempt_at <= now()))",
                (ids,),
            )
            row = await cursor.fetchone()
            if row is None or row[0] == 0:
                break
            await asyncio.sleep(0.2)
        deleted = await delete_webhooks(self.client, self.users, endpoints)
        for endpoint in endpoints:
            endpoint.webhook_id = endpoint.secret = ""
        return deleted

    async def phase(
        self,
        name: str,
        scenario: str,
        failing: frozenset[int],
        create: Callable[[], Awaitable[Orders]],
    ) -> Phase:
        await self.receivers.call("collect")
        leased: list[tuple[float, int, int]] = []
        stop = asyncio.Event()
        sampling = asyncio.create_task(self._sample_leases(leased, failing, stop))
        before = await self.sampler.snapshot()
        table_before = await table_stats(self.conn)
        receiver_before = self.receivers.cpu_seconds()
        started = time.time()
        orders = await create()
        order_ids = list(orders.sent)
        # Every endpoint answering this phase, so none of its deliveries is left over for
        # the next scenario.
        answering = [e.webhook_id for e in self.endpoints if e.index not in failing]
        deadline = time.monotonic() + self.args.drain_timeout
        finished = False
        while time.monotonic() < deadline:
            if await drained(self.conn, order_ids, answering):
                finished = True
                break
            await asyncio.sleep(0.2)
        ended = time.time()
        stop.set()
        await sampling
        after = await self.sampler.snapshot()
        table_after = await table_stats(self.conn)
        receiver_cpu = self.receivers.cpu_seconds() - receiver_before
        records, peak, problems = await self.receivers.call("collect")
        return Phase(
            name=name,
            scenario=scenario,
            orders=orders,
            started=started,
            ended=ended,
            drained=finished,
            records=records,
            peak=peak,
            problems=problems,
            rows=await delivery_rows(self.conn, order_ids),
            cpu=self.sampler.usage(before, after),
            receiver_cpu=receiver_cpu,
            healthy=self.healthy,
            failing=failing,
            webhook_endpoint=self.webhook_endpoint,
            leased=leased,
            table=(table_before, table_after),
        )

    async def _sample_leases(
        self, found: list[tuple[float, int, int]], failing: frozenset[int], stop: asyncio.Event
    ) -> None:
        """Every LEASE_SAMPLE seconds: deliveries leased by a sender (attempts in flight),
        all and to failing endpoints."""
        failing_ids = [e.webhook_id for e in self.endpoints if e.index in failing]
        while not stop.is_set():
            cursor = await self.leases_conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE webhook_id = ANY(%s::uuid[]))"
                " FROM webhook.deliveries WHERE lease_owner IS NOT NULL",
                (failing_ids,),
            )
            row = await cursor.fetchone()
            if row is not None:
                found.append((time.time(), int(row[0]), int(row[1])))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LEASE_SAMPLE)

    async def scenario(self, scenario: str, failing: frozenset[int]) -> list[Phase]:
        if scenario == "healthy again":
            # The failing endpoints' webhooks are replaced: their backlog of retries goes, and
            # they answer like the others again.
            replaced = [e for e in self.endpoints if e.index in self.failing]
            await self.delete(replaced)
            await self.register(replaced)
        await self.receivers.call("failing", (failing, self.args.failure, self.args.fail_delay))
        paced = await self.phase(
            "paced",
            scenario,
            failing,
            lambda: self.maker.paced(self.args.rate, self.args.seconds),
        )
        print_phase(paced, self)
        burst = await self.phase(
            "burst", scenario, failing, lambda: self.maker.burst(self.args.burst_orders)
        )
        print_phase(burst, self)
        return [paced, burst]


# ---------------------------------------------------------------- printing


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}" if math.isfinite(seconds) else "    n/a"


def counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counter.items()))


def latency_line(seconds: Sequence[float]) -> str:
    ordered = sorted(seconds)
    if not ordered:
        return "no samples"
    p50, p95, p99 = (percentile(ordered, q) for q in (50, 95, 99))
    return (
        f"p50 {ms(p50)}  p95 {ms(p95)}  p99 {ms(p99)}  max {ms(ordered[-1])} ms  (n={len(ordered)})"
    )


def print_phase(phase: Phase, bench: Bench) -> None:
    orders = phase.orders
    if phase.name == "paced":
        title = f"paced, {bench.args.rate:g} orders/s for {bench.args.seconds:g} s"
    else:
        title = f"burst, {bench.args.burst_orders} orders over {bench.args.connections} connections"
    span = max(orders.last_send - orders.first_send, 0.0)
    print(
        f"\n  [{phase.scenario}] {title}: {len(orders.sent)} orders created in {span:.1f} s"
        + (f", {orders.late} sent > 50 ms late" if orders.late else "")
        + ("" if phase.drained else f"; NOT DRAINED after {bench.args.drain_timeout:g} s")
    )
    if orders.errors:
        print(f"    create errors {dict(orders.errors)}; first: {orders.first_error}")
    deliveries = phase.deliveries
    healthy_rows = phase.healthy_rows()
    states = counts(Counter(r.state for r in healthy_rows))
    print(
        f"    healthy endpoints ({len(phase.healthy)}): {len(deliveries)} deliveries received,"
        f" {len(healthy_rows)} recorded ({states})"
        f" = {len(healthy_rows) / max(len(orders.sent), 1) / max(len(phase.healthy), 1):.2f}"
        " per order per endpoint"
    )
    if phase.name == "paced":
        print(
            f"    deliveries/s   {phase.steady_rate:7.1f} to healthy endpoints while orders"
            f" were sent (after the first {STEADY_SKIP:g} s; asked for: {phase.offered_rate:.1f})"
        )
    else:
        print(
            f"    deliveries/s   {phase.burst_rate:7.1f} to healthy endpoints, first create to"
            f" last arrival ({phase.burst_steady_rate:.1f} between the 10th and 90th"
            " percentile arrival)"
        )
    requests = len(phase.records)
    window = max(phase.ended - phase.started, 1e-9)
    print(
        f"    all requests   {requests / window:7.1f}/s over the {window:.1f} s phase"
        f" ({requests}, of which {len(phase.failing_requests)} to failing endpoints)"
    )
    print(f"    status change → delivery  {latency_line(phase.latencies)}")
    if len(bench.groups) > 2:
        print_groups(phase, bench)
    by_id = {r.delivery_id: r for r in healthy_rows}
    dispatcher, queued, post = [], [], []
    for record in deliveries:
        row = by_id.get(record[3])
        if row is None:
            continue
        dispatcher.append(row.recorded - record[7])
        queued.append(row.last_attempt - row.recorded)
        post.append(record[1] - row.last_attempt)
    print(f"      change → recorded       {latency_line(dispatcher)}")
    print(f"      recorded → attempt      {latency_line(queued)}")
    print(f"      attempt → arrival       {latency_line(post)}")
    if phase.name == "paced":
        print_by_event(phase)
    print_checks(phase, healthy_rows)
    print_in_flight(phase, bench)
    print_table(phase)
    print_failing(phase)
    print_cpu(phase, bench)
    if phase.name == "paced":
        print_timeline(phase)


def print_groups(phase: Phase, bench: Bench) -> None:
    cells = []
    for label, endpoints in bench.groups[1:]:
        figures = Figures.of(phase, endpoints)
        cells.append(
            f"{label} ({len(endpoints or ())}): {figures.rate:.1f}/s,"
            f" p50 {ms(figures.p50).strip()} p99 {ms(figures.p99).strip()} ms"
        )
    print(f"      {'; '.join(cells)}")


def print_by_event(phase: Phase) -> None:
    """One order's deliveries to one endpoint go one at a time, in order: each waits for
    the one before it."""
    by_event: dict[str, list[float]] = defaultdict(list)
    for record in phase.deliveries:
        by_event[record[5]].append(record[1] - record[7])
    cells = [
        f"{event.removeprefix('order.')} {ms(percentile(sorted(values), 50)).strip()}"
        f"/{ms(percentile(sorted(values), 99)).strip()}"
        for event, values in sorted(by_event.items(), key=lambda item: EVENT_ORDER.get(item[0], 99))
    ]
    print(f"      p50/p99 ms by event: {', '.join(cells)}")


def print_checks(phase: Phase, healthy_rows: Sequence[Row]) -> None:
    received = {r[3] for r in phase.deliveries}
    succeeded = {r.delivery_id for r in healthy_rows if r.state == "succeeded"}
    missing = len(succeeded - received)
    unknown = len(received - {r.delivery_id for r in healthy_rows})
    unsigned = sum(1 for r in phase.records if not r[9])
    order: dict[tuple[int, str], list[int]] = defaultdict(list)
    for record in phase.deliveries:
        order[(record[0], record[6])].append(record[8])
    disordered = sum(1 for versions in order.values() if versions != sorted(versions))
    healthy_peak = max((n for e, n in phase.peak.items() if e in phase.healthy), default=0)
    problems = [
        f"{missing} recorded as succeeded but never received" if missing else "",
        f"{unknown} received but not in the delivery log" if unknown else "",
        f"{phase.duplicates} received twice" if phase.duplicates else "",
        f"{unsigned} with a bad X-Webhook-Signature" if unsigned else "",
        f"{disordered} (endpoint, order) pairs out of order" if disordered else "",
        *(f"{n} {what}" for what, n in phase.problems.items()),
    ]
    found = "; ".join(p for p in problems if p) or "none"
    print(
        f"    checks: every request signed, each delivery once, in order per order: problems:"
        f" {found}; most requests at once at one healthy endpoint: {healthy_peak}"
    )


def print_in_flight(phase: Phase, bench: Bench) -> None:
    """Attempts in flight (leased deliveries) while the healthy deliveries were going out:
    from the first create to the last healthy arrival."""
    last = max((r[1] for r in phase.deliveries), default=phase.ended)
    samples = [(n, f) for at, n, f in phase.leased if phase.orders.first_send <= at <= last]
    if not samples:
        return
    healthy = [n - f for n, f in samples]
    print(
        f"    in flight (leased, sampled every {LEASE_SAMPLE * 1000:.0f} ms until the last"
        f" healthy arrival): mean {sum(n for n, _ in samples) / len(samples):.1f},"
        f" max {max(n for n, _ in samples)} of the sender's {bench.settings.concurrency};"
        f" to healthy endpoints mean {sum(healthy) / len(healthy):.1f}, max {max(healthy)}"
    )


def print_table(phase: Phase) -> None:
    """Sequential scans of webhook.deliveries: the sender's queries use indexes; scans of
    the whole table, many a second, mean a plan made for a much smaller table."""
    before, after = phase.table
    seconds = max(phase.ended - phase.started, 1e-9)
    analyzed = (
        "never"
        if after.analyzed is None
        else f"{after.analyzed.astimezone().strftime('%H:%M:%S')}"
        f" ({phase.ended - after.analyzed.timestamp():.0f} s before the phase ended)"
    )
    delivered = max(len(phase.deliveries), 1)
    print(
        f"    webhook.deliveries: {(after.seq_scans - before.seq_scans) / seconds:.1f} sequential"
        f" scans/s reading {(after.seq_rows - before.seq_rows) / seconds:,.0f} rows/s;"
        f" per healthy delivery {(after.index_scans - before.index_scans) / delivered:.0f}"
        f" index scans fetching {(after.index_rows - before.index_rows) / delivered:,.0f}"
        f" rows; planner statistics from {analyzed} count {after.planner_rows:,.0f} rows,"
        f" the table has {after.live_rows:,}"
    )


def print_failing(phase: Phase) -> None:
    if not phase.failing:
        return
    requests = phase.failing_requests
    answers = Counter({0: "no answer", 200: "200 late"}.get(r[2], str(r[2])) for r in requests)
    rows = [r for r in phase.rows if phase.webhook_endpoint.get(r.webhook_id) in phase.failing]
    states = Counter(r.state for r in rows)
    peak = max((n for e, n in phase.peak.items() if e in phase.failing), default=0)
    print(
        f"    failing endpoints ({len(phase.failing)}): {len(requests)} attempts"
        f" ({counts(answers)}), at most {peak} at once at one; this phase's deliveries to"
        f" them: {counts(states) or 'none'}"
    )


def print_cpu(phase: Phase, bench: Bench) -> None:
    usage = phase.cpu
    delivered = max(len(phase.deliveries), 1)
    sender = usage.processes.get(SENDER, math.nan)
    cores = os.cpu_count() or 1
    shown = {name: seconds for name, seconds in usage.processes.items() if seconds > 0.005}
    shown["receivers"] = phase.receiver_cpu
    listed = ", ".join(
        f"{name} {seconds * 1000 / delivered:.2f}"
        for name, seconds in sorted(shown.items(), key=lambda item: -item[1])
    )
    print(
        f"    {SENDER} CPU   {sender * 1000 / delivered:7.3f} ms per healthy delivery,"
        f" {sender * 1000 / max(len(phase.records), 1):.3f} ms per request;"
        f" {sender / max(usage.seconds, 1e-9):.2f} cores over {usage.seconds:.1f} s;"
        f" machine busy {usage.machine_busy / max(usage.seconds * cores, 1e-9):.0%}"
    )
    other = usage.machine_busy - sum(usage.processes.values()) - phase.receiver_cpu
    print(
        f"    CPU ms per healthy delivery, by process: {listed};"
        f" other work on the machine {max(other, 0.0) / max(usage.seconds, 1e-9):.2f} cores"
    )
    if usage.restarted:
        print(f"    RESTARTED during the phase: {', '.join(sorted(usage.restarted))}")


def print_timeline(phase: Phase) -> None:
    start = phase.orders.first_send
    buckets: dict[int, list[float]] = defaultdict(list)
    failing: Counter[int] = Counter()
    for record in phase.deliveries:
        buckets[int((record[1] - start) // TIMELINE_BUCKET)].append(record[1] - record[7])
    for record in phase.failing_requests:
        failing[int((record[1] - start) // TIMELINE_BUCKET)] += 1
    last = max([*buckets, *failing], default=-1)
    cells = []
    for bucket in range(last + 1):
        values = sorted(buckets.get(bucket, []))
        p50 = percentile(values, 50) * 1000 if values else math.nan
        cell = f"{len(values) / TIMELINE_BUCKET:.0f}/s {p50:.0f}ms"
        if phase.failing:
            cell += f" f{failing[bucket]}"
        cells.append(cell)
    legend = "healthy deliveries/s, their p50" + (
        ", attempts at failing endpoints" if phase.failing else ""
    )
    print(f"    every {TIMELINE_BUCKET:g} s from the first order ({legend}):")
    for offset in range(0, len(cells), 6):
        print("      " + " | ".join(cells[offset : offset + 6]))


async def print_disabled(
    conn: AsyncConnection[Any], endpoints: Sequence[Endpoint], failing: frozenset[int], since: float
) -> None:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT webhook_id::text, active, consecutive_failures,"
        " extract(epoch FROM disabled_at)::float8 FROM webhook.webhooks"
        " WHERE webhook_id = ANY(%s::uuid[])",
        ([e.webhook_id for e in endpoints if e.index in failing],),
    )
    rows = await cursor.fetchall()
    disabled = sorted(at - since for _, active, _, at in rows if not active and at is not None)
    failures = [n for _, _, n, _ in rows]
    pending = await conn.execute(
        "SELECT state, count(*) FROM webhook.deliveries WHERE webhook_id = ANY(%s::uuid[])"
        " GROUP BY state",
        ([e.webhook_id for e in endpoints if e.index in failing],),
    )
    states = ", ".join(f"{s} {n}" for s, n in await pending.fetchall())
    print(
        f"  failing endpoints at the end: {len(disabled)} of {len(rows)} disabled by the sender"
        + (
            " (at " + ", ".join(f"+{d:.0f} s" for d in disabled) + " after the scenario began)"
            if disabled
            else ""
        )
        + f"; consecutive failures {min(failures, default=0)}-{max(failures, default=0)};"
        f" their deliveries: {states or 'none'}"
    )


def ratio(after: float, before: float) -> float:
    return after / before if before > 0 and math.isfinite(before) else math.nan


@dataclass(frozen=True)
class Figures:
    """What the comparison takes from one phase, for its healthy endpoints."""

    rate: float
    p50: float
    p99: float
    sender_ms: float
    drained: bool

    @classmethod
    def of(cls, phase: Phase, endpoints: frozenset[int] | None = None) -> Figures:
        latencies = sorted(r[1] - r[7] for r in phase.to(endpoints))
        sender = phase.cpu.processes.get(SENDER, math.nan)
        return cls(
            rate=(
                phase.steady_rate_to(endpoints)
                if phase.name == "paced"
                else phase.burst_rate_to(endpoints)
            ),
            p50=percentile(latencies, 50),
            p99=percentile(latencies, 99),
            sender_ms=sender * 1000 / max(len(phase.deliveries), 1),
            drained=phase.drained,
        )


def comparison_cell(
    label: str,
    value: Callable[[Figures], float],
    runs: Sequence[Figures],
    failing: Figures,
    base: Figures,
    *,
    unit: str,
    scale: float,
) -> str:
    """``label`` healthy run / healthy run → failing run, and failing/mean of healthy."""
    before = " / ".join(f"{value(f) * scale:.1f}" for f in runs)
    return (
        f"{label} {before} → {value(failing) * scale:.1f}{unit}"
        f" ({ratio(value(failing), value(base)):.2f}x)"
    )


def print_comparison(
    healthy: Sequence[Sequence[Phase]],
    failing: Sequence[Phase],
    groups: Sequence[tuple[str, frozenset[int] | None]],
    share: float,
) -> bool:
    """The failing scenario's figures against the mean of the healthy runs', for all the
    healthy endpoints and for each group of them. The goal: paced, all healthy endpoints,
    against the mean; burst, the endpoints of users without a failing endpoint (a user's
    endpoints share the per-user cap, so a user's own failing endpoint holds some of its
    slots by design), against the slower healthy run: a burst's rate depends mostly on
    Postgres' statistics of webhook.deliveries at the time (see bench/README.md), which
    differ between runs more than the failing endpoints could change it."""
    print(
        f"\n== the same healthy endpoints with {share:.0%} of the endpoints failing, against"
        f" {'the mean of the healthy runs' if len(healthy) > 1 else 'the healthy run'}"
        " (healthy / healthy again → failing)"
    )
    ok = True
    for index, after in enumerate(failing):
        for label, endpoints in groups:
            runs = [Figures.of(run[index], endpoints) for run in healthy]
            b = Figures.of(after, endpoints)
            base = Figures(
                rate=sum(f.rate for f in runs) / len(runs),
                p50=sum(f.p50 for f in runs) / len(runs),
                p99=sum(f.p99 for f in runs) / len(runs),
                sender_ms=sum(f.sender_ms for f in runs) / len(runs),
                drained=all(f.drained for f in runs),
            )
            cells: list[tuple[str, Callable[[Figures], float], str, float]] = [
                ("deliveries/s", lambda f: f.rate, "", 1),
                ("p50", lambda f: f.p50, " ms", 1000),
                ("p99", lambda f: f.p99, " ms", 1000),
            ]
            if endpoints is None:
                cells.append(("sender CPU/delivery", lambda f: f.sender_ms, " ms", 1))
            print(
                f"  {after.name:<6} {label:<28} "
                + "; ".join(
                    comparison_cell(name, value, runs, b, base, unit=unit, scale=scale)
                    for name, value, unit, scale in cells
                )
            )
            rate = ratio(b.rate, base.rate)
            if after.name == "paced" and endpoints is None:
                ok = (
                    ok
                    and b.drained
                    and rate >= GOAL_RATE_RATIO
                    and ratio(b.p50, base.p50) <= GOAL_P50_RATIO
                    and ratio(b.p99, base.p99) <= GOAL_P99_RATIO
                )
            if after.name == "burst" and label == OTHER_USERS:
                slower = min(f.rate for f in runs)
                ok = ok and b.drained and ratio(b.rate, slower) >= GOAL_RATE_RATIO
    return ok


def log_tail(name: str, offset: int) -> list[dict[str, Any]]:
    """The JSON lines a stack process logged from ``offset`` on."""
    try:
        with log_path(name).open("rb") as file:
            file.seek(offset)
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                found.append(entry)
    return found


def log_size(name: str) -> int:
    try:
        return log_path(name).stat().st_size
    except OSError:
        return 0


def print_logs(offsets: Mapping[str, int]) -> None:
    counted: Counter[tuple[str, str, str]] = Counter()
    for name, offset in offsets.items():
        for entry in log_tail(name, offset):
            level = str(entry.get("level", ""))
            if level in ("warning", "error", "critical"):
                counted[(name, level, str(entry.get("message", "")))] += 1
    if not counted:
        print("\n  stack logs during the bench: no warning or error")
        return
    print("\n  stack logs during the bench, warnings and errors:")
    for (name, level, message), count in counted.most_common():
        print(f"    {name:<15} {level:<8} {count:6d}  {message}")


# ---------------------------------------------------------------- the run


def sender_settings(pid: int) -> WebhookSettings:
    """The webhook settings the running sender read, from its own environment."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    env = dict(
        item.split("=", 1) for item in raw.decode("utf-8", "replace").split("\0") if "=" in item
    )
    return WebhookSettings.from_env(env)


def failing_endpoints(users: int, per_user: int, share: float) -> frozenset[int]:
    """round(share x endpoints) endpoints, concentrated: the last half (rounded down, at
    least one) of the first users' endpoints, so that other users have none failing and the
    users with failing endpoints keep healthy ones."""
    count = users * per_user
    left = min(count - 1, max(1, round(share * count)))
    found: set[int] = set()
    for user in range(users):
        take = min(left, max(1, per_user // 2))
        found.update(range((user + 1) * per_user - take, (user + 1) * per_user))
        left -= take
        if not left:
            break
    return frozenset(found)


def print_header(
    args: argparse.Namespace,
    *,
    sender_pid: int,
    settings: WebhookSettings,
    hosts: Sequence[str],
    failing: frozenset[int],
    backlog: int,
) -> None:
    users_of = sorted({index // args.webhooks_per_user for index in failing})
    print(
        f"ordermesh webhook bench: {os.cpu_count()} cores, load"
        f" {', '.join(f'{x:.1f}' for x in os.getloadavg())}; {SENDER} pid {sender_pid}"
        f" (concurrency {settings.concurrency}, {settings.per_endpoint_concurrency} per"
        f" endpoint, {settings.per_user_concurrency} per user, timeout"
        f" {settings.total_timeout:g} s, disables an endpoint after"
        f" {settings.disable_after_failures} failed attempts in a row)"
    )
    print(
        f'  {args.users} users x {args.webhooks_per_user} webhooks (events "*") = {len(hosts)}'
        f" endpoints on {hosts[0]}-{hosts[-1]}; failing scenario: {len(failing)} of them"
        f" ({len(failing) // max(len(users_of), 1)} of each of users"
        f" {', '.join(str(u + 1) for u in users_of)})"
        + (
            " never answer (the sender's timeout ends each attempt)"
            if args.failure == "timeout"
            else f" answer {args.failure[:3]} after {args.fail_delay:g} s"
        )
        + f"; {backlog} other deliveries pending in the stack"
    )
    print(
        "  latency = the order's status change (data.updated_at) → the delivery's arrival"
        " at the receiver, healthy endpoints only; recorded = webhook.deliveries.created_at,"
        " attempt = the successful attempt's started_at"
    )


async def warm_up(bench: Bench, args: argparse.Namespace) -> None:
    """Paced orders, not counted, for --warmup-seconds and then until autovacuum has
    analyzed webhook.deliveries since they began (at most --analyze-wait more seconds): the
    bench's clean-up empties the table, and until the next analyze the planner's statistics
    describe an empty table (see bench/README.md), which the measured phases should not
    inherit unseen."""
    began = datetime.now(UTC)
    orders = deliveries = 0
    deadline = time.monotonic() + args.warmup_seconds + args.analyze_wait
    seconds = args.warmup_seconds
    while True:
        warm = await bench.phase(
            "warm-up",
            "warm-up",
            frozenset(),
            functools.partial(bench.maker.paced, args.rate, seconds),
        )
        orders, deliveries = orders + len(warm.orders.sent), deliveries + len(warm.deliveries)
        analyzed = warm.table[1].analyzed
        if (analyzed is not None and analyzed > began) or time.monotonic() >= deadline:
            break
        seconds = min(5.0, max(deadline - time.monotonic(), 1.0))
    took = (datetime.now(UTC) - began).total_seconds()
    if analyzed is not None and analyzed > began:
        after = (analyzed - began).total_seconds()
        stats = f"webhook.deliveries analyzed by autovacuum {after:.0f} s in"
    else:
        stats = (
            "webhook.deliveries NOT analyzed since it began: the first phase may run on"
            " stale planner statistics"
        )
    print(
        f"\n  warm-up (not counted): {orders} orders, {deliveries} deliveries in {took:.0f} s;"
        f" {stats}"
    )


async def run_scenarios(bench: Bench, args: argparse.Namespace) -> None:
    """Warm-up, healthy, failing, healthy again; then the comparison and the goal."""
    conn, endpoints, failing = bench.conn, bench.endpoints, bench.failing
    count = len(endpoints)
    if args.warmup_seconds:
        await warm_up(bench, args)
    print("\n== healthy: every endpoint answers 200")
    healthy = [await bench.scenario("healthy", frozenset())]
    doing = "are slow" if args.failure == "slow-200" else "fail every attempt"
    print(f"\n== failing: {len(failing)} of {count} endpoints {doing}")
    failing_started = time.time()
    failed = await bench.scenario("failing", failing)
    await print_disabled(conn, endpoints, failing, failing_started)
    if args.repeat:
        print(
            "\n== healthy again: every endpoint answers 200 (the failing endpoints'"
            " webhooks deleted and registered afresh)"
        )
        healthy.append(await bench.scenario("healthy again", frozenset()))
    ok = print_comparison(healthy, failed, bench.groups, args.failing_share)
    print(
        f"\nhealthy endpoints not slowed by {len(failing)} failing ones (against the mean of"
        f" the healthy runs: paced, all healthy endpoints, p50 ≤ {GOAL_P50_RATIO:g}x, p99 ≤"
        f" {GOAL_P99_RATIO:g}x, deliveries/s ≥ {GOAL_RATE_RATIO:g}x; burst, other users'"
        f" endpoints, deliveries/s ≥ {GOAL_RATE_RATIO:g}x the slower healthy run's):"
        f" {'HIT' if ok else 'MISS'}"
    )
    if args.plot is not None:
        plot(args.plot, [*healthy[:1], failed, *healthy[1:]])


def plot(directory: Path, scenarios: Sequence[Sequence[Phase]]) -> None:
    """--plot: for the paced and the burst phase, the status change → delivery latency CDF
    of every scenario (healthy endpoints), and their deliveries per second over time (from
    the phase's first order sent)."""
    written = []
    for index, kind in enumerate(("paced", "burst")):
        phases = [phases[index] for phases in scenarios if len(phases) > index]
        written.append(
            plots.latency_cdf(
                directory,
                f"{kind}-latency-cdf",
                f"webhooks, {kind} phase: status change → delivery at a healthy endpoint",
                {p.scenario: [lat * 1000 for lat in p.latencies] for p in phases},
            )
        )
        written.append(
            plots.throughput(
                directory,
                f"{kind}-deliveries-per-second",
                f"webhooks, {kind} phase: deliveries arriving at healthy endpoints",
                {p.scenario: [r[1] - p.orders.first_send for r in p.deliveries] for p in phases},
                unit="deliveries",
                start=0.0,
            )
        )
    plots.print_written(written)


async def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    base_url = f"http://{HOST}:{Ports.from_env().envoy}"
    sender_pid = procs.read_pid(SENDER)
    if sender_pid is None:
        raise BenchError(f"the {SENDER} process is not running (ordermesh up)")
    settings = sender_settings(sender_pid)
    network = ipaddress.ip_network(LOCAL_WEBHOOK_NETWORK)
    count = args.users * args.webhooks_per_user
    hosts = [str(network[FIRST_HOST + i]) for i in range(count)]
    if not all(settings.allows(ipaddress.ip_address(host)) for host in hosts):
        raise BenchError(f"the sender does not allow {LOCAL_WEBHOOK_NETWORK} (its environment)")
    failing = failing_endpoints(args.users, args.webhooks_per_user, args.failing_share)
    offsets = {name: log_size(name) for name in (SENDER, "workers")}
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=30, trust_env=False)
            )
            for _ in range(args.connections)
        ]
        health = await clients[0].get("/health")
        if health.status_code != 200:
            raise BenchError(f"the stack is not up: GET /health → {health.status_code}")
        conn, leases_conn = [
            await stack.enter_async_context(
                await AsyncConnection.connect(
                    postgres.dsn(), autocommit=True, application_name=BENCH_APPLICATION
                )
            )
            for _ in range(2)
        ]
        backlog = await (
            await conn.execute("SELECT count(*) FROM webhook.deliveries WHERE state = 'pending'")
        ).fetchone()
        products = await prepare_products(conn, PRODUCT_PREFIX, PRODUCT_COUNT)
        stack.push_async_callback(retire_products, conn, products)
        receivers = ReceiverProcess(hosts)
        stack.push_async_callback(receivers.stop)
        endpoints = [
            Endpoint(i, host, port, i // args.webhooks_per_user)
            for i, (host, port) in enumerate(zip(hosts, receivers.ports, strict=True))
        ]
        users = [await bench_user(clients[0], conn) for _ in range(args.users)]
        maker = OrderMaker(clients, users, products)
        bench = Bench(
            args,
            conn=conn,
            leases_conn=leases_conn,
            client=clients[0],
            receivers=receivers,
            maker=maker,
            users=users,
            endpoints=endpoints,
            failing=failing,
            settings=settings,
        )

        async def clean_up() -> None:
            deleted = await bench.delete(endpoints)
            print(f"\n  cleaned up: {deleted} of {len(endpoints)} bench webhooks deleted")

        stack.push_async_callback(clean_up)
        await bench.register(endpoints)
        print_header(
            args,
            sender_pid=sender_pid,
            settings=settings,
            hosts=hosts,
            failing=failing,
            backlog=backlog[0] if backlog else 0,
        )
        await run_scenarios(bench, args)
        print_logs(offsets)
    print(f"(bench took {time.monotonic() - started:.0f} s)")


def main() -> None:
    if importlib.util.find_spec("sniffio") is None:
        # See bench/pipeline.py: httpcore tries `import sniffio` on every request.
        sys.modules["sniffio"] = None  # type: ignore[assignment]
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument(
        "--webhooks-per-user", type=int, default=5, help="each its own endpoint (at most 20)"
    )
    parser.add_argument("--rate", type=float, default=3.0, help="paced phase, orders/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="paced phase length")
    parser.add_argument("--burst-orders", type=int, default=80)
    parser.add_argument("--connections", type=int, default=8, help="HTTP clients for orders")
    parser.add_argument("--failing-share", type=float, default=0.2)
    parser.add_argument(
        "--failure",
        choices=("timeout", "503", "slow-200"),
        default="timeout",
        help="what the failing endpoints do: never answer (the sender times out), answer 503"
        " after --fail-delay, or answer 200 after --fail-delay (slow, never disabled)",
    )
    parser.add_argument(
        "--fail-delay", type=float, default=2.0, help="seconds before a 503 or slow-200 answer"
    )
    parser.add_argument(
        "--warmup-seconds", type=float, default=10.0, help="paced orders first, not counted"
    )
    parser.add_argument(
        "--analyze-wait",
        type=float,
        default=70.0,
        help="then at most this long more, until autovacuum has analyzed webhook.deliveries",
    )
    parser.add_argument(
        "--no-repeat",
        dest="repeat",
        action="store_false",
        help="skip the second healthy run after the failing one",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="after a phase's last order, how long to wait for its healthy deliveries",
    )
    plots.add_plot_argument(parser, "webhooks")
    args = parser.parse_args()
    if min(args.users, args.webhooks_per_user, args.rate, args.seconds, args.connections) <= 0:
        parser.error("--users, --webhooks-per-user, --rate, --seconds, --connections must be > 0")
    if args.webhooks_per_user > 20 or args.users * args.webhooks_per_user > 150:
        parser.error("at most 20 webhooks per user and 150 endpoints")
    if not 0 < args.failing_share < 1:
        parser.error("--failing-share must be between 0 and 1")
    try:
        uvloop.run(run(args))
    except BenchError as error:
        sys.exit(f"bench: {error}")


if __name__ == "__main__":
    main()
