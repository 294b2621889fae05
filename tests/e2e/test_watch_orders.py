"""WatchOrders through the public port: every status of an order, in order, each once;
resuming with a cursor; who may watch what; a Redis outage (with and without its data)
that neither stops orders nor costs a watcher a status."""

import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import httpx
import pytest
from ordermesh.order.v1 import order_pb2, order_pb2_grpc

from devstack import procs
from devstack import redis as devredis
from devstack.paths import REPO_ROOT
from devstack.ports import Ports
from devstack.stack import app_env
from services.platform.healthcheck import probe
from tests.e2e.conftest import User, order_body
from tests.e2e.test_websocket import socket as websocket
from tests.ports import reserve_port

pytestmark = pytest.mark.e2e

HAPPY = ["PENDING", "VALIDATED", "PAID", "FULFILLED", "SHIPPED"]


def status_name(message: order_pb2.WatchOrdersResponse) -> str:
    return order_pb2.OrderStatus.Name(message.status).removeprefix("ORDER_STATUS_")


@dataclass
class Watcher:
    """A WatchOrders stream read in the background: updates as they come, heartbeats
    counted, the last cursor kept."""

    stream: grpc.aio.UnaryStreamCall[order_pb2.WatchOrdersRequest, order_pb2.WatchOrdersResponse]
    updates: list[order_pb2.WatchOrdersResponse] = field(default_factory=list)
    heartbeats: int = 0
    cursor: str = ""
    task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async for message in self.stream:
            self.cursor = message.cursor or self.cursor
            if message.heartbeat:
                self.heartbeats += 1
            else:
                self.updates.append(message)

    def statuses(self, order_id: str) -> list[str]:
        return [status_name(m) for m in self.updates if m.order_id == order_id and not m.snapshot]

    async def until(self, done: Callable[["Watcher"], bool], within: float = 60.0) -> None:
        def check() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()
                raise AssertionError("the stream ended")
            return done(self)

        def got() -> str:
            return f"got {[(m.order_id[:8], status_name(m)) for m in self.updates]}"

        await eventually(check, within, got)


async def eventually(check: Callable[[], bool], within: float, what: Callable[[], str]) -> None:
    """Polls ``check`` until it holds, for at most ``within`` seconds."""
    deadline = time.monotonic() + within
    for _ in range(int(within / 0.05) + 1):
        if check():
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within} s: {what()}")


async def until_shipped(http: httpx.Client, user: User, order_ids: list[str]) -> None:
    await eventually(
        lambda: all(order_status(http, user, o) == "SHIPPED" for o in order_ids),
        60,
        lambda: str({o: order_status(http, user, o) for o in order_ids}),
    )


@contextlib.asynccontextmanager
async def watching(channel: grpc.aio.Channel, user: User, **request: str) -> AsyncIterator[Watcher]:
    stub = order_pb2_grpc.OrderServiceStub(channel)
    watcher = Watcher(
        stub.WatchOrders(order_pb2.WatchOrdersRequest(**request), metadata=user.grpc_metadata)
    )
    watcher.task = asyncio.create_task(watcher._read())
    try:
        await watcher.until(lambda w: w.heartbeats >= 1, within=15)
        yield watcher
    finally:
        watcher.stream.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await watcher.task


def create_order(http: httpx.Client, user: User, **overrides: object) -> str:
    response = http.post("/api/v1/orders", json=order_body(**overrides), headers=user.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["order_id"])


def order_status(http: httpx.Client, user: User, order_id: str) -> str:
    response = http.get(f"/api/v1/orders/{order_id}", headers=user.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["status"]).removeprefix("ORDER_STATUS_")


def shipped(order_id: str) -> Callable[[Watcher], bool]:
    return lambda w: "SHIPPED" in w.statuses(order_id)


