"""Issue 9: a client written for the original API, through the public port. Its documented
create request ships with a captured payment, its payment method names work, and every path
it served with a trailing slash answers like its twin without one."""

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from devstack import postgres
from tests.e2e.conftest import PASSWORD, User, order_body, wait_for_order

pytestmark = pytest.mark.e2e

ORIGINAL_PRODUCTS = ("prod-001", "prod-1")
PUBLIC_TARGET = "https://93.184.215.14/hooks/original"
TERMINAL = {"ORDER_STATUS_SHIPPED", "ORDER_STATUS_FAILED", "ORDER_STATUS_CANCELLED"}
ACCEPTED = "accepted methods are CREDIT_CARD, DEBIT_CARD, PAYPAL"


def documented_request(user_id: str) -> dict[str, Any]:
    """The create request of the original API's documentation, word for word but the id."""
    return {
        "user_id": user_id,
        "items": [{"product_id": "prod-001", "quantity": 2, "unit_price": 29.99}],
        "total_amount": 59.98,
        "shipping_address": {
            "street": "123 Main St",
            "city": "New York",
            "state": "NY",
            "zip": "10001",
            "country": "US",
        },
        "payment_method": "CREDIT_CARD",
    }


@pytest.fixture
def demo_stock_restored() -> Iterator[None]:
    """The documented request buys the demo catalog's `prod-001`; what the test's orders
    took is put back afterwards, so the suite never runs the demo stock down."""

    def stock() -> dict[str, int]:
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT product_id, stock FROM inventory.products WHERE product_id = ANY(%s)",
                (list(ORIGINAL_PRODUCTS),),
            ).fetchall()
        return {product_id: count for product_id, count in rows}

    before = stock()
    assert set(before) == set(ORIGINAL_PRODUCTS), "the demo catalog lacks the original's ids"
    yield
    taken = {product_id: before[product_id] - count for product_id, count in stock().items()}
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        for product_id, count in taken.items():
            conn.execute(
                "UPDATE inventory.products SET stock = stock + %s WHERE product_id = %s",
                (count, product_id),
            )


def settle(http: httpx.Client, user: User, order_id: str) -> dict[str, Any]:
    return wait_for_order(
        http, user, order_id, lambda order: order["status"] in TERMINAL, timeout=60
    )


