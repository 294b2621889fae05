"""Webhook delivery end to end: orders placed through the public port, deliveries POSTed by
the real sender to real local HTTP receivers, verified as receivers verify them.

Receivers listen on 127.0.77.1, the one private network the local stack allow-lists for
webhook targets (devstack.stack.LOCAL_WEBHOOK_NETWORK). The first test runs with the stack's
own sender. The others need retries measured in seconds rather than the default schedule
(15 attempts over 24 h): for them the stack's sender is stopped and a sender of the same
code, with fast retry settings, runs in its place (and is killed in one test); the stack's
own comes back at the end of the module.
"""

import contextlib
import hashlib
import hmac
import ipaddress
import json
import signal
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from ordermesh.webhook.v1 import webhook_pb2, webhook_pb2_grpc
from standardwebhooks import Webhook as StandardWebhook

from devstack import procs, stack
from devstack.paths import REPO_ROOT
from devstack.ports import Ports
from tests.e2e.conftest import User, order_body, register_and_login, wait_for_order

pytestmark = pytest.mark.e2e

RECEIVER_HOST = "127.0.77.1"
assert ipaddress.ip_address(RECEIVER_HOST) in ipaddress.ip_network(stack.LOCAL_WEBHOOK_NETWORK)
SHIPPED = "ORDER_STATUS_SHIPPED"

# The fast schedule of the module's own sender: three attempts, half a second apart at most.
FAST_SENDER = {
    "ORDERMESH_WEBHOOK_MAX_ATTEMPTS": "3",
    "ORDERMESH_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "ORDERMESH_WEBHOOK_RETRY_MIN_SPAN_SECONDS": "0",
    "ORDERMESH_WEBHOOK_TIMEOUT_SECONDS": "3",
    "ORDERMESH_WEBHOOK_CONNECT_TIMEOUT_SECONDS": "1",
    "ORDERMESH_WEBHOOK_LEASE_SECONDS": "5",
    "ORDERMESH_WEBHOOK_POLL_SECONDS": "0.5",
}


def verify_webhook(payload: str, signature: str, secret: str) -> bool:
    """The original README's verification function, word for word."""
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", signature)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def id(self) -> str:
        return self.headers["x-webhook-id"]

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


Answer = tuple[int, dict[str, str], bytes]
Behaviour = Callable[[Request, int], Answer]


def ok(request: Request, seen: int) -> Answer:
    return 200, {}, b"thanks"


@dataclass
class Receiver:
    """A real HTTP server; each path answers with its behaviour, given the request and how
    many times its X-Webhook-Id was seen before."""

    host: str = RECEIVER_HOST
    port: int = 0
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def at(self, path: str) -> list[Request]:
        with self.lock:
            return [request for request in self.requests if request.path == path]

    def wait(self, path: str, count: int, timeout: float = 30.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.at(path)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.at(path))} requests, expected {count}")

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        request = Request(
            handler.path,
            {name.lower(): value for name, value in handler.headers.items()},
            body,
            time.time(),
        )
        with self.lock:
            self.requests.append(request)
            seen = self._seen[f"{request.path} {request.headers.get('x-webhook-id')}"]
            self._seen[f"{request.path} {request.headers.get('x-webhook-id')}"] += 1
            self.in_flight += 1
        try:
            status, headers, answer = self.behaviours.get(request.path, ok)(request, seen)
        finally:
            with self.lock:
                self.in_flight -= 1
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)