async def test_a_watcher_sees_every_status_of_a_new_order_in_order_once(
    channel: grpc.aio.Channel, http: httpx.Client, user: User
) -> None:
    async with watching(channel, user) as watcher:
        assert watcher.updates == []  # a new user's snapshot is empty
        order_id = create_order(http, user)
        await watcher.until(shipped(order_id))
        await asyncio.sleep(0.5)  # anything repeated would arrive now
    assert watcher.statuses(order_id) == HAPPY
    mine = [m for m in watcher.updates if m.order_id == order_id]
    assert [m.version for m in mine] == sorted({m.version for m in mine})
    assert len({m.cursor for m in mine}) == len(mine)
    last = mine[-1]
    assert last.carrier and last.tracking_number and last.HasField("estimated_delivery")
    assert last.message.startswith("shipped with ")
    assert all(m.HasField("occurred_at") and m.message for m in mine)


async def test_a_stream_cancelled_mid_flow_resumes_from_its_cursor(
    channel: grpc.aio.Channel, http: httpx.Client, user: User
) -> None:
    async with watching(channel, user) as first:
        order_id = create_order(http, user)
        await first.until(lambda w: len(w.statuses(order_id)) >= 2)
    seen = first.statuses(order_id)
    cursor = [m.cursor for m in first.updates if m.order_id == order_id][-1]
    # The order goes on while nobody watches.
    await until_shipped(http, user, [order_id])
    async with watching(channel, user, cursor=cursor) as second:
        await second.until(shipped(order_id))
        await asyncio.sleep(0.5)
    assert seen + second.statuses(order_id) == HAPPY
    assert not any(m.snapshot for m in second.updates)


async def test_one_order_can_be_watched_alone(
    channel: grpc.aio.Channel, http: httpx.Client, user: User
) -> None:
    other_order = create_order(http, user)
    order_id = create_order(http, user)
    async with watching(channel, user, order_id=order_id) as watcher:
        await watcher.until(shipped(order_id))
    assert {m.order_id for m in watcher.updates} == {order_id}
    assert other_order != order_id


async def test_a_cursor_the_feed_cannot_resume_from_yields_a_snapshot_first(
    channel: grpc.aio.Channel, http: httpx.Client, user: User
) -> None:
    order_id = create_order(http, user)
    await until_shipped(http, user, [order_id])
    # A cursor of an epoch the feed no longer has (as after Redis came back empty).
    async with watching(channel, user, cursor="00000000deadbeef.1-0") as watcher:
        pass
    assert [(m.order_id, status_name(m), m.snapshot) for m in watcher.updates] == [
        (order_id, "SHIPPED", True)
    ]
    assert watcher.updates[0].carrier


