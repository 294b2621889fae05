"""Every bad input gets INVALID_ARGUMENT over gRPC and 400 over REST, naming what is wrong,
through the public port; nothing yields INTERNAL or a 5xx. The sweep covers every field of
every public request message: NUL characters, 1 MB strings, 10,000-element repeated fields,
deeply nested and oversized metadata, invalid UTF-8, and bytes that are no protobuf at all;
over REST also wrong JSON types and oversized bodies, paths and queries."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status
from ordermesh.auth.v1 import auth_pb2
from ordermesh.fulfillment.v1 import fulfillment_pb2
from ordermesh.inventory.v1 import inventory_pb2
from ordermesh.order.v1 import order_pb2
from ordermesh.payment.v1 import payment_pb2
from ordermesh.webhook.v1 import webhook_pb2

from services.platform.contexts import PUBLIC_SERVICE_NAMES
from services.platform.validation import JSON_MESSAGES
from tests.e2e.conftest import User

pytestmark = pytest.mark.e2e

MODULES = (auth_pb2, order_pb2, inventory_pb2, payment_pb2, fulfillment_pb2, webhook_pb2)
ONE_MB = 1_000_000


@dataclass(frozen=True)
class Case:
    method: MethodDescriptor
    field_path: str
    request: Message

    @property
    def id(self) -> str:
        return f"{self.method.name}:{self.field_path}"


def _methods() -> Iterator[MethodDescriptor]:
    assert len(MODULES) == len(PUBLIC_SERVICE_NAMES)
    pool = descriptor_pool.Default()
    for service in PUBLIC_SERVICE_NAMES:
        yield from pool.FindServiceByName(service).methods


def _bad_values(fd: FieldDescriptor) -> Iterator[tuple[str, Any]]:
    if fd.type == FieldDescriptor.TYPE_STRING:
        yield "nul", "bad\x00value"
        yield "1MB", "x" * ONE_MB


def _cases() -> Iterator[Case]:
    for method in _methods():
        request_type = message_factory.GetMessageClass(method.input_type)
        yield from _field_cases(method, request_type, method.input_type, ())


def _field_cases(
    method: MethodDescriptor,
    request_type: type[Message],
    descriptor: Descriptor,
    path: tuple[FieldDescriptor, ...],
) -> Iterator[Case]:
    for fd in descriptor.fields:
        where = (*path, fd)
        dotted = ".".join(f.name for f in where)
        nested = fd.message_type
        if fd.is_repeated:
            yield Case(method, f"{dotted}[10000]", _with(request_type, where, "many"))
        if nested is not None and nested.full_name in JSON_MESSAGES:
            yield Case(method, f"{dotted}(deep)", _with(request_type, where, "deep"))
            yield Case(method, f"{dotted}(1MB)", _with(request_type, where, "huge-json"))
        elif nested is not None and len(path) < 2:
            yield from _field_cases(method, request_type, nested, where)
        else:
            for label, value in _bad_values(fd):
                yield Case(method, f"{dotted}({label})", _with(request_type, where, value))


def _with(request_type: type[Message], where: tuple[FieldDescriptor, ...], value: Any) -> Message:
    request = request_type()
    target = request
    for fd in where[:-1]:
        container = getattr(target, fd.name)
        target = container.add() if fd.is_repeated else container
    last = where[-1]
    nested = last.message_type
    if value == "many":
        container = getattr(target, last.name)
        if nested is None:
            sample = "p" if last.type == FieldDescriptor.TYPE_STRING else 1
            container.extend([sample] * 10_000)
        else:
            for _ in range(10_000):
                container.add()
    elif value == "deep":
        deep: dict[str, Any] = {"leaf": 1}
        for _ in range(40):
            deep = {"n": deep}
        _set_json(getattr(target, last.name), nested, deep)
    elif value == "huge-json":
        _set_json(getattr(target, last.name), nested, {"blob": "x" * ONE_MB})
    elif last.is_repeated:
        getattr(target, last.name).append(value)
    else:
        setattr(target, last.name, value)
    return request


def _set_json(field: Message, nested: Descriptor | None, value: dict[str, Any]) -> None:
    assert nested is not None
    if nested.full_name == "google.protobuf.Struct":
        field.update(value)  # type: ignore[attr-defined]
    else:
        field.struct_value.update(value)  # type: ignore[attr-defined]


CASES = list(_cases())


def _call(channel: grpc.Channel, method: MethodDescriptor, request: bytes, user: User) -> Any:
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = user.grpc_metadata
    if method.server_streaming:
        stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            path, request_serializer=None, response_deserializer=None
        )
        return list(stream(request, metadata=metadata, timeout=30))
    unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        path, request_serializer=None, response_deserializer=None
    )
    return unary(request, metadata=metadata, timeout=30)


@pytest.fixture(scope="module")
def sync_channel(public_port: int) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{public_port}") as opened:
        yield opened


def _sweepable(descriptor: Descriptor) -> bool:
    """Whether a request has a field a client could make too long, too many or too deep
    (requests of numbers only, like paging, have nothing to sweep)."""
    return any(
        fd.is_repeated or fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE)
        for fd in descriptor.fields
    )


def test_the_sweep_covers_every_method_with_something_to_sweep() -> None:
    swept = {case.method.full_name for case in CASES}
    assert swept == {m.full_name for m in _methods() if _sweepable(m.input_type)}
    assert len(CASES) > 80


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_field_values_are_invalid_argument_over_grpc(
    sync_channel: grpc.Channel, user: User, case: Case
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _call(sync_channel, case.method, case.request.SerializeToString(), user)
    error = raised.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    details = error.details() or ""
    if case.field_path.endswith("(deep)"):
        # Deeper than the protobuf parser follows: refused before any field can be named.
        assert "nested deeper" in details, details
    else:
        # The field and its bound, or (for a request larger than its type can ever be) the
        # size and the bound of the whole message.
        field = case.field_path.split("(")[0].split("[")[0]
        assert field.split(".")[0] in details or re.search(r"at most \d+ bytes", details), details


@pytest.mark.parametrize(
    "payload",
    [
        # CancelOrderRequest{order_id: "x", reason: <0xff 0xfe>}: not UTF-8.
        b"\x0a\x01x\x12\x02\xff\xfe",
        # Not protobuf at all (a field tag with a truncated length).
        b"\x0a\xff\xff\xff\xff\x0f",
        b"\xff" * 64,
    ],
    ids=["invalid-utf8", "truncated", "garbage"],
)
def test_undecodable_requests_are_invalid_argument_over_grpc(
    sync_channel: grpc.Channel, user: User, payload: bytes
) -> None:
    method = order_pb2.DESCRIPTOR.services_by_name["OrderService"].methods_by_name["CancelOrder"]
    with pytest.raises(grpc.RpcError) as raised:
        _call(sync_channel, method, payload, user)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ordermesh.order.v1.CancelOrderRequest" in (raised.value.details() or "")


def test_a_two_mib_cancel_reason_is_invalid_argument_over_grpc(
    sync_channel: grpc.Channel, user: User
) -> None:
    stub = order_pb2_grpc_stub(sync_channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.CancelOrder(
            order_pb2.CancelOrderRequest(order_id="x", reason="r" * 2 * 1024 * 1024),
            metadata=user.grpc_metadata,
            timeout=30,
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "bytes are accepted" in (raised.value.details() or "")


def order_pb2_grpc_stub(channel: grpc.Channel) -> Any:
    from ordermesh.order.v1 import order_pb2_grpc

    return order_pb2_grpc.OrderServiceStub(channel)


def test_violations_are_listed_in_the_status_details(
    sync_channel: grpc.Channel, user: User
) -> None:
    stub = order_pb2_grpc_stub(sync_channel)
    request = order_pb2.CreateOrderRequest(payment_method="p" * 65)
    request.items.add(product_id="\x00", quantity=1)
    with pytest.raises(grpc.RpcError) as raised:
        stub.CreateOrder(request, metadata=user.grpc_metadata, timeout=30)
    status = rpc_status.from_call(raised.value)
    assert status is not None
    from google.rpc import error_details_pb2

    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert {v.field for v in bad_request.field_violations} == {
        "items[0].product_id",
        "payment_method",
    }


# --- REST ---------------------------------------------------------------------------------

NESTED: dict[str, Any] = {"leaf": 1}
for _ in range(40):
    NESTED = {"n": NESTED}

REST_BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/v1/auth/register", {"email": "a\u0000@example.com", "password": "x" * 9}),
    ("POST", "/api/v1/auth/register", {"email": "e@example.com", "password": "p" * ONE_MB}),
    ("POST", "/api/v1/auth/register", {"email": 5, "password": "password1"}),
    ("POST", "/api/v1/auth/login", {"email": "x" * ONE_MB, "password": "x"}),
    ("POST", "/api/v1/auth/login", {"email": ["a"], "password": "x"}),
    ("POST", "/api/v1/auth/refresh", {"refresh_token": "\u0000"}),
    ("POST", "/api/v1/auth/logout", {"refresh_token": {"a": 1}}),
    ("POST", "/api/v1/orders", {"items": [{"product_id": "p", "quantity": 1}] * 10_000}),
    ("POST", "/api/v1/orders", {"items": [{"product_id": "p\u0000", "quantity": 1}]}),
    ("POST", "/api/v1/orders", {"items": "all of them"}),
    ("POST", "/api/v1/orders", {"items": [{"product_id": "p", "quantity": "two"}]}),
    ("POST", "/api/v1/orders", {"items": [{"product_id": "p", "quantity": 1}], "metadata": NESTED}),
    ("POST", "/api/v1/orders", {"metadata": {"k\u0000": "v"}}),
    ("POST", "/api/v1/orders", {"shipping_address": {"street": "s" * ONE_MB}}),
    ("POST", "/api/v1/orders", {"payment_method": None, "total_amount": {"a": [1]}}),
    ("POST", "/api/v1/webhooks", {"url": "https://example.com", "events": ["e"] * 10_000}),
    ("POST", "/api/v1/webhooks", {"url": "https://example.com/\u0000"}),
    ("PATCH", "/api/v1/orders/00000000-0000-0000-0000-000000000000", {"metadata": NESTED}),
    ("PATCH", "/api/v1/orders/00000000-0000-0000-0000-000000000000", {"status": 7}),
]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    REST_BODIES,
    ids=[f"{m} {p} #{i}" for i, (m, p, _) in enumerate(REST_BODIES)],
)
def test_bad_rest_bodies_are_400_with_a_status_body(
    http: httpx.Client, user: User, method: str, path: str, body: dict[str, Any]
) -> None:
    response = http.request(method, path, json=body, headers=user.headers, timeout=30)
    assert response.status_code == 400, response.text[:500]
    assert response.json()["code"] == 3, response.text[:500]


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/orders?status=%00",
        "/api/v1/orders?user_id=" + "u" * 100,
        "/api/v1/orders/" + "o" * 100,
        "/api/v1/orders/x%00y",
        "/api/v1/products/" + "p" * 100,
    ],
)
def test_bad_rest_paths_and_queries_are_400(http: httpx.Client, user: User, target: str) -> None:
    response = http.get(target, headers=user.headers)
    assert response.status_code == 400, response.text[:500]
    assert response.json()["code"] == 3


def _raw_request(port: int, request: bytes) -> tuple[int, bytes]:
    """Send a request too large for any HTTP client library, reading the answer while it is
    still being sent (the edge answers, and closes, before reading all of it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:

        def send() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(request)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = b""
        while not _complete(received):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _complete(received: bytes) -> bool:
    head, separator, body = received.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def test_a_two_mib_cancel_reason_is_400_over_rest(public_port: int, user: User) -> None:
    reason = "r" * 2 * 1024 * 1024
    request = (
        f"DELETE /api/v1/orders/00000000-0000-0000-0000-000000000000?reason={reason} HTTP/1.1\r\n"
        f"Host: localhost\r\nAuthorization: Bearer {user.access_token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    status, body = _raw_request(public_port, request)
    assert status == 400
    assert json.loads(body)["code"] == 3


def test_a_two_mib_body_is_400_over_rest(public_port: int, user: User) -> None:
    body = json.dumps({"refresh_token": "r" * 2 * 1024 * 1024}).encode()
    request = (
        "POST /api/v1/auth/logout HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    status, reply = _raw_request(public_port, request)
    assert status == 400
    assert json.loads(reply)["code"] == 3