@contextlib.contextmanager
def serving(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver.handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((receiver.host, receiver.port), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving(Receiver()) as served:
        yield served


def register(
    http: httpx.Client, user: User, url: str, events: list[str] | None = None
) -> dict[str, Any]:
    created = http.post(
        "/api/v1/webhooks", json={"url": url, "events": events or ["*"]}, headers=user.headers
    )
    assert created.status_code == 200, created.text
    webhook: dict[str, Any] = created.json()
    assert webhook["secret"].startswith("whsec_")
    return webhook


def deliveries(http: httpx.Client, user: User, webhook_id: str) -> list[dict[str, Any]]:
    """Every delivery of the webhook, newest first, following the pages."""
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        page = http.get(
            f"/api/v1/webhooks/{webhook_id}/deliveries",
            params={"page_size": 10, "page_token": token},
            headers=user.headers,
        )
        assert page.status_code == 200, page.text
        found.extend(page.json().get("deliveries", []))
        token = page.json().get("next_page_token", "")
        if not token:
            return found


def wait_for_deliveries(
    http: httpx.Client,
    user: User,
    webhook_id: str,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = deliveries(http, user, webhook_id)
        if done(found):
            return found
        time.sleep(0.2)
    raise AssertionError(f"deliveries did not settle: {json.dumps(found, indent=1)[:3000]}")


def states(found: list[dict[str, Any]]) -> list[str]:
    return [delivery["state"].removeprefix("DELIVERY_STATE_") for delivery in found]


def assert_signed(request: Request, secret: str) -> None:
    """Verified as receivers verify: the original function over the raw body, and a
    Standard Webhooks library (which also rejects a stale timestamp)."""
    assert verify_webhook(request.body.decode(), request.headers["x-webhook-signature"], secret)
    StandardWebhook(secret).verify(request.body, request.headers)
    assert request.event["id"] == request.id == request.headers["webhook-id"]


def place_order(http: httpx.Client, user: User, **overrides: object) -> str:
    created = http.post("/api/v1/orders", json=order_body(**overrides), headers=user.headers)
    assert created.status_code == 200, created.text
    order_id: str = created.json()["order_id"]
    return order_id


# --- with the stack's own sender --------------------------------------------------------------


def test_an_orders_lifecycle_reaches_each_subscriber_once_per_event_in_order(
    http: httpx.Client, user: User, admin: User, receiver: Receiver
) -> None:
    everything = register(http, user, receiver.url("/all"))
    some = register(
        http, user, receiver.url("/some"), ["order.created", "order.shipped", "order.delivered"]
    )
    stranger = register_and_login(http)
    register(http, stranger, receiver.url("/stranger"))

    order_id = place_order(http, user)
    wait_for_order(http, user, order_id, lambda order: order["status"] == SHIPPED)
    delivered = http.patch(
        f"/api/v1/orders/{order_id}", json={"status": "DELIVERED"}, headers=admin.headers
    )
    assert delivered.status_code == 200, delivered.text
    declined = place_order(http, user, payment_method="tok_chargeDeclined")

    lifecycle = ["created", "validated", "paid", "fulfilled", "shipped", "delivered"]
    all_requests = receiver.wait("/all", len(lifecycle) + 3)
    by_order: dict[str, list[Request]] = defaultdict(list)
    for request in all_requests:
        by_order[request.event["data"]["order_id"]].append(request)
    assert [r.event["type"] for r in by_order[order_id]] == [f"order.{s}" for s in lifecycle]
    assert [r.event["data"]["status"] for r in by_order[order_id]] == ["pending", *lifecycle[1:]]
    assert [r.event["type"] for r in by_order[declined]] == [
        "order.created",
        "order.validated",
        "order.failed",
    ]
    some_requests = receiver.wait("/some", 4)
    assert [(r.event["data"]["order_id"], r.event["type"]) for r in some_requests] == [
        (order_id, "order.created"),
        (order_id, "order.shipped"),
        (order_id, "order.delivered"),
        (declined, "order.created"),
    ]
    for request in all_requests:
        assert_signed(request, everything["secret"])
        assert request.headers["x-webhook-attempt"] == "1"
        assert request.headers["content-type"] == "application/json"
    for request in some_requests:
        assert_signed(request, some["secret"])
    shipped = by_order[order_id][4].event["data"]
    assert shipped["total_amount"]["amount_minor"] == str(2 * 2499)
    assert shipped["tracking_number"] and shipped["carrier"]
    assert by_order[declined][-1].event["data"]["reason"]
    assert len({r.id for r in all_requests}) == len(all_requests), "one id per delivery"
    time.sleep(0.5)
    assert receiver.at("/stranger") == [], "another user's orders never reach their webhooks"
    assert len(receiver.at("/all")) == len(lifecycle) + 3, "each event once"

    logged = deliveries(http, user, everything["webhook_id"])
    assert sorted(d["delivery_id"] for d in logged) == sorted(r.id for r in all_requests)
    assert [d["event_type"] for d in logged if d["order_id"] == order_id] == [
        f"order.{s}" for s in reversed(lifecycle)
    ], "newest first"
    for delivery in logged:
        assert states([delivery]) == ["SUCCEEDED"]
        [attempt] = delivery["attempts"]
        assert attempt["number"] == 1 and attempt["status_code"] == 200
        assert attempt["response_excerpt"] == "thanks"


# --- with a fast sender in place of the stack's ------------------------------------------------


@dataclass
class Senders:
    """The module's own sender processes, named as worker replicas so `ordermesh down` stops
    one a crashed test run left behind."""

    started: list[str] = field(default_factory=list)

    def start(self) -> str:
        name = stack.replica_name("webhook_sender", 7 + len(self.started) % 2)
        env = stack.app_env(Ports.from_env()) | FAST_SENDER
        procs.start_daemon(
            name,
            [
                str(REPO_ROOT / ".venv/bin/python"),
                "-m",
                "workers",
                "--components",
                "webhook_sender",
            ],
            env=env,
            cwd=REPO_ROOT,
        )
        self.started.append(name)
        return name


@pytest.fixture(scope="module")
def fast_sender() -> Iterator[Senders]:
    procs.stop("webhook-sender")
    senders = Senders()
    try:
        senders.start()
        yield senders
    finally:
        for name in set(senders.started):
            procs.stop(name)
        stack.start_app("webhook-sender")


def test_a_receiver_failing_twice_gets_the_delivery_on_the_third_attempt(
    http: httpx.Client, user: User, receiver: Receiver, fast_sender: Senders
) -> None:
    receiver.behaviours["/flaky"] = lambda request, seen: (
        (503, {}, b"busy") if seen < 2 else (200, {}, b"ok")
    )
    webhook = register(http, user, receiver.url("/flaky"), ["order.created"])
    place_order(http, user)
    requests = receiver.wait("/flaky", 3)
    assert len({request.id for request in requests}) == 1
    assert [request.headers["x-webhook-attempt"] for request in requests] == ["1", "2", "3"]
    assert len({request.body for request in requests}) == 1, "the same bytes every attempt"
    for request in requests:
        assert_signed(request, webhook["secret"])
    [delivery] = wait_for_deliveries(
        http, user, webhook["webhook_id"], lambda found: states(found) == ["SUCCEEDED"]
    )
    assert [
        (a["number"], a["status_code"], a["response_excerpt"]) for a in delivery["attempts"]
    ] == [
        (3, 200, "ok"),
        (2, 503, "busy"),
        (1, 503, "busy"),
    ]
    assert all(a["latency_ms"] >= 0 and a["started_at"] for a in delivery["attempts"])
    assert delivery["attempts"][1]["error"] == "HTTP 503"
    time.sleep(1)
    assert len(receiver.at("/flaky")) == 3


def test_an_always_failing_receiver_ends_parked_and_replay_delivers_it_once_recovered(
    http: httpx.Client, user: User, receiver: Receiver, fast_sender: Senders
) -> None:
    down = {"yes": True}
    receiver.behaviours["/down"] = lambda request, seen: (
        (500, {}, b"down") if down["yes"] else (204, {}, b"")
    )
    webhook = register(http, user, receiver.url("/down"), ["order.created"])
    hook_id = webhook["webhook_id"]
    place_order(http, user)
    [parked] = wait_for_deliveries(http, user, hook_id, lambda f: states(f) == ["PARKED"])
    assert [a["number"] for a in parked["attempts"]] == [3, 2, 1]
    assert parked["last_error"] == "gave up after 3 attempts; last: HTTP 500"
    health = http.get(f"/api/v1/webhooks/{hook_id}", headers=user.headers).json()
    assert (health["parked_deliveries"], health["consecutive_failures"]) == (1, 3)
    [summary, *_] = stack.webhook_lines()  # what `ordermesh status` shows an operator
    assert "parked" in summary and " 0 parked" not in summary, summary

    down["yes"] = False
    replayed = http.post(
        f"/api/v1/webhooks/{hook_id}/deliveries/{parked['delivery_id']}/replay",
        json={},
        headers=user.headers,
    )
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["state"] == "DELIVERY_STATE_PENDING"
    [done] = wait_for_deliveries(http, user, hook_id, lambda f: states(f) == ["SUCCEEDED"])
    assert (done["attempts"][0]["number"], done["attempts"][0]["status_code"]) == (4, 204)
    assert len(receiver.at("/down")) == 4
    again = http.post(
        f"/api/v1/webhooks/{hook_id}/deliveries/{parked['delivery_id']}/replay",
        json={},
        headers=user.headers,
    )
    assert again.status_code == 200, "a succeeded delivery can be sent again"
    wait_for_deliveries(http, user, hook_id, lambda f: states(f) == ["SUCCEEDED"])
    assert len({request.id for request in receiver.wait("/down", 5)}) == 1

    # In bulk: two more parked while the receiver is down, replayed with one call.
    down["yes"] = True
    place_order(http, user)
    place_order(http, user)
    wait_for_deliveries(
        http, user, hook_id, lambda f: states(f) == ["PARKED", "PARKED", "SUCCEEDED"]
    )
    down["yes"] = False
    bulk = http.post(f"/api/v1/webhooks/{hook_id}/deliveries/replay", json={}, headers=user.headers)
    assert bulk.status_code == 200, bulk.text
    assert bulk.json()["replayed"] == 2
    wait_for_deliveries(http, user, hook_id, lambda f: states(f) == ["SUCCEEDED"] * 3)
    health = http.get(f"/api/v1/webhooks/{hook_id}", headers=user.headers).json()
    assert (health["parked_deliveries"], health["consecutive_failures"]) == (0, 0)


def test_retry_after_is_honoured(
    http: httpx.Client, user: User, receiver: Receiver, fast_sender: Senders
) -> None:
    receiver.behaviours["/later"] = lambda request, seen: (
        (429, {"Retry-After": "2"}, b"slow down") if seen == 0 else (200, {}, b"ok")
    )
    webhook = register(http, user, receiver.url("/later"), ["order.created"])
    place_order(http, user)
    first, second = receiver.wait("/later", 2)
    # Without Retry-After the fast schedule retries within half a second.
    assert second.at - first.at >= 2.0, second.at - first.at
    assert second.at - first.at < 4.0
    [delivery] = wait_for_deliveries(
        http, user, webhook["webhook_id"], lambda f: states(f) == ["SUCCEEDED"]
    )
    assert [a["status_code"] for a in delivery["attempts"]] == [200, 429]


def test_killing_the_sender_mid_retry_loses_nothing(
    http: httpx.Client, user: User, receiver: Receiver, fast_sender: Senders
) -> None:
    accepted: Counter[str] = Counter()

    def first_fails_then_slow(request: Request, seen: int) -> Answer:
        if seen == 0:
            return 503, {}, b"retry me"
        time.sleep(1.0)  # the retry is in flight for a while: the kill lands in it
        with receiver.lock:
            accepted[request.id] += 1
            duplicate = accepted[request.id] > 1
        return 200, {}, b"duplicate, ignored" if duplicate else b"accepted"

    receiver.behaviours["/dedupe"] = first_fails_then_slow
    webhook = register(http, user, receiver.url("/dedupe"))
    orders = [place_order(http, user) for _ in range(4)]
    for order_id in orders:
        wait_for_order(http, user, order_id, lambda order: order["status"] == SHIPPED)
    expected = 4 * 5  # created, validated, paid, fulfilled, shipped

    deadline = time.monotonic() + 30
    while receiver.in_flight == 0 or len(accepted) < 3:
        assert time.monotonic() < deadline, "no retry was ever in flight"
        time.sleep(0.02)
    procs.stop(fast_sender.started[-1], sig=signal.SIGKILL)
    killed_at = len(accepted)
    fast_sender.start()

    found = wait_for_deliveries(
        http,
        user,
        webhook["webhook_id"],
        lambda f: len(f) == expected and set(states(f)) == {"SUCCEEDED"},
        timeout=90,
    )
    assert killed_at < expected, "the kill came too late to interrupt anything"
    # The attempt in flight at the kill reached the receiver, but its sender died before
    # recording it: it was sent again when its lease ran out, with the same id.
    assert sum(accepted.values()) > len(accepted), "no attempt was interrupted"
    assert set(accepted) == {delivery["delivery_id"] for delivery in found}
    ids = {request.id for request in receiver.at("/dedupe")}
    assert ids == set(accepted), "every id the receiver saw was accepted in the end"
    # Per order, the receiver accepted the events in their order.
    firsts: dict[str, list[str]] = defaultdict(list)
    for request in receiver.at("/dedupe"):
        if request.id not in firsts[request.event["data"]["order_id"]]:
            firsts[request.event["data"]["order_id"]].append(request.id)
    for order_id in orders:
        types = [
            next(r.event["type"] for r in receiver.at("/dedupe") if r.id == delivery_id)
            for delivery_id in firsts[order_id]
        ]
        assert types == [
            "order.created",
            "order.validated",
            "order.paid",
            "order.fulfilled",
            "order.shipped",
        ]


# --- registration and the address check ------------------------------------------------------


@pytest.fixture
def hosts_file() -> Iterator[Callable[[str, str], None]]:
    """Names the stack's resolver answers (ORDERMESH_WEBHOOK_HOSTS_FILE of the local stack),
    so a test decides what a name resolves to, and when."""
    path = Path(stack.app_env(Ports.from_env())["ORDERMESH_WEBHOOK_HOSTS_FILE"])
    mine: dict[str, str] = {}

    def write() -> None:
        kept = [
            line
            for line in (path.read_text().splitlines() if path.exists() else [])
            if len(line.split()) < 2 or line.split()[1] not in mine
        ]
        path.write_text("\n".join([*kept, *(f"{a} {n}" for n, a in mine.items())]) + "\n")

    def resolve(name: str, address: str) -> None:
        mine[name] = address
        write()
        time.sleep(0.02)  # a new modification time, even on a coarse clock

    yield resolve
    names = set(mine)
    mine.clear()
    if path.exists():
        path.write_text(
            "".join(
                f"{line}\n"
                for line in path.read_text().splitlines()
                if len(line.split()) < 2 or line.split()[1] not in names
            )
        )


def test_private_targets_are_refused_at_registration(
    http: httpx.Client,
    user: User,
    hosts_file: Callable[[str, str], None],
    channel: grpc.aio.Channel,
) -> None:
    loopback_name = f"loopback-{uuid.uuid4().hex[:8]}.test"
    hosts_file(loopback_name, "127.0.0.1")
    refused = [
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[64:ff9b::10.0.0.1]/hook",  # NAT64 of a private address
        "http://[64:ff9b::127.0.0.1]/hook",
        "http://[64:ff9b:1::a00:1]/hook",  # the local-use NAT64 prefix
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
        "http://100.64.0.1/hook",  # CGNAT
        "http://224.0.0.1/hook",  # multicast
        "http://localhost/hook",
        f"http://{loopback_name}/hook",
        f"HTTP://{loopback_name.upper()}:80/hook",
    ]
    for url in refused:
        answer = http.post(
            "/api/v1/webhooks", json={"url": url, "events": ["*"]}, headers=user.headers
        )
        assert answer.status_code == 400, (url, answer.text)
        assert "non-public addresses" in answer.json()["message"], answer.text
    for url in ["ftp://example.com/x", "http://user:pw@example.com/", "http://exa mple.com/"]:
        answer = http.post(
            "/api/v1/webhooks", json={"url": url, "events": ["*"]}, headers=user.headers
        )
        assert answer.status_code == 400, (url, answer.text)
    assert http.get("/api/v1/webhooks", headers=user.headers).json().get("webhooks", []) == []


async def test_registration_refuses_private_targets_over_native_grpc_too(
    user: User, channel: grpc.aio.Channel
) -> None:
    stub = webhook_pb2_grpc.WebhookServiceStub(channel)
    for url in ["http://127.0.0.1/hook", "http://[64:ff9b::192.168.0.1]/"]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RegisterWebhook(
                webhook_pb2.RegisterWebhookRequest(url=url, events=["*"]),
                metadata=user.grpc_metadata,
            )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "non-public addresses" in (refused.value.details() or "")


def test_urls_are_stored_normalised(http: httpx.Client, user: User, receiver: Receiver) -> None:
    webhook = register(http, user, f"HTTP://{RECEIVER_HOST}:{receiver.port}#fragment")
    assert webhook["url"] == f"http://{RECEIVER_HOST}:{receiver.port}/"


def _free_port_on_both(hosts: tuple[str, str]) -> tuple[socket.socket, socket.socket]:
    for _ in range(50):
        first = socket.socket()
        first.bind((hosts[0], 0))
        second = socket.socket()
        try:
            second.bind((hosts[1], first.getsockname()[1]))
        except OSError:
            first.close()
            second.close()
            continue
        return first, second
    raise AssertionError("no port free on both addresses")


def test_a_host_rebound_to_loopback_is_refused_at_send_time(
    http: httpx.Client,
    user: User,
    hosts_file: Callable[[str, str], None],
    fast_sender: Senders,
) -> None:
    name = f"rebind-{uuid.uuid4().hex[:8]}.test"
    first, second = _free_port_on_both((RECEIVER_HOST, "127.0.0.1"))
    port = first.getsockname()[1]
    first.close()
    second.close()
    with (
        serving(Receiver(RECEIVER_HOST, port)) as allowed,
        serving(Receiver("127.0.0.1", port)) as loopback,
    ):
        hosts_file(name, "93.184.215.14")  # public at registration
        webhook = register(http, user, f"http://{name}:{port}/hook")
        hook_id = webhook["webhook_id"]

        hosts_file(name, RECEIVER_HOST)  # the allow-listed receiver: the name is what is sent to
        test = http.post(f"/api/v1/webhooks/{hook_id}/test", json={}, headers=user.headers)
        assert test.status_code == 200, test.text
        [request] = allowed.wait("/hook", 1)
        assert request.event["type"] == "webhook.test"
        assert request.headers["host"] == f"{name}:{port}"
        assert_signed(request, webhook["secret"])

        hosts_file(name, "127.0.0.1")  # rebound to loopback
        test = http.post(f"/api/v1/webhooks/{hook_id}/test", json={}, headers=user.headers)
        assert test.status_code == 200, test.text
        refused_id = test.json()["delivery_id"]
        found = wait_for_deliveries(
            http, user, hook_id, lambda f: states(f) == ["FAILED", "SUCCEEDED"]
        )
        assert found[0]["delivery_id"] == refused_id
        [attempt] = found[0]["attempts"]
        assert attempt["status_code"] == 0
        assert attempt["error"].startswith("refused: host"), attempt
        assert "127.0.0.1" in attempt["error"]
        assert loopback.requests == [], "nothing was sent to the loopback address"


def test_a_rotated_secret_signs_beside_the_old_one_during_the_grace_period(
    http: httpx.Client, user: User, receiver: Receiver, fast_sender: Senders
) -> None:
    webhook = register(http, user, receiver.url("/rotating"))
    hook_id = webhook["webhook_id"]
    rotated = http.post(f"/api/v1/webhooks/{hook_id}/rotate-secret", json={}, headers=user.headers)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != webhook["secret"]
    assert rotated.json()["previous_secret_expires_at"]
    shown = http.get(f"/api/v1/webhooks/{hook_id}", headers=user.headers).json()
    assert shown["secret"] == "", "a secret is shown once"

    http.post(f"/api/v1/webhooks/{hook_id}/test", json={}, headers=user.headers)
    [request] = receiver.wait("/rotating", 1)
    assert_signed(request, new_secret)
    StandardWebhook(webhook["secret"]).verify(request.body, request.headers)
    assert verify_webhook(
        request.body.decode(), request.headers["x-webhook-signature-previous"], webhook["secret"]
    )

    final = http.post(
        f"/api/v1/webhooks/{hook_id}/rotate-secret",
        json={"grace_period_seconds": 0},
        headers=user.headers,
    )
    assert final.status_code == 200, final.text
    last_secret = final.json()["secret"]
    http.post(f"/api/v1/webhooks/{hook_id}/test", json={}, headers=user.headers)
    _, request = receiver.wait("/rotating", 2)
    assert_signed(request, last_secret)
    assert "x-webhook-signature-previous" not in request.headers
    with pytest.raises(Exception, match="No matching signature"):
        StandardWebhook(new_secret).verify(request.body, request.headers)


def test_another_users_webhook_is_not_found_over_rest_and_grpc(
    http: httpx.Client, user: User, other_user: User, receiver: Receiver
) -> None:
    webhook = register(http, user, receiver.url("/mine"))
    hook_id = webhook["webhook_id"]
    delivery_id = str(uuid.uuid4())
    for method, path in [
        ("GET", f"/api/v1/webhooks/{hook_id}"),
        ("GET", f"/api/v1/webhooks/{hook_id}/deliveries"),
        ("POST", f"/api/v1/webhooks/{hook_id}/test"),
        ("POST", f"/api/v1/webhooks/{hook_id}/rotate-secret"),
        ("POST", f"/api/v1/webhooks/{hook_id}/enable"),
        ("POST", f"/api/v1/webhooks/{hook_id}/deliveries/replay"),
        ("POST", f"/api/v1/webhooks/{hook_id}/deliveries/{delivery_id}/replay"),
        ("DELETE", f"/api/v1/webhooks/{hook_id}"),
    ]:
        answer = http.request(
            method, path, json={} if method == "POST" else None, headers=other_user.headers
        )
        assert answer.status_code == 404, (method, path, answer.text)
    bad = http.get(
        f"/api/v1/webhooks/{hook_id}/deliveries",
        params={"page_token": "forged"},
        headers=user.headers,
    )
    assert bad.status_code == 400 and "page_token" in bad.text, bad.text
    assert receiver.requests == [], "nothing was sent on another user's request"
    assert http.get(f"/api/v1/webhooks/{hook_id}", headers=user.headers).status_code == 200


async def test_another_users_webhook_is_not_found_over_native_grpc(
    user: User, other_user: User, channel: grpc.aio.Channel
) -> None:
    stub = webhook_pb2_grpc.WebhookServiceStub(channel)
    created = await stub.RegisterWebhook(
        webhook_pb2.RegisterWebhookRequest(url="https://93.184.215.14/hook", events=["*"]),
        metadata=user.grpc_metadata,
    )
    hook_id = created.webhook.webhook_id
    requests: list[tuple[str, Any]] = [
        ("GetWebhook", webhook_pb2.GetWebhookRequest(webhook_id=hook_id)),
        ("SendTestEvent", webhook_pb2.SendTestEventRequest(webhook_id=hook_id)),
        ("ListDeliveries", webhook_pb2.ListDeliveriesRequest(webhook_id=hook_id)),
        ("RotateWebhookSecret", webhook_pb2.RotateWebhookSecretRequest(webhook_id=hook_id)),
        ("DeleteWebhook", webhook_pb2.DeleteWebhookRequest(webhook_id=hook_id)),
    ]
    for method, request in requests:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await getattr(stub, method)(request, metadata=other_user.grpc_metadata)
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND, method
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.ListDeliveries(
            webhook_pb2.ListDeliveriesRequest(webhook_id=hook_id, page_size=1000),
            metadata=user.grpc_metadata,
        )
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    await stub.DeleteWebhook(
        webhook_pb2.DeleteWebhookRequest(webhook_id=hook_id), metadata=user.grpc_metadata
    )
