"""The bridge's pure parts: where the token comes from, who may watch whom, and how upstream
messages become the original system's JSON."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import timestamp_pb2
from ordermesh.order.v1 import order_pb2

from gateway import messages
from gateway.auth import (
    SocketRequest,
    authorize,
    parse_request,
    select_subprotocol,
    token_from_subprotocols,
)
from gateway.closecodes import MAX_REASON_BYTES, CloseCode, Refusal, short_reason
from gateway.upstream import Rejected, Unavailable, rejection
from services.common.identity import Principal, Role, Tier
from tests.unit.servicer_harness import TokenMint

ALICE = Principal("alice", "alice@example.com", Role.USER, Tier.FREE)
ADMIN = Principal("root", "root@example.com", Role.ADMIN, Tier.FREE)


def test_the_path_names_the_watched_user_and_the_query_the_cursor() -> None:
    request = parse_request("/ws/orders/alice?cursor=c-7", None, ())
    assert (request.user_id, request.cursor, request.token) == ("alice", "c-7", None)
    assert parse_request("/ws/orders/a%20b/", None, ()).user_id == "a b"


@pytest.mark.parametrize(
    "path",
    ["/ws/orders/", "/ws/orders/a/b", "/ws/other/alice", "/ws/orders/" + "x" * 65,
     "/ws/orders/a%00b", "/ws/orders/alice?cursor=" + "c" * 129],
)  # fmt: skip
def test_malformed_requests_are_bad_requests(path: str) -> None:
    with pytest.raises(Refusal) as refused:
        parse_request(path, None, ())
    assert refused.value.code is CloseCode.BAD_REQUEST


def test_the_header_wins_over_the_subprotocol_and_the_query() -> None:
    request = parse_request("/ws/orders/a?token=q", "Bearer h", ["bearer", "s"])
    assert request.token == "h"
    assert parse_request("/ws/orders/a?token=q", None, ["bearer", "s"]).token == "s"
    assert parse_request("/ws/orders/a?token=q", None, ["chat"]).token == "q"
    with pytest.raises(Refusal) as refused:
        parse_request("/ws/orders/a", "Basic xyz", ())
    assert refused.value.code is CloseCode.INVALID_TOKEN


def test_subprotocol_forms() -> None:
    assert token_from_subprotocols(["bearer", "jwt"]) == "jwt"
    assert token_from_subprotocols(["bearer.jwt"]) == "jwt"
    assert token_from_subprotocols(["bearer"]) is None
    assert token_from_subprotocols(["chat", "v2"]) is None
    assert select_subprotocol(["bearer", "jwt"]) == "bearer"
    assert select_subprotocol(["x", "bearer.jwt"]) == "bearer.jwt"
    assert select_subprotocol(["chat"]) is None


@pytest.fixture(scope="module")
def mint() -> TokenMint:
    return TokenMint.generate()


async def test_authorization_decisions(mint: TokenMint) -> None:
    verifier = mint.verifier()

    async def code_for(user_id: str, token: str | None) -> CloseCode | None:
        try:
            await authorize(verifier, SocketRequest(user_id=user_id, cursor="", token=token))
        except Refusal as refusal:
            return refusal.code
        return None

    assert await code_for("alice", mint.token(ALICE)) is None
    assert await code_for("bob", mint.token(ADMIN)) is None
    assert await code_for("bob", mint.token(ALICE)) is CloseCode.FORBIDDEN
    assert await code_for("alice", None) is CloseCode.MISSING_TOKEN
    assert await code_for("alice", "junk") is CloseCode.INVALID_TOKEN
    assert await code_for("alice", mint.token(ALICE, expires_in=-1)) is CloseCode.TOKEN_EXPIRED
    assert await code_for("alice", mint.token(ALICE, typ="refresh")) is CloseCode.INVALID_TOKEN


def test_close_codes_are_distinct_and_in_the_application_range() -> None:
    codes = [code for code in CloseCode if code is not CloseCode.GOING_AWAY]
    assert len({int(code) for code in codes}) == len(codes)
    assert all(4000 <= code <= 4999 for code in codes)
    assert len(short_reason("é" * 200).encode()) <= MAX_REASON_BYTES


def test_an_update_in_the_original_format() -> None:
    response = order_pb2.WatchOrdersResponse(
        order_id="o1",
        status=order_pb2.ORDER_STATUS_SHIPPED,
        version=5,
        message="shipped with UPS",
        occurred_at=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=250_000_000),
        cursor="c-9",
        carrier="UPS",
        tracking_number="1Z999",
        estimated_delivery=timestamp_pb2.Timestamp(seconds=1_700_300_000),
    )
    entry = messages.entry_from_response(response)
    assert entry.text is not None and (entry.order_id, entry.version) == ("o1", 5)
    assert json.loads(entry.text) == {
        "type": "order.update",
        "order_id": "o1",
        "status": "shipped",
        "message": "shipped with UPS",
        "version": 5,
        "timestamp": "2023-11-14T22:13:20.250000Z",
        "cursor": "c-9",
        "data": {
            "tracking_number": "1Z999",
            "carrier": "UPS",
            "estimated_delivery": "2023-11-18T09:33:20Z",
        },
    }
    response.snapshot = True
    assert json.loads(messages.entry_from_response(response).text or "")["snapshot"] is True


def test_heartbeats_and_pings() -> None:
    bookmark = messages.entry_from_response(
        order_pb2.WatchOrdersResponse(heartbeat=True, cursor="c-3")
    )
    assert bookmark.heartbeat and bookmark.is_position and bookmark.cursor == "c-3"
    assert json.loads(messages.heartbeat(None)) == {"type": "heartbeat", "status": "alive"}
    assert json.loads(messages.heartbeat("c-3"))["cursor"] == "c-3"
    for ping in ("ping", " PING ", '{"type":"ping"}', b"ping"):
        assert messages.is_ping(ping), ping
    for other in ("pong", '{"type":"pong"}', "{", b"\xff", "[]"):
        assert not messages.is_ping(other), other
    assert json.loads(messages.PONG) == {"type": "pong"}


def test_upstream_failures_are_retried_or_end_the_sockets() -> None:
    assert isinstance(rejection(grpc.StatusCode.UNAVAILABLE, "down"), Unavailable)
    expired = rejection(grpc.StatusCode.UNAUTHENTICATED, "token has expired")
    assert isinstance(expired, Rejected) and expired.refusal.code is CloseCode.TOKEN_EXPIRED
    assert expired.token_problem
    invalid = rejection(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
    assert isinstance(invalid, Rejected) and invalid.refusal.code is CloseCode.INVALID_TOKEN
    denied = rejection(grpc.StatusCode.NOT_FOUND, "order not found")
    assert isinstance(denied, Rejected) and denied.refusal.code is CloseCode.FORBIDDEN
    bad = rejection(grpc.StatusCode.INVALID_ARGUMENT, "cursor")
    assert isinstance(bad, Rejected) and bad.refusal.code is CloseCode.BAD_REQUEST


async def test_watched_users_are_spread_over_the_upstream_connections_stably() -> None:
    """A server takes 1,000 streams per connection: the bridge's one stream per watched user
    goes over one of several channels, the same one for a user every time."""
    import grpc

    from gateway.upstream import WATCH_CHANNEL_OPTIONS, GrpcWatchSource

    channels = [
        grpc.aio.insecure_channel("127.0.0.1:9", options=WATCH_CHANNEL_OPTIONS) for _ in range(8)
    ]
    try:
        source = GrpcWatchSource(channels)
        picks = {source.channel_index(f"user-{n}") for n in range(2000)}
        assert picks == set(range(8))
        assert source.channel_index("user-7") == source.channel_index("user-7")
    finally:
        for channel in channels:
            await channel.close()
