"""grpc-web through the public port, spoken by the grpc-web runtime itself (npm `grpc-web`,
driven from Node by tests/e2e/grpcweb/client.js): unary calls in text and binary mode, an
authenticated order, errors as grpc-web status codes, and WatchOrders as a server stream
read while it arrives."""

import asyncio
import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest

from devstack.paths import REPO_ROOT
from tests.e2e.conftest import STOCKED, STOCKED_PRICE_MINOR, User, order_body
from tests.e2e.test_watch_orders import HAPPY, create_order

pytestmark = pytest.mark.e2e

CLIENT = REPO_ROOT / "tests" / "e2e" / "grpcweb" / "client.js"
ORDER_SERVICE = "ordermesh.order.v1.OrderService"
MODES = ("grpcwebtext", "grpcweb")
CALL_SECONDS = 30


@dataclass
class Answer:
    """What one grpc-web call got: its messages and its final status."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    code: grpc.StatusCode | None = None
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def take(self, line: str) -> None:
        parsed = json.loads(line)
        if "message" in parsed:
            self.messages.append(parsed["message"])
        else:
            status = parsed["status"]
            [self.code] = [c for c in grpc.StatusCode if c.value[0] == status["code"]]
            self.message, self.headers = status["message"], status["headers"]


@pytest.fixture(scope="session")
def node() -> str:
    found = shutil.which("node")
    if found is None or not (REPO_ROOT / "node_modules" / "grpc-web").is_dir():
        pytest.fail("grpc-web tests need Node.js and the npm packages: run `make tools`")
    return found


def argv(node: str, base_url: str, method: str, mode: str, token: str | None) -> list[str]:
    args = [node, str(CLIENT), "--base-url", base_url, "--method", method, "--mode", mode]
    if token is not None:
        args += ["--metadata", f"authorization=Bearer {token}"]
    return args


def call(
    node: str,
    base_url: str,
    method: str,
    request: dict[str, Any],
    *,
    mode: str = "grpcwebtext",
    token: str | None = None,
    metadata: tuple[str, ...] = (),
) -> Answer:
    args = argv(node, base_url, method, mode, token)
    args += [arg for pair in metadata for arg in ("--metadata", pair)]
    done = subprocess.run(
        [*args, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=CALL_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = Answer()
    for line in done.stdout.splitlines():
        answer.take(line)
    assert answer.code is not None, done.stdout
    return answer


@pytest.mark.parametrize("mode", MODES)
def test_the_catalog_in_both_modes(node: str, base_url: str, mode: str) -> None:
    answer = call(
        node,
        base_url,
        "ordermesh.inventory.v1.InventoryService/ListProducts",
        {"page_size": 5},
        mode=mode,
    )

    assert answer.code is grpc.StatusCode.OK, answer.message
    [page] = answer.messages
    assert page["page_size"] == 5 and page["total"] >= len(page["products"]) > 0
    for product in page["products"]:
        assert product["product_id"] and product["active"]
        assert product["unit_price"]["currency"] == "USD"
        assert int(product["unit_price"]["amount_minor"]) > 0


def test_an_order_created_in_binary_mode_is_read_back_in_text_mode(
    node: str, base_url: str, user: User
) -> None:
    request = {"items": [{"product_id": STOCKED, "quantity": 2}], **order_fields()}
    created = call(
        node,
        base_url,
        f"{ORDER_SERVICE}/CreateOrder",
        request,
        mode="grpcweb",
        token=user.access_token,
        metadata=(f"idempotency-key={uuid.uuid4().hex}",),
    )
    assert created.code is grpc.StatusCode.OK, created.message
    order = created.messages[0]["order"]
    assert order["user_id"] == user.user_id
    assert order["total_amount"]["amount_minor"] == str(2 * STOCKED_PRICE_MINOR)
    assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [(STOCKED, 2)]

    read = call(
        node,
        base_url,
        f"{ORDER_SERVICE}/GetOrder",
        {"order_id": order["order_id"]},
        mode="grpcwebtext",
        token=user.access_token,
    )
    assert read.code is grpc.StatusCode.OK, read.message
    assert read.messages[0]["order"]["order_id"] == order["order_id"]
    assert read.messages[0]["order"]["total_amount"] == order["total_amount"]


def test_errors_arrive_as_grpc_web_status_codes(node: str, base_url: str, user: User) -> None:
    bad_quantity = {"items": [{"product_id": STOCKED, "quantity": 0}], **order_fields()}
    refused = call(
        node, base_url, f"{ORDER_SERVICE}/CreateOrder", bad_quantity, token=user.access_token
    )
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "quantity" in refused.message

    unknown = call(
        node,
        base_url,
        f"{ORDER_SERVICE}/GetOrder",
        {"order_id": str(uuid.uuid4())},
        mode="grpcweb",
        token=user.access_token,
    )
    assert unknown.code is grpc.StatusCode.NOT_FOUND
    assert "not found" in unknown.message

    # Without a token Envoy's jwt_authn answers itself; the edge makes that a trailers-only
    # 200 with grpc-status 16, so the runtime reads the status and message, not an HTTP 401.
    anonymous = call(node, base_url, f"{ORDER_SERVICE}/GetOrder", {"order_id": "any"})
    assert anonymous.code is grpc.StatusCode.UNAUTHENTICATED
    assert anonymous.message == "unauthenticated: a valid bearer token is required"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")


@dataclass
class Stream:
    """A WatchOrders stream in a Node process, its lines read as they arrive."""

    process: asyncio.subprocess.Process
    answer: Answer = field(default_factory=Answer)

    async def next_message(self, within: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), within)
        assert line, f"the stream ended: {self.answer}"
        self.answer.take(line.decode())
        assert self.answer.code is None, f"the stream ended: {self.answer}"
        return self.answer.messages[-1]

    def statuses(self, order_id: str) -> list[str]:
        return [
            m["status"].removeprefix("ORDER_STATUS_")
            for m in self.answer.messages
            if m["order_id"] == order_id and not m["heartbeat"]
        ]


@contextlib.asynccontextmanager
async def watching(node: str, base_url: str, user: User) -> AsyncIterator[Stream]:
    process = await asyncio.create_subprocess_exec(
        *argv(node, base_url, f"{ORDER_SERVICE}/WatchOrders", "grpcwebtext", user.access_token),
        "{}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    stream = Stream(process)
    try:
        yield stream
    finally:
        assert process.stdin is not None
        process.stdin.close()
        assert process.stdout is not None
        rest = await asyncio.wait_for(process.stdout.read(), CALL_SECONDS)
        for line in rest.decode().splitlines():
            stream.answer.take(line)
        await process.wait()


async def test_watch_orders_streams_every_status_once_in_order(
    node: str, base_url: str, http: httpx.Client, user: User
) -> None:
    async with watching(node, base_url, user) as stream:
        # A new user's snapshot is empty: the first message is the heartbeat that says the
        # stream is live.
        first = await stream.next_message(within=15)
        assert first["heartbeat"] and first["cursor"]
        order_id = create_order(http, user)
        while "SHIPPED" not in stream.statuses(order_id):
            await stream.next_message(within=60)
        # Anything repeated would come now; only heartbeats may.
        with contextlib.suppress(TimeoutError):
            while True:
                await stream.next_message(within=0.5)

    assert stream.statuses(order_id) == HAPPY
    mine = [m for m in stream.answer.messages if m["order_id"] == order_id]
    assert [m["version"] for m in mine] == sorted({m["version"] for m in mine})
    assert len({m["cursor"] for m in mine}) == len(mine)
    assert mine[-1]["carrier"] and mine[-1]["tracking_number"]
    assert all(m["occurred_at"] and m["message"] for m in mine)
    # Closing standard input cancelled the call; the server never ended it.
    assert stream.answer.code is grpc.StatusCode.CANCELLED, stream.answer


def order_fields() -> dict[str, Any]:
    """Everything of a valid order but its items, in proto field names."""
    body = order_body()
    return {"shipping_address": body["shipping_address"], "payment_method": body["payment_method"]}