def payment_of(http: httpx.Client, user: User, order_id: str) -> dict[str, Any]:
    response = http.get(f"/api/v1/orders/{order_id}/payment", headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.usefixtures("demo_stock_restored")
def test_the_documented_create_request_ships_with_a_captured_payment(
    http: httpx.Client, user: User
) -> None:
    created = http.post(
        "/api/v1/orders", json=documented_request(user.user_id), headers=user.headers
    )
    assert created.status_code == 200, created.text
    order = created.json()
    assert order["user_id"] == user.user_id
    assert order["total_amount"] == {"currency": "USD", "amount_minor": "5998", "amount": "59.98"}
    [line] = order["items"]
    assert (line["product_id"], line["quantity"], line["unit_price"]["amount"]) == (
        "prod-001",
        2,
        "29.99",
    )

    shipped = settle(http, user, order["order_id"])
    assert shipped["status"] == "ORDER_STATUS_SHIPPED", shipped
    assert shipped["payment_method"] == "CREDIT_CARD"
    payment = payment_of(http, user, order["order_id"])
    assert payment["status"] == "PAYMENT_STATUS_CAPTURED"
    assert payment["amount"] == {"currency": "USD", "amount_minor": "5998", "amount": "59.98"}
    assert payment["payment_method"] == "CREDIT_CARD"
    assert payment["method_family"] == "PAYMENT_METHOD_FAMILY_CREDIT_CARD"

    # The README's one-liners turn the answer back into the original's form.
    assert shipped["status"].removeprefix("ORDER_STATUS_").lower() == "shipped"
    assert shipped["total_amount"]["amount"] == "59.98"


@pytest.mark.usefixtures("demo_stock_restored")
def test_the_implementation_guides_product_id_is_in_the_catalog(http: httpx.Client) -> None:
    for product_id in ORIGINAL_PRODUCTS:
        response = http.get(f"/api/v1/products/{product_id}")
        assert response.status_code == 200, response.text
        assert response.json()["unit_price"] == {
            "currency": "USD",
            "amount_minor": "2999",
            "amount": "29.99",
        }


def test_another_users_id_in_the_documented_request_is_refused(
    http: httpx.Client, user: User, other_user: User
) -> None:
    refused = http.post(
        "/api/v1/orders", json=documented_request(other_user.user_id), headers=user.headers
    )
    assert refused.status_code == 403, refused.text


@pytest.mark.parametrize(
    ("method", "family"),
    [
        ("DEBIT_CARD", "PAYMENT_METHOD_FAMILY_DEBIT_CARD"),
        ("paypal", "PAYMENT_METHOD_FAMILY_PAYPAL"),
        ("Credit_Card", "PAYMENT_METHOD_FAMILY_CREDIT_CARD"),
        ("tok_visa", "PAYMENT_METHOD_FAMILY_CARD_TOKEN"),
    ],
)
def test_the_original_method_names_ship(
    http: httpx.Client, user: User, method: str, family: str
) -> None:
    created = http.post(
        "/api/v1/orders", json=order_body(payment_method=method), headers=user.headers
    )
    assert created.status_code == 200, created.text
    order = settle(http, user, created.json()["order_id"])
    assert order["status"] == "ORDER_STATUS_SHIPPED", order
    payment = payment_of(http, user, order["order_id"])
    assert (payment["status"], payment["payment_method"], payment["method_family"]) == (
        "PAYMENT_STATUS_CAPTURED",
        method,
        family,
    )


@pytest.mark.parametrize("method", ["BITCOIN", "credit card", "TOK_VISA"])
def test_other_methods_fail_naming_the_accepted_ones(
    http: httpx.Client, user: User, method: str
) -> None:
    created = http.post(
        "/api/v1/orders", json=order_body(payment_method=method), headers=user.headers
    )
    assert created.status_code == 200, created.text
    order = settle(http, user, created.json()["order_id"])
    assert order["status"] == "ORDER_STATUS_FAILED", order
    assert order["status_reason"].startswith(f"invalid payment method {method!r}: {ACCEPTED}")
    assert "tok_visa" in order["status_reason"]
    payment = payment_of(http, user, order["order_id"])
    assert payment["status"] == "PAYMENT_STATUS_DECLINED"
    assert payment.get("method_family", "PAYMENT_METHOD_FAMILY_UNSPECIFIED") == (
        "PAYMENT_METHOD_FAMILY_UNSPECIFIED"
    )


def shape(response: httpx.Response, redact: str = "") -> tuple[int, object]:
    """What must agree between twins: the status, and the body with ids, times and the
    given text (the twin's own email) blanked."""

    def blank(value: object, key: str = "") -> object:
        if isinstance(value, dict):
            return {k: blank(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [blank(v) for v in value]
        if key.endswith(("_id", "_at", "_token", "secret", "email")) or key == "expires_in":
            return "…"
        if redact and isinstance(value, str):
            return value.replace(redact, "…")
        return value

    body: object = response.json() if response.content else None
    return response.status_code, blank(body)


@pytest.mark.parametrize("suffix", ["", "/"])
def test_health_answers_with_and_without_the_trailing_slash(
    http: httpx.Client, suffix: str
) -> None:
    response = http.get(f"/health{suffix}")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_register_and_login_answer_like_their_twins(http: httpx.Client) -> None:
    answers: dict[str, list[tuple[int, object]]] = {"": [], "/": []}
    for suffix, answered in answers.items():
        email = f"e2e-slash-{uuid.uuid4().hex[:12]}@example.com"
        account = {"email": email, "password": PASSWORD, "full_name": "Slash", "phone": ""}
        register = f"/api/v1/auth/register{suffix}"
        login = f"/api/v1/auth/login{suffix}"
        answered.append(shape(http.post(register, json=account)))
        answered.append(shape(http.post(register, json=account), email))  # taken: 409
        answered.append(shape(http.post(register, json={"email": email})))  # 400
        answered.append(shape(http.post(login, json={"email": email, "password": PASSWORD})))
        answered.append(shape(http.post(login, json={"email": email, "password": "wrong-one"})))
    assert [status for status, _ in answers[""]] == [200, 409, 400, 200, 401]
    assert answers["/"] == answers[""]


def test_orders_and_webhooks_answer_like_their_twins(http: httpx.Client, user: User) -> None:
    for collection, body in (
        ("/api/v1/orders", order_body()),
        ("/api/v1/webhooks", {"url": PUBLIC_TARGET, "events": ["order.shipped"]}),
    ):
        answers: dict[str, list[tuple[int, object]]] = {}
        for suffix in ("", "/"):
            path = collection + suffix
            answers[suffix] = [
                shape(http.post(path, json=body, headers=user.headers)),
                shape(http.post(path, json={**body, "nonsense": 1}, headers=user.headers)),
                shape(http.post(path, json=body)),  # no token: 401
            ]
            listed = http.get(path, headers=user.headers)
            assert listed.status_code == 200, listed.text
            answers[suffix].append((listed.status_code, sorted(listed.json())))
        assert [status for status, _ in answers[""]] == [200, 400, 401, 200], answers
        assert answers["/"] == answers[""], collection
    orders = http.get("/api/v1/orders/", headers=user.headers, params={"page_size": 10}).json()
    assert orders["total"] == 2 and len(orders["orders"]) == 2
    hooks = http.get("/api/v1/webhooks/", headers=user.headers).json()["webhooks"]
    assert len(hooks) == 2
