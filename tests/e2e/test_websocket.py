"""The WebSocket bridge through the public port: every status of a new order in the original
format, in order, once; a socket killed mid-flow and resumed with its cursor; the per-user
socket limit across two bridge processes; each refusal with its own close code; an idle
socket Envoy does not cut."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from devstack.paths import REPO_ROOT
from devstack.ports import Ports
from devstack.stack import app_env
from gateway.closecodes import CloseCode
from tests.e2e.conftest import User, order_body
from tests.e2e.tokens import expired_token
from tests.ports import reserve_port

pytestmark = pytest.mark.e2e

HAPPY = ["pending", "validated", "paid", "fulfilled", "shipped"]


@dataclass
class Socket:
    """A bridge socket read in the background: the order updates, the heartbeats, the last
    cursor, and how it ended."""

    ws: ClientConnection
    updates: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: int = 0
    cursor: str = ""
    closed: tuple[int, str] | None = None
    task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                self.cursor = message.get("cursor") or self.cursor
                if message["type"] == "heartbeat":
                    self.heartbeats += 1
                elif message["type"] == "order.update":
                    self.updates.append(message)
        except ConnectionClosed:
            pass
        rcvd = self.ws.close_code
        self.closed = (rcvd if rcvd is not None else 1006, self.ws.close_reason or "")

    def statuses(self, order_id: str) -> list[str]:
        return [
            m["status"] for m in self.updates if m["order_id"] == order_id and not m.get("snapshot")
        ]

    async def until(self, done: Callable[[Socket], bool], within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while not done(self):
            if self.closed is not None and not done(self):
                raise AssertionError(f"socket closed {self.closed}; got {self.updates}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within}s; got {self.updates}")
            await asyncio.sleep(0.05)


def ws_url(port: int, user_id: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{port}/ws/orders/{user_id}{query}"


@contextlib.asynccontextmanager
async def socket(
    port: int,
    user: User,
    *,
    user_id: str | None = None,
    query: str = "",
    token: str | None = None,
    subprotocols: Sequence[str] | None = None,
    live: bool = True,
) -> AsyncIterator[Socket]:
    """A socket of ``user`` (bearer header unless ``subprotocols``); with ``live``, once the
    bridge said it is live (its first heartbeat: from then on nothing is missed)."""
    token = user.access_token if token is None else token
    headers = {} if subprotocols is not None else {"Authorization": f"Bearer {token}"}
    ws = await connect(
        ws_url(port, user_id or user.user_id, query),
        additional_headers=headers,
        subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
        open_timeout=10,
    )
    opened = Socket(ws)
    opened.task = asyncio.create_task(opened._read())
    try:
        if live:
            await opened.until(lambda s: s.heartbeats >= 1, within=30)
        yield opened
    finally:
        await ws.close()
        await opened.task


async def refusal(port: int, user: User, **options: Any) -> tuple[int, str]:
    async with socket(port, user, live=False, **options) as opened:
        await opened.until(lambda s: s.closed is not None, within=15)
    assert opened.closed is not None
    return opened.closed


def create_order(http: httpx.Client, user: User, **overrides: object) -> str:
    response = http.post("/api/v1/orders", json=order_body(**overrides), headers=user.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["order_id"])


def shipped(order_id: str) -> Callable[[Socket], bool]:
    return lambda s: "shipped" in s.statuses(order_id)


async def until_status(http: httpx.Client, user: User, order_id: str, status: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        response = http.get(f"/api/v1/orders/{order_id}", headers=user.headers)
        if response.json()["status"].removeprefix("ORDER_STATUS_") == status:
            return
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.2)


async def test_a_socket_sees_every_status_of_a_new_order_in_order_once(
    public_port: int, http: httpx.Client, user: User
) -> None:
    async with socket(public_port, user) as watcher:
        order_id = create_order(http, user)
        await watcher.until(shipped(order_id))
        await asyncio.sleep(0.5)  # anything repeated would arrive now
    assert watcher.statuses(order_id) == HAPPY
    mine = [m for m in watcher.updates if m["order_id"] == order_id]
    assert [m["version"] for m in mine] == sorted({m["version"] for m in mine})
    last = mine[-1]
    assert last["data"]["carrier"] and last["data"]["tracking_number"]
    assert last["data"]["estimated_delivery"]
    assert all(m["timestamp"] and m["message"] and m["cursor"] for m in mine)
    assert set(last) >= {"type", "order_id", "status", "message", "version", "timestamp", "data"}


@pytest.mark.parametrize("shared", [False, True], ids=["alone", "beside-a-live-socket"])
async def test_a_socket_killed_mid_flow_resumes_from_its_cursor(
    public_port: int, http: httpx.Client, user: User, shared: bool
) -> None:
    """Resumed alone (the bridge opens a new subscription) or while another socket of the
    user keeps the shared subscription open (the resumed socket catches up on its own
    stream, then is handed over to the shared one)."""
    async with contextlib.AsyncExitStack() as stack:
        anchor = await stack.enter_async_context(socket(public_port, user)) if shared else None
        async with socket(public_port, user) as first:
            order_id = create_order(http, user)
            await first.until(lambda s: len(s.statuses(order_id)) >= 2)
            first.ws.transport.abort()  # no close handshake: the connection just dies
            await first.until(lambda s: s.closed is not None)
        seen = first.statuses(order_id)
        cursor = [m["cursor"] for m in first.updates if m["order_id"] == order_id][-1]
        await until_status(http, user, order_id, "SHIPPED")
        async with socket(public_port, user, query=f"?cursor={cursor}") as second:
            await second.until(shipped(order_id))
            await asyncio.sleep(0.5)
        assert seen + second.statuses(order_id) == HAPPY, (first.updates, second.updates)
        assert not any(m.get("snapshot") for m in second.updates)
        if anchor is not None:
            await anchor.until(shipped(order_id))
            assert anchor.statuses(order_id) == HAPPY


@contextlib.contextmanager
def second_gateway() -> Iterator[int]:
    """Another bridge process beside the stack's, on a port of its own."""
    port = reserve_port()
    env = {**app_env(Ports.from_env()), "ORDERMESH_GATEWAY_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _healthy(port):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the second gateway did not start"
            time.sleep(0.2)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        finally:
            if process.stderr is not None:
                process.stderr.close()
    assert process.returncode == 0


def _healthy(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def test_the_sixth_socket_is_refused_across_two_bridge_processes(
    public_port: int, user: User
) -> None:
    with second_gateway() as other_port:
        async with contextlib.AsyncExitStack() as stack:
            first = [await stack.enter_async_context(socket(public_port, user)) for _ in range(3)]
            for _ in range(2):
                await stack.enter_async_context(socket(other_port, user))
            for port in (other_port, public_port):
                code, reason = await refusal(port, user)
                assert code == CloseCode.TOO_MANY_SOCKETS, reason
                assert "5" in reason
            await first[0].ws.close()
            await first[0].until(lambda s: s.closed is not None)
            async with socket(other_port, user) as admitted:
                assert admitted.closed is None


async def test_each_refusal_has_its_own_close_code(
    public_port: int, user: User, other_user: User
) -> None:
    expired = await expired_token(user)
    codes = {
        "missing": await refusal(public_port, user, subprotocols=[]),
        "bad": await refusal(public_port, user, token="not.a.token"),
        "expired": await refusal(public_port, user, token=expired),
        "another user": await refusal(public_port, user, user_id=other_user.user_id),
    }
    assert {name: code for name, (code, _) in codes.items()} == {
        "missing": CloseCode.MISSING_TOKEN,
        "bad": CloseCode.INVALID_TOKEN,
        "expired": CloseCode.TOKEN_EXPIRED,
        "another user": CloseCode.FORBIDDEN,
    }
    assert all(reason for _, reason in codes.values())


async def test_browsers_send_the_token_as_a_subprotocol_or_in_the_query(
    public_port: int, http: httpx.Client, user: User
) -> None:
    async with socket(public_port, user, subprotocols=["bearer", user.access_token]) as browser:
        assert browser.ws.subprotocol == "bearer"
        await browser.ws.send("ping")
        order_id = create_order(http, user)
        await browser.until(shipped(order_id))
    async with socket(public_port, user, subprotocols=[], query=f"?token={user.access_token}"):
        pass


async def test_an_admin_watches_another_users_socket_feed(
    public_port: int, http: httpx.Client, user: User, admin: User
) -> None:
    async with socket(public_port, admin, user_id=user.user_id) as watcher:
        order_id = create_order(http, user)
        await watcher.until(shipped(order_id))
    assert watcher.statuses(order_id) == HAPPY


@pytest.mark.slow
async def test_an_idle_socket_outlives_envoys_idle_timeouts(
    public_port: int, http: httpx.Client, user: User
) -> None:
    async with socket(public_port, user) as idle:
        await asyncio.sleep(130)
        assert idle.closed is None
        assert idle.heartbeats >= 1 + 130 // 30 - 1
        order_id = create_order(http, user)
        await idle.until(shipped(order_id))
