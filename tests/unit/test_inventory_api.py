"""InventoryService's servicer through grpc_testing, behind the platform interceptor, over a
fake catalog: every RPC's translation, its errors' statuses, the contract's bounds, and
public access (every catalog method needs no token)."""

from collections.abc import Iterator

import grpc
import pytest
from ordermesh.common.v1 import common_pb2
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from services.common.identity import Principal, Role, Tier
from services.common.money import Money
from services.inventory.api import PUBLIC_METHODS, SERVICE, InventoryApi
from services.inventory.domain.model import Product
from tests.unit.fakes.inventory import FakeProductCatalog
from tests.unit.servicer_harness import BAD_CREDENTIALS, ServicerHarness, TokenMint

DESCRIPTOR = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"]
ALICE = Principal("user-alice", "alice@example.com", Role.USER, Tier.FREE)

KEYBOARD = Product("kb-mech-01", "Mechanical keyboard", "Tactile", Money(8999, "USD"), 25, True)
MOUSE = Product("mouse-01", "Mouse", "Wireless", Money(2999, "USD"), 0, True)
RETIRED = Product("old-01", "Ball mouse", "Retired", Money(100, "USD"), 3, False)


@pytest.fixture
def catalog() -> FakeProductCatalog:
    return FakeProductCatalog({p.product_id: p for p in (KEYBOARD, MOUSE, RETIRED)})


@pytest.fixture
def inventory(mint: TokenMint, catalog: FakeProductCatalog) -> Iterator[ServicerHarness]:
    with ServicerHarness(
        DESCRIPTOR,
        InventoryApi(catalog),
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server,
        mint=mint,
        public_methods=PUBLIC_METHODS,
    ) as harness:
        yield harness


def test_every_method_of_the_catalog_is_public() -> None:
    assert set(PUBLIC_METHODS) == {f"/{SERVICE}/{name}" for name in DESCRIPTOR.methods_by_name}


def test_products_are_listed_by_name_with_exact_prices(inventory: ServicerHarness) -> None:
    response = inventory.unary(
        "ListProducts", inventory_pb2.ListProductsRequest(page=1, page_size=1)
    ).ok()
    assert list(response.products) == [
        inventory_pb2.Product(
            product_id="kb-mech-01",
            name="Mechanical keyboard",
            description="Tactile",
            unit_price=common_pb2.Money(currency="USD", amount_minor=8999, amount="89.99"),
            stock=25,
            active=True,
        )
    ]
    assert (response.total, response.page, response.page_size, response.has_next) == (
        2,
        1,
        1,
        True,
    )


def test_the_default_page_is_the_first_fifty(inventory: ServicerHarness) -> None:
    response = inventory.unary("ListProducts", inventory_pb2.ListProductsRequest()).ok()
    assert [p.product_id for p in response.products] == ["kb-mech-01", "mouse-01"]
    assert (response.page, response.page_size, response.has_next) == (1, 50, False)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (inventory_pb2.ListProductsRequest(page_size=101), "page_size"),
        (inventory_pb2.ListProductsRequest(page=-1), "page"),
    ],
)
def test_a_bad_page_is_invalid_naming_the_field(
    inventory: ServicerHarness, request_: inventory_pb2.ListProductsRequest, field: str
) -> None:
    outcome = inventory.unary("ListProducts", request_)
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in outcome.field_violations()] == [field]


def test_a_product_is_found_even_when_it_is_no_longer_sold(inventory: ServicerHarness) -> None:
    response = inventory.unary(
        "GetProduct", inventory_pb2.GetProductRequest(product_id="old-01")
    ).ok()
    assert (response.product.product_id, response.product.active) == ("old-01", False)
    assert response.product.unit_price.amount == "1.00"


def test_an_unknown_product_is_not_found(inventory: ServicerHarness) -> None:
    outcome = inventory.unary("GetProduct", inventory_pb2.GetProductRequest(product_id="nope"))
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.NOT_FOUND,
        "product 'nope' not found",
    )
    assert outcome.status().details == []


def test_a_product_id_is_required(inventory: ServicerHarness) -> None:
    outcome = inventory.unary("GetProduct", inventory_pb2.GetProductRequest())
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    assert outcome.field_violations() == [("product_id", "product_id is required")]


def test_a_batch_is_looked_up_once_per_id_and_omits_unknown_ones(
    inventory: ServicerHarness, catalog: FakeProductCatalog
) -> None:
    request = inventory_pb2.BatchGetProductsRequest(
        product_ids=["mouse-01", "nope", "mouse-01", "kb-mech-01"]
    )
    response = inventory.unary("BatchGetProducts", request).ok()
    assert [p.product_id for p in response.products] == ["mouse-01", "kb-mech-01"]
    assert catalog.asked_for == [["mouse-01", "nope", "kb-mech-01"]]


@pytest.mark.parametrize(
    ("method", "request_", "violation"),
    [
        ("GetProduct", inventory_pb2.GetProductRequest(product_id="p" * 65), ("product_id", "64")),
        (
            "BatchGetProducts",
            inventory_pb2.BatchGetProductsRequest(product_ids=["p"] * 101),
            ("product_ids", "at most 100"),
        ),
        (
            "BatchGetProducts",
            inventory_pb2.BatchGetProductsRequest(product_ids=["ok", "p" * 65]),
            ("product_ids[1]", "at most 64"),
        ),
        ("GetProduct", inventory_pb2.GetProductRequest(product_id="kb\x00"), ("product_id", "NUL")),
    ],
)
def test_a_request_beyond_the_contract_never_reaches_the_catalog(
    inventory: ServicerHarness,
    catalog: FakeProductCatalog,
    method: str,
    request_: inventory_pb2.GetProductRequest,
    violation: tuple[str, str],
) -> None:
    outcome = inventory.unary(method, request_)
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = outcome.field_violations()
    assert field == violation[0] and violation[1] in description
    assert catalog.asked_for == []


def test_bytes_that_are_no_request_at_all_are_invalid(inventory: ServicerHarness) -> None:
    outcome = inventory.unary("GetProduct", b"\x0a\xff")
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ordermesh.inventory.v1.GetProductRequest" in outcome.details


@pytest.mark.parametrize("kind", sorted(BAD_CREDENTIALS))
def test_the_catalog_ignores_any_token_sent_along(
    inventory: ServicerHarness, mint: TokenMint, kind: str
) -> None:
    metadata = mint.bad_credentials(kind, ALICE)
    outcome = inventory.unary(
        "GetProduct", inventory_pb2.GetProductRequest(product_id="mouse-01"), metadata=metadata
    )
    assert outcome.ok().product.stock == 0


def test_the_callers_request_id_is_echoed_on_success_and_on_error(
    inventory: ServicerHarness,
) -> None:
    metadata = (("x-request-id", "req-inventory-1"),)
    found = inventory.unary(
        "GetProduct", inventory_pb2.GetProductRequest(product_id="mouse-01"), metadata=metadata
    )
    missing = inventory.unary(
        "GetProduct", inventory_pb2.GetProductRequest(product_id="nope"), metadata=metadata
    )
    assert found.request_id == missing.request_id == "req-inventory-1"


def test_a_request_id_that_is_no_plain_token_is_replaced(inventory: ServicerHarness) -> None:
    outcome = inventory.unary(
        "ListProducts",
        inventory_pb2.ListProductsRequest(),
        metadata=(("x-request-id", "two words"),),
    )
    assert outcome.request_id != "two words" and len(outcome.request_id) == 32
