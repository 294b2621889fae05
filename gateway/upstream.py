"""The order service's ``WatchOrders`` stream, as the bridge consumes it: translated entries
(:class:`~gateway.messages.FeedEntry`) and two kinds of failure, one to retry and one that
ends the sockets relying on it."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import grpc
from ordermesh.order.v1 import order_pb2, order_pb2_grpc

from gateway.auth import Grant
from gateway.closecodes import CloseCode, Refusal
from gateway.messages import FeedEntry, entry_from_response

# Everything else is about the request or its token, and retrying it cannot help.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class Unavailable(Exception):
    """The stream could not be opened or broke off; retry with the last cursor."""


class Rejected(Exception):
    """The order service refused the stream for a reason retrying will not fix."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal

    @property
    def token_problem(self) -> bool:
        return self.refusal.code in (CloseCode.TOKEN_EXPIRED, CloseCode.INVALID_TOKEN)


class WatchSource(Protocol):
    def watch(self, grant: Grant, user_id: str, cursor: str) -> AsyncIterator[FeedEntry]:
        """``user_id``'s feed after ``cursor`` (empty: a snapshot first), opened with
        ``grant``'s token; raises :class:`Unavailable` or :class:`Rejected`."""
        ...


def rejection(code: grpc.StatusCode, details: str) -> Exception:
    """What a failed ``WatchOrders`` call means to the bridge."""
    if code in RETRYABLE:
        return Unavailable(f"{code.name}: {details}")
    if code is grpc.StatusCode.UNAUTHENTICATED:
        expired = "expired" in details.lower()
        return Rejected(
            Refusal(
                CloseCode.TOKEN_EXPIRED if expired else CloseCode.INVALID_TOKEN,
                "token expired: refresh it and reconnect with your cursor"
                if expired
                else f"token refused: {details}",
            )
        )
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND):
        return Rejected(Refusal(CloseCode.FORBIDDEN, f"not allowed: {details}"))
    return Rejected(Refusal(CloseCode.BAD_REQUEST, f"{code.name.lower()}: {details}"))


class GrpcWatchSource:
    """``WatchOrders`` on the order service's gRPC port, spread over ``channels``: a server
    allows ``grpc.max_concurrent_streams`` (1,000) streams per connection, and the bridge
    holds one stream per watched user, so each user's streams go over one of several
    connections, chosen by a stable hash of the user id."""

    def __init__(self, channels: grpc.aio.Channel | Sequence[grpc.aio.Channel]) -> None:
        opened = [channels] if isinstance(channels, grpc.aio.Channel) else list(channels)
        if not opened:
            raise ValueError("at least one channel to the order service is needed")
        self._stubs = [order_pb2_grpc.OrderServiceStub(channel) for channel in opened]

    def channel_index(self, user_id: str) -> int:
        return zlib.crc32(user_id.encode()) % len(self._stubs)

    async def watch(self, grant: Grant, user_id: str, cursor: str) -> AsyncIterator[FeedEntry]:
        request = order_pb2.WatchOrdersRequest(
            cursor=cursor,
            # Users watch themselves without naming anyone; only admins name a user.
            user_id="" if grant.principal.user_id == user_id else user_id,
        )
        stub = self._stubs[self.channel_index(user_id)]
        call = stub.WatchOrders(request, metadata=(("authorization", f"Bearer {grant.token}"),))
        try:
            async for response in call:
                yield entry_from_response(response)
        except grpc.aio.AioRpcError as error:
            raise rejection(error.code(), error.details() or "") from None
        finally:
            call.cancel()
        raise Unavailable("the order service ended the stream")


WATCH_CHANNEL_OPTIONS = (
    # Each channel its own connection (channels to one address share one by default).
    ("grpc.use_local_subchannel_pool", 1),
    # Dead connections are found by HTTP/2 pings, not by waiting for the next update.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after an order-service restart; the bridge backs off itself.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)
