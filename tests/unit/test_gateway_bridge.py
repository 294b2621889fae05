"""The bridge end to end in one process: a real WebSocket server (the gateway) and real
WebSocket clients, over a real gRPC stand-in of the order service's WatchOrders; tokens
signed and verified as in production. Redis is left out here (the per-process limit);
tests/integration/test_gateway_leases.py runs the shared limit on the real Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from ordermesh.order.v1 import order_pb2
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from gateway.app import Gateway, open_server
from gateway.closecodes import CloseCode
from gateway.leases import SocketLeases
from gateway.settings import GatewaySettings
from gateway.upstream import WATCH_CHANNEL_OPTIONS, GrpcWatchSource
from services.common.identity import Principal, Role, Tier
from tests.unit.gateway_harness import FakeOrderFeed, StandInOrderServicer, start_order_server
from tests.unit.servicer_harness import TokenMint

S = order_pb2.OrderStatus


def person(role: Role = Role.USER) -> Principal:
    user_id = str(uuid.uuid4())
    return Principal(user_id, f"{user_id[:8]}@example.com", role, Tier.FREE)


@dataclass
class Bridge:
    gateway: Gateway
    server: Server
    port: int
    feed: FakeOrderFeed
    mint: TokenMint

    def url(self, user_id: str, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/ws/orders/{user_id}{query}"

    def open(
        self,
        who: Principal,
        *,
        user_id: str | None = None,
        query: str = "",
        token: str | None = None,
        subprotocols: Sequence[str] | None = None,
    ) -> Any:
        token = self.mint.token(who) if token is None else token
        headers = {} if subprotocols is not None else {"Authorization": f"Bearer {token}"}
        return connect(
            self.url(user_id or who.user_id, query),
            additional_headers=headers,
            subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
            open_timeout=5,
        )


@pytest.fixture(scope="module")
def mint() -> TokenMint:
    return TokenMint.generate()


@pytest.fixture
async def bridge(mint: TokenMint) -> AsyncIterator[Bridge]:
    feed = FakeOrderFeed(heartbeat_seconds=0.5)
    order_server, order_port = await start_order_server(StandInOrderServicer(feed, mint.verifier()))
    settings = GatewaySettings.from_env(
        {
            "ORDERMESH_ENV": "test",
            "ORDERMESH_GATEWAY_PORT": "0",
            "ORDERMESH_GATEWAY_HEARTBEAT_SECONDS": "0.4",
            "ORDERMESH_GATEWAY_UPSTREAM_GRACE_SECONDS": "1",
            "ORDERMESH_GATEWAY_SEND_QUEUE": "64",
            "ORDER_SERVICE_ADDR": f"127.0.0.1:{order_port}",
        }
    )
    channel = grpc.aio.insecure_channel(settings.order_service_addr, options=WATCH_CHANNEL_OPTIONS)
    leases = SocketLeases(None, limit=5, ttl_seconds=30, instance_id="unit")
    gateway = Gateway(settings, mint.verifier(), leases, GrpcWatchSource(channel))
    ticker = asyncio.create_task(gateway.heartbeats())
    async with open_server(gateway, host="127.0.0.1", port=0) as server:
        port = server.sockets[0].getsockname()[1]
        yield Bridge(gateway, server, port, feed, mint)
        server.close()
        await server.wait_closed()
    ticker.cancel()
    await gateway.hub.close()
    await channel.close()
    await order_server.stop(0)


async def next_update(ws: ClientConnection, within: float = 5.0) -> dict[str, Any]:
    """The next order update (heartbeats skipped)."""
    async with asyncio.timeout(within):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] != "heartbeat":
                return message


async def close_code(ws: ClientConnection, within: float = 5.0) -> tuple[int, str]:
    async with asyncio.timeout(within):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return closed.rcvd.code, closed.rcvd.reason


async def until_streaming(bridge: Bridge, user_id: str) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        feed = bridge.gateway.hub.feeds.get(user_id)
        if feed is not None and feed.position is not None and not feed.catching_up:
            return
        assert asyncio.get_running_loop().time() < deadline, "feed not streaming"
        await asyncio.sleep(0.02)


async def test_updates_arrive_in_the_original_format(bridge: Bridge) -> None:
    alice = person()
    async with bridge.open(alice) as ws:
        await until_streaming(bridge, alice.user_id)
        await bridge.feed.update(alice.user_id, "o1", S.ORDER_STATUS_PENDING, 1)
        cursor = await bridge.feed.update(
            alice.user_id, "o1", S.ORDER_STATUS_SHIPPED, 2, carrier="UPS", tracking_number="1Z9"
        )
        pending, shipped = await next_update(ws), await next_update(ws)
    assert pending["status"] == "pending"
    assert pending["data"] == {"tracking_number": None, "carrier": None, "estimated_delivery": None}
    assert shipped == {
        "type": "order.update",
        "order_id": "o1",
        "status": "shipped",
        "message": "order ORDER_STATUS_SHIPPED",
        "version": 2,
        "timestamp": "2023-11-14T22:13:22Z",
        "cursor": cursor,
        "data": {"tracking_number": "1Z9", "carrier": "UPS", "estimated_delivery": None},
    }


async def test_ping_is_answered_and_idle_sockets_get_heartbeats(bridge: Bridge) -> None:
    alice = person()
    async with bridge.open(alice) as ws:
        await ws.send("ping")
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        async with asyncio.timeout(3):
            heartbeat = json.loads(await ws.recv())
    assert heartbeat["type"] == "heartbeat" and heartbeat["status"] == "alive"


async def test_the_token_can_come_from_the_subprotocol_or_the_query(bridge: Bridge) -> None:
    alice = person()
    token = bridge.mint.token(alice)
    async with bridge.open(alice, subprotocols=["bearer", token]) as ws:
        assert ws.subprotocol == "bearer"
        await ws.send("ping")
        assert json.loads(await ws.recv()) == {"type": "pong"}
    async with bridge.open(alice, subprotocols=[f"bearer.{token}"]) as ws:
        assert ws.subprotocol == f"bearer.{token}"
        await ws.send("ping")
        assert json.loads(await ws.recv()) == {"type": "pong"}
    async with connect(bridge.url(alice.user_id, f"?token={token}")) as ws:
        await ws.send("ping")
        assert json.loads(await ws.recv()) == {"type": "pong"}


async def test_each_refusal_has_its_own_code(bridge: Bridge) -> None:
    alice, bob = person(), person()
    cases = {
        CloseCode.MISSING_TOKEN: connect(bridge.url(alice.user_id)),
        CloseCode.INVALID_TOKEN: bridge.open(alice, token="not-a-jwt"),
        CloseCode.TOKEN_EXPIRED: bridge.open(alice, token=bridge.mint.token(alice, expires_in=-5)),
        CloseCode.FORBIDDEN: bridge.open(alice, user_id=bob.user_id),
        CloseCode.BAD_REQUEST: bridge.open(alice, query="?cursor=" + "x" * 200),
    }
    for expected, opening in cases.items():
        async with opening as ws:
            code, reason = await close_code(ws)
        assert code == expected, (expected.name, code, reason)
        assert reason
    assert bridge.gateway.counters()["refused"] == {code.name.lower(): 1 for code in cases}


async def test_an_admin_may_watch_any_user(bridge: Bridge) -> None:
    admin, bob = person(Role.ADMIN), person()
    async with bridge.open(admin, user_id=bob.user_id) as ws:
        await until_streaming(bridge, bob.user_id)
        await bridge.feed.update(bob.user_id, "o9", S.ORDER_STATUS_PAID, 3)
        assert (await next_update(ws))["status"] == "paid"


async def test_the_sixth_socket_of_a_user_is_refused(bridge: Bridge) -> None:
    alice = person()
    sockets = [await bridge.open(alice) for _ in range(5)]
    try:
        async with bridge.open(alice) as sixth:
            code, _ = await close_code(sixth)
        assert code == CloseCode.TOO_MANY_SOCKETS
        await sockets[0].close()
        async with bridge.open(alice) as again:
            await again.send("ping")
            assert json.loads(await again.recv()) == {"type": "pong"}
    finally:
        for ws in sockets:
            await ws.close()


async def test_reconnecting_with_the_cursor_misses_nothing_and_repeats_nothing(
    bridge: Bridge,
) -> None:
    alice = person()
    feed, user_id = bridge.feed, alice.user_id
    async with bridge.open(alice) as ws:
        await until_streaming(bridge, user_id)
        await feed.update(user_id, "o1", S.ORDER_STATUS_PENDING, 1)
        await feed.update(user_id, "o1", S.ORDER_STATUS_VALIDATED, 2)
        seen = [await next_update(ws), await next_update(ws)]
    await feed.update(user_id, "o1", S.ORDER_STATUS_PAID, 3)
    async with bridge.open(alice, query=f"?cursor={seen[-1]['cursor']}") as ws:
        seen.append(await next_update(ws))
        await feed.update(user_id, "o1", S.ORDER_STATUS_FULFILLED, 4)
        await feed.update(user_id, "o1", S.ORDER_STATUS_SHIPPED, 5)
        seen += [await next_update(ws), await next_update(ws)]
        with pytest.raises(TimeoutError):
            await next_update(ws, within=0.8)
    assert [m["status"] for m in seen] == ["pending", "validated", "paid", "fulfilled", "shipped"]


async def test_upstream_unavailable_closes_with_its_code(bridge: Bridge) -> None:
    alice = person()
    bridge.feed.failing = True
    async with bridge.open(alice) as ws:
        code, _ = await close_code(ws)
    assert code == CloseCode.UPSTREAM_UNAVAILABLE


async def test_shutdown_closes_sockets_going_away(bridge: Bridge) -> None:
    alice = person()
    async with bridge.open(alice) as ws:
        await until_streaming(bridge, alice.user_id)
        bridge.gateway.stopping = True
        closing = asyncio.create_task(close_code(ws))
        server = ws  # the client side stays open until the server closes
        assert not closing.done()
        assert server.state.name == "OPEN"
    closing.cancel()


async def test_the_page_health_and_unknown_paths(bridge: Bridge) -> None:
    base = f"http://127.0.0.1:{bridge.port}"
    async with httpx.AsyncClient(base_url=base, trust_env=False) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        assert "<html" in page.text
        again = await http.get("/", headers={"If-None-Match": page.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        for path in ("/static/../settings.py", "/static/%2e%2e/app.py", "/static/.hidden", "/x"):
            assert (await http.get(path)).status_code == 404, path
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert set(health.json()) >= {"sockets", "watched_users", "subscriptions_streaming"}
