"""A stand-in for the order service's live feed, keeping the ``WatchOrders`` contract, for the
bridge's tests: per-user positions (opaque strings, increasing), resume after a cursor, a
snapshot for an empty or trimmed cursor, a heartbeat bookmark after the backlog and while
idle. :class:`FakeOrderFeed` is used directly as a :class:`~gateway.upstream.WatchSource` by
the feed tests, and served over real gRPC by :class:`StandInOrderServicer`."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from google.protobuf import timestamp_pb2
from ordermesh.order.v1 import order_pb2

from gateway.auth import Grant
from gateway.messages import FeedEntry, entry_from_response
from gateway.upstream import Unavailable, rejection
from services.common.errors import Unauthenticated
from services.platform.tokens import TokenVerifier


@dataclass
class _UserLog:
    entries: list[order_pb2.WatchOrdersResponse] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    trimmed_through: int = 0


def cursor_at(number: int) -> str:
    return f"c-{number:06d}"


def _number(cursor: str) -> int:
    return int(cursor.removeprefix("c-"))


class FakeOrderFeed:
    """The order service's per-user feed, in memory."""

    def __init__(self, heartbeat_seconds: float = 15.0) -> None:
        self._logs: dict[str, _UserLog] = {}
        self._counter = itertools.count(1)
        self.heartbeat_seconds = heartbeat_seconds
        self.opened: list[tuple[str, str]] = []
        self.open_streams = 0
        self.failing = False

    def _log(self, user_id: str) -> _UserLog:
        return self._logs.setdefault(user_id, _UserLog())

    async def update(
        self,
        user_id: str,
        order_id: str,
        status: order_pb2.OrderStatus.ValueType,
        version: int,
        *,
        carrier: str = "",
        tracking_number: str = "",
    ) -> str:
        """Appends a status change to ``user_id``'s feed; returns its cursor."""
        log = self._log(user_id)
        cursor = cursor_at(next(self._counter))
        response = order_pb2.WatchOrdersResponse(
            order_id=order_id,
            status=status,
            version=version,
            message=f"order {order_pb2.OrderStatus.Name(status)}",
            cursor=cursor,
            occurred_at=timestamp_pb2.Timestamp(seconds=1_700_000_000 + version),
            carrier=carrier,
            tracking_number=tracking_number,
        )
        async with log.changed:
            log.entries.append(response)
            log.changed.notify_all()
        return cursor

    def trim(self, user_id: str, through: str) -> None:
        self._log(user_id).trimmed_through = _number(through)

    def _snapshot(self, log: _UserLog) -> list[order_pb2.WatchOrdersResponse]:
        latest: dict[str, order_pb2.WatchOrdersResponse] = {}
        for entry in log.entries:
            latest[entry.order_id] = entry
        states = []
        for entry in latest.values():
            state = order_pb2.WatchOrdersResponse()
            state.CopyFrom(entry)
            state.snapshot = True
            state.cursor = ""
            states.append(state)
        return states

    async def responses(
        self, user_id: str, cursor: str
    ) -> AsyncIterator[order_pb2.WatchOrdersResponse]:
        if self.failing:
            raise Unavailable("the stand-in order feed is down")
        self.opened.append((user_id, cursor))
        self.open_streams += 1
        try:
            log = self._log(user_id)
            sent = len(log.entries)
            if not cursor or _number(cursor) <= log.trimmed_through:
                for state in self._snapshot(log):
                    yield state
            else:
                after = _number(cursor)
                sent = 0
                for entry in log.entries:
                    sent += 1
                    if _number(entry.cursor) > after:
                        yield entry
            position = log.entries[sent - 1].cursor if sent else cursor_at(0)
            yield order_pb2.WatchOrdersResponse(heartbeat=True, cursor=position)
            while True:
                await self._wait_for_more(log, sent)
                if self.failing:
                    raise Unavailable("the stand-in order feed went down")
                if len(log.entries) == sent:
                    yield order_pb2.WatchOrdersResponse(heartbeat=True, cursor=position)
                    continue
                for entry in log.entries[sent:]:
                    sent += 1
                    position = entry.cursor
                    yield entry
        finally:
            self.open_streams -= 1

    async def _wait_for_more(self, log: _UserLog, sent: int) -> None:
        """Until the feed has more than ``sent`` entries, or a heartbeat interval passed."""
        async with log.changed:
            try:
                async with asyncio.timeout(self.heartbeat_seconds):
                    await log.changed.wait_for(lambda: len(log.entries) > sent)
            except TimeoutError:
                pass

    async def watch(self, grant: Grant, user_id: str, cursor: str) -> AsyncIterator[FeedEntry]:
        """The feed as a :class:`~gateway.upstream.WatchSource`."""
        if not grant.valid():
            raise rejection(grpc.StatusCode.UNAUTHENTICATED, "token has expired")
        async for response in self.responses(user_id, cursor):
            yield entry_from_response(response)


class StandInOrderServicer:
    """``WatchOrders`` of :class:`FakeOrderFeed` over real gRPC (the order service's only
    method the bridge calls), authenticated like the order service: a valid bearer token;
    users watch themselves, admins anyone."""

    def __init__(self, feed: FakeOrderFeed, verifier: TokenVerifier) -> None:
        self.feed = feed
        self._verifier = verifier

    async def WatchOrders(
        self,
        request: order_pb2.WatchOrdersRequest,
        context: grpc.aio.ServicerContext[
            order_pb2.WatchOrdersRequest, order_pb2.WatchOrdersResponse
        ],
    ) -> AsyncIterator[order_pb2.WatchOrdersResponse]:
        metadata = dict(context.invocation_metadata() or ())
        try:
            principal = await self._verifier.principal(str(metadata.get("authorization", "")))
        except Unauthenticated as error:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
        user_id = request.user_id or principal.user_id
        if user_id != principal.user_id and not principal.is_privileged:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not your orders")
        try:
            async for response in self.feed.responses(user_id, request.cursor):
                yield response
        except Unavailable as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))


async def start_order_server(servicer: StandInOrderServicer) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "ordermesh.order.v1.OrderService",
        {
            "WatchOrders": grpc.unary_stream_rpc_method_handler(
                servicer.WatchOrders,
                request_deserializer=order_pb2.WatchOrdersRequest.FromString,
                response_serializer=order_pb2.WatchOrdersResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port
