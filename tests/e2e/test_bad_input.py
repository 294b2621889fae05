"""Bad input at the edge gets the right HTTP/gRPC code and a clear message, never a 500."""

import base64
import json
import time
import uuid

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from ordermesh.order.v1 import order_pb2, order_pb2_grpc

from tests.e2e.conftest import STOCKED, User, order_body

pytestmark = pytest.mark.e2e


def _message(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    return str(body["message"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"items": []}, "at least one item"),
        (order_body(items=[]), "at least one item"),
        (order_body(items=[{"product_id": STOCKED, "quantity": 0}]), "between 1 and 100"),
        (order_body(items=[{"product_id": STOCKED, "quantity": 10000}]), "between 1 and 100"),
        (order_body(items=[{"product_id": "no-such-sku", "quantity": 1}]), "unknown product"),
        (order_body(items=[{"product_id": "webcam-07", "quantity": 1}]), "no longer sold"),
        (order_body(payment_method=""), "payment_method is required"),
        (order_body(shipping_address={"street": "x"}), "shipping_address.city is required"),
        (order_body(items=[{"product_id": STOCKED, "quantity": "two"}]), "quantity"),
        (order_body(items=STOCKED), "items"),
        (order_body(surprise=1), "surprise"),
        (
            order_body(items=[{"product_id": STOCKED, "quantity": 1, "colour": "red"}]),
            "colour",
        ),
        (order_body(total_amount="cheap"), "total_amount must be a decimal number"),
    ],
)
def test_bad_order_bodies_are_400_with_a_clear_message(
    http: httpx.Client, user: User, body: dict[str, object], expected: str
) -> None:
    response = http.post("/api/v1/orders", json=body, headers=user.headers)
    assert response.status_code == 400, response.text
    assert expected in _message(response)


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"items": [}', b"[1, 2]"])
def test_malformed_json_is_400(http: httpx.Client, user: User, raw: bytes) -> None:
    response = http.post(
        "/api/v1/orders",
        content=raw,
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    _message(response)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/v1/orders", "POST, GET"),
        ("TRACE", "/api/v1/orders/", "POST, GET"),
        ("POST", "/api/v1/orders/o-1", "GET, PATCH, DELETE"),
        ("PUT", "/api/v1/webhooks/w-1", "GET, DELETE"),
        ("GET", "/api/v1/webhooks/w-1/test", "POST"),
        ("DELETE", "/api/v1/auth/me", "GET"),
    ],
)
def test_a_method_a_path_does_not_serve_is_405(
    http: httpx.Client, user: User, method: str, path: str, allow: str
) -> None:
    response = http.request(method, path, headers=user.headers)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    assert response.json()["code"] == 12, response.text


def test_another_users_order_is_not_found(http: httpx.Client, user: User, other_user: User) -> None:
    created = http.post("/api/v1/orders", json=order_body(), headers=user.headers)
    order_id = created.json()["order_id"]
    response = http.get(f"/api/v1/orders/{order_id}", headers=other_user.headers)
    assert response.status_code == 404
    assert "not found" in _message(response)
    assert http.get(f"/api/v1/orders/{uuid.uuid4()}", headers=user.headers).status_code == 404


def test_someone_elses_user_id_is_forbidden(
    http: httpx.Client, user: User, other_user: User
) -> None:
    body = order_body(user_id=other_user.user_id)
    response = http.post("/api/v1/orders", json=body, headers=user.headers)
    assert response.status_code == 403
    assert "user_id" in _message(response)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(user: User, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "ordermesh-auth",
        "aud": "ordermesh",
        "sub": user.user_id,
        "email": user.email,
        "tier": "free",
        "role": "admin",
        "typ": "access",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return claims


def _bad_tokens(user: User) -> dict[str, str | None]:
    header = jwt.get_unverified_header(user.access_token)
    foreign_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        _claims(user), foreign_key, algorithm="RS256", headers={"kid": header["kid"]}
    )
    alg_none = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user))}."
    head, payload, signature = user.access_token.split(".")
    tampered_claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered_claims["role"] = "admin"
    tampered = f"{head}.{_b64(tampered_claims)}.{signature}"
    hs256 = jwt.encode(_claims(user), "a-guessed-shared-secret-of-32-bytes!", algorithm="HS256")
    return {
        "missing": None,
        "garbage": "not.a.token",
        "forged": forged,
        "alg-none": alg_none,
        "tampered": tampered,
        "hs256": hs256,
        "refresh-as-access": user.refresh_token,
    }


@pytest.mark.parametrize(
    "kind", ["missing", "garbage", "forged", "alg-none", "tampered", "hs256", "refresh-as-access"]
)
def test_bad_tokens_are_401_over_rest(http: httpx.Client, user: User, kind: str) -> None:
    token = _bad_tokens(user)[kind]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for response in (
        http.get("/api/v1/orders", headers=headers),
        http.post("/api/v1/orders", json=order_body(), headers=headers),
    ):
        assert response.status_code == 401, (kind, response.text)
        _message(response)


@pytest.mark.parametrize("kind", ["missing", "forged", "alg-none", "tampered"])
async def test_bad_tokens_are_unauthenticated_over_grpc(
    channel: grpc.aio.Channel, user: User, kind: str
) -> None:
    token = _bad_tokens(user)[kind]
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    stub = order_pb2_grpc.OrderServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListOrders(order_pb2.ListOrdersRequest(), metadata=metadata)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_bad_input_over_grpc_is_invalid_argument(
    channel: grpc.aio.Channel, user: User
) -> None:
    stub = order_pb2_grpc.OrderServiceStub(channel)
    request = order_pb2.CreateOrderRequest(
        items=[order_pb2.CreateOrderItem(product_id=STOCKED, quantity=0)],
        payment_method="tok_visa",
    )
    request.shipping_address.street = "1 Main St"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateOrder(request, metadata=user.grpc_metadata)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "quantity must be between 1 and 100" in (raised.value.details() or "")