@pytest.mark.parametrize(
    ("request_fields", "code", "details"),
    [
        ({"cursor": "c-1"}, grpc.StatusCode.INVALID_ARGUMENT, "cursor is not one this service"),
        ({"cursor": "x\x00y"}, grpc.StatusCode.INVALID_ARGUMENT, "cursor"),
        ({"user_id": "someone-else"}, grpc.StatusCode.PERMISSION_DENIED, "only admins may"),
    ],
)
async def test_bad_watch_requests_are_refused_with_a_reason(
    channel: grpc.aio.Channel,
    user: User,
    request_fields: dict[str, str],
    code: grpc.StatusCode,
    details: str,
) -> None:
    stub = order_pb2_grpc.OrderServiceStub(channel)
    stream = stub.WatchOrders(
        order_pb2.WatchOrdersRequest(**request_fields), metadata=user.grpc_metadata
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stream:
            pass
    assert raised.value.code() is code
    assert details in (raised.value.details() or "")


async def test_another_users_order_is_not_found_and_a_token_is_needed(
    channel: grpc.aio.Channel, http: httpx.Client, user: User, other_user: User
) -> None:
    theirs = create_order(http, other_user)
    stub = order_pb2_grpc.OrderServiceStub(channel)
    for metadata, code in (
        (user.grpc_metadata, grpc.StatusCode.NOT_FOUND),
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer not-a-token"),), grpc.StatusCode.UNAUTHENTICATED),
    ):
        stream = stub.WatchOrders(order_pb2.WatchOrdersRequest(order_id=theirs), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stream:
                pass
        assert raised.value.code() is code


async def test_an_admin_watches_another_users_orders(
    channel: grpc.aio.Channel, http: httpx.Client, user: User, admin: User
) -> None:
    async with watching(channel, admin, user_id=user.user_id) as watcher:
        order_id = create_order(http, user)
        await watcher.until(shipped(order_id))
    assert watcher.statuses(order_id) == HAPPY


@pytest.mark.parametrize("comes_back", ["with its data", "empty"])
async def test_a_redis_outage_stops_no_order_and_costs_no_watcher_a_status(
    channel: grpc.aio.Channel, http: httpx.Client, user: User, comes_back: str, public_port: int
) -> None:
    """Two gRPC watchers and a WebSocket client through the bridge, all open across the
    outage, each end with every status of every order."""
    async with (
        watching(channel, user) as one,
        watching(channel, user) as two,
        websocket(public_port, user) as browser,
    ):
        before = [create_order(http, user) for _ in range(3)]
        assert devredis.stop()
        try:
            if comes_back == "empty":
                shutil.rmtree(devredis.DATA_DIR, ignore_errors=True)
            during: list[str] = []
            ends = time.monotonic() + 10
            while time.monotonic() < ends:
                during.append(create_order(http, user))
                await asyncio.sleep(1)
            # Redis is not on the order path: the orders placed meanwhile ship.
            await until_shipped(http, user, during)
        finally:
            devredis.start()
        after = [create_order(http, user) for _ in range(2)]
        everything = before + during + after
        for watcher in (one, two):
            await watcher.until(
                lambda w: all("SHIPPED" in w.statuses(o) for o in everything), within=90
            )
        await browser.until(
            lambda s: all("shipped" in s.statuses(o) for o in everything), within=90
        )
        await asyncio.sleep(0.5)
    for watcher in (one, two):
        for order_id in everything:
            assert watcher.statuses(order_id) == HAPPY, order_id
    for order_id in everything:
        assert browser.statuses(order_id) == [s.lower() for s in HAPPY], order_id


@pytest.mark.slow
async def test_an_idle_stream_outlives_envoys_timeouts(
    channel: grpc.aio.Channel, http: httpx.Client, user: User
) -> None:
    """Held open through Envoy for two and a half minutes with nothing happening (longer
    than the 30 s route timeout of unary calls and the 60 s idle limit of health streams),
    the stream still carries the next order's statuses."""
    async with watching(channel, user) as watcher:
        await asyncio.sleep(150)
        assert watcher.task is not None
        assert not watcher.task.done()
        order_id = create_order(http, user)
        await watcher.until(shipped(order_id))
    assert watcher.statuses(order_id) == HAPPY
    assert watcher.heartbeats >= 150 // 15 - 1


async def test_any_order_service_replica_serves_watchers(
    channel: grpc.aio.Channel, http: httpx.Client, user: User
) -> None:
    """A second order-service process (its own port, not behind Envoy) tails the same feed:
    its watcher and Envoy's see the same statuses of an order created through Envoy."""
    name, port = "e2e-second-order-service", reserve_port()
    ports = Ports.from_env()
    services = f"127.0.0.1:{ports.grpc}"  # the stack's auth and inventory services
    env = {
        **app_env(ports),
        "ORDERMESH_GRPC_PORT": str(port),
        "AUTH_SERVICE_ADDR": services,
        "INVENTORY_SERVICE_ADDR": services,
    }
    procs.start_daemon(
        name, [sys.executable, "-m", "services", "--components", "order"], env=env, cwd=REPO_ROOT
    )
    try:
        await eventually(
            lambda: probe(f"127.0.0.1:{port}", "ordermesh.order.v1.OrderService", timeout=1),
            30,
            lambda: f"the second order service on port {port} never served",
        )
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as direct,
            watching(direct, user) as theirs,
            watching(channel, user) as ours,
        ):
            order_id = create_order(http, user)
            await theirs.until(shipped(order_id))
            await ours.until(shipped(order_id))
        assert theirs.statuses(order_id) == ours.statuses(order_id) == HAPPY
        assert [m.cursor for m in theirs.updates] == [m.cursor for m in ours.updates]
    finally:
        procs.stop(name)
