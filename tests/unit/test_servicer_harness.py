"""The harness itself, where no servicer exercises it yet: a server-streaming method's messages
arrive one by one, with the call's context variables (the caller) holding for each, and a
stream that fails midway ends with its status after the messages already sent."""

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from ordermesh.order.v1 import order_pb2, order_pb2_grpc

from services.common.errors import NotFound
from services.common.identity import Principal, Role, Tier
from services.order.api import OrderApi
from services.platform.interceptors import current_principal
from tests.unit.fakes.order import FakeCatalog, FakeLiveFeed, FakeOrderStore
from tests.unit.servicer_harness import ServicerHarness, TokenMint

DESCRIPTOR = order_pb2.DESCRIPTOR.services_by_name["OrderService"]
ALICE = Principal("user-alice", "alice@example.com", Role.USER, Tier.FREE)


class StreamingOrders(OrderApi):
    """WatchOrders as a stream that names its caller, then fails if asked to."""

    async def WatchOrders(
        self, request: order_pb2.WatchOrdersRequest, context: Any
    ) -> AsyncIterator[order_pb2.WatchOrdersResponse]:
        yield order_pb2.WatchOrdersResponse(order_id="first", cursor=request.cursor)
        yield order_pb2.WatchOrdersResponse(order_id=current_principal().user_id)
        if request.user_id:
            raise NotFound(f"user {request.user_id} not found")


@pytest.fixture
def orders(mint: TokenMint) -> Iterator[ServicerHarness]:
    with ServicerHarness(
        DESCRIPTOR,
        StreamingOrders(FakeOrderStore(), FakeCatalog({}), FakeLiveFeed()),
        order_pb2_grpc.add_OrderServiceServicer_to_server,
        mint=mint,
    ) as harness:
        yield harness


def test_a_stream_sends_each_message_with_the_calls_context(orders: ServicerHarness) -> None:
    outcome = orders.unary_stream(
        "WatchOrders", order_pb2.WatchOrdersRequest(cursor="c-1"), caller=ALICE, expect=2
    )
    assert [(m.order_id, m.cursor) for m in outcome.responses] == [
        ("first", "c-1"),
        (ALICE.user_id, ""),
    ]
    assert (outcome.code, outcome.details) == (grpc.StatusCode.OK, "")
    assert outcome.request_id


def test_a_stream_that_fails_midway_ends_with_its_status(orders: ServicerHarness) -> None:
    outcome = orders.unary_stream(
        "WatchOrders", order_pb2.WatchOrdersRequest(user_id="ghost"), caller=ALICE, expect=2
    )
    assert len(outcome.responses) == 2
    assert (outcome.code, outcome.details) == (grpc.StatusCode.NOT_FOUND, "user ghost not found")
    assert outcome.status().message == "user ghost not found"
