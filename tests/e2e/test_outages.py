"""A dependency going away for a while is an outage to wait out, not a reason to give up on
orders: the consumers retry without limit, say what they wait for in ``ordermesh status``,
dead-letter nothing, and every order ships once the dependency is back."""

import time
from collections.abc import Iterator

import httpx
import pytest

from devstack import postgres, procs, stack
from tests.e2e.conftest import register_and_login
from tests.e2e.pipeline import (
    Books,
    check_books,
    create_orders,
    money_balance,
    pending_dead_letters,
    products,
    restart_stack,
    statuses_of,
    wait_all_terminal,
    wait_for_status_line,
)

pytestmark = pytest.mark.e2e

ORDERS = 200
CATALOG_OUTAGE = 20.0
POSTGRES_OUTAGE = 10.0


@pytest.fixture
def books() -> Iterator[Books]:
    with products(**{"outage-widget": 10_000}) as created:
        yield created


@pytest.fixture
def stack_restored() -> Iterator[None]:
    """Whatever a test stops, the stack is whole again afterwards."""
    yield
    if not postgres.is_ready():
        postgres.start()
    restart_stack()


def _lines(books: Books) -> list[dict[str, int]]:
    [product] = books.products
    return [{product: 1 + index % 3} for index in range(ORDERS)]


def test_orders_wait_out_the_catalog_being_away_and_all_ship(
    http: httpx.Client, books: Books, stack_restored: None
) -> None:
    letters_before = pending_dead_letters()
    user = register_and_login(http)
    # The validator must meet the outage: nothing consumes until the catalog is gone.
    procs.stop("workers")
    order_ids = create_orders(http, user, books, _lines(books))
    procs.stop("api")
    outage_started = time.monotonic()
    stack.start_app("workers")
    blocked = wait_for_status_line("ordermesh.order-validator (pid")
    assert "BLOCKED" in blocked and "inventory service (catalog)" in blocked, blocked
    assert set(statuses_of(order_ids).values()) == {"PENDING"}
    time.sleep(max(0.0, CATALOG_OUTAGE - (time.monotonic() - outage_started)))
    stack.start_app("api")
    statuses = wait_all_terminal(order_ids)
    assert set(statuses.values()) == {"SHIPPED"}
    check_books(books, statuses)
    assert pending_dead_letters() == letters_before, "an outage dead-lettered events"
    net, shipped = money_balance(order_ids)
    assert net == shipped
    wait_for_status_line("waiting on dependencies: none")


def test_orders_in_flight_survive_a_postgres_restart_and_all_ship(
    http: httpx.Client, books: Books, stack_restored: None
) -> None:
    letters_before = pending_dead_letters()
    user = register_and_login(http)
    procs.stop("workers")
    order_ids = create_orders(http, user, books, _lines(books))
    stack.start_app("workers")
    deadline = time.monotonic() + 60
    while sum(s != "PENDING" for s in statuses_of(order_ids).values()) < 10:
        assert time.monotonic() < deadline, "the workers did not start on the orders"
        time.sleep(0.05)
    postgres.stop()
    blocked = wait_for_status_line("BLOCKED")
    assert "on postgres" in blocked, blocked
    time.sleep(POSTGRES_OUTAGE)
    postgres.start()
    # The API's pooled connections died with the server: none of them may fail a request.
    for _ in range(20):
        listed = http.get("/api/v1/orders", params={"page_size": 1}, headers=user.headers)
        assert listed.status_code == 200, listed.text
    statuses = wait_all_terminal(order_ids)
    assert set(statuses.values()) == {"SHIPPED"}
    check_books(books, statuses)
    assert pending_dead_letters() == letters_before, "an outage dead-lettered events"
    net, shipped = money_balance(order_ids)
    assert net == shipped
