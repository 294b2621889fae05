"""WatchOrders: one watcher's stream of status changes, from the live feed, with the order
history filling whatever the feed cannot give (a cursor it no longer reaches, entries lost
while its store was away, versions skipped on the way)."""

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from services.common.errors import NotFound
from services.common.identity import Principal
from services.order.domain.live import Cursor, Delivery, FeedEntry, WatchSession
from services.order.domain.model import Order
from services.order.domain.ports import FeedReset, LiveFeed, OrderStore, Subscription

# A snapshot states the most recently changed orders of the user, at most this many.
SNAPSHOT_LIMIT = 500
# The backlog after a cursor is read in pages of this many entries.
BACKLOG_PAGE = 1000


@dataclass(frozen=True, slots=True)
class WatchRequest:
    principal: Principal
    cursor: str = ""
    user_id: str = ""
    order_id: str = ""


def watched_user(principal: Principal, user_id: str) -> str:
    if user_id and user_id != principal.user_id:
        principal.require_privileged("watch other users' orders")
        return user_id
    return principal.user_id


async def watch_orders(
    request: WatchRequest, store: OrderStore, feed: LiveFeed, heartbeat_seconds: float
) -> AsyncIterator[Delivery]:
    """Deliveries for the watcher: the backlog after its cursor (or a snapshot of where its
    orders are when there is no usable cursor), a heartbeat marking the end of that, then
    every status change as it is published, with heartbeats while quiet. Never ends by
    itself."""
    user_id = watched_user(request.principal, request.user_id)
    cursor = Cursor.parse(request.cursor) if request.cursor else None
    order_id = request.order_id or None
    if order_id is not None:
        order = await store.get(order_id)
        if order is None or order.user_id != user_id:
            raise NotFound(f"order {order_id} not found")
    async with feed.subscribe(user_id) as subscription:
        session = WatchSession(user_id, order_id, Cursor.start(subscription.epoch))
        backlog = None
        if cursor is not None and cursor.epoch == subscription.epoch:
            backlog = await _backlog(subscription, session, cursor)
        if backlog is None:
            backlog = await _snapshot(subscription, session, store)
        for delivery in backlog:
            yield delivery
        yield session.heartbeat()
        while True:
            item = await subscription.next(heartbeat_seconds)
            if item is None:
                yield session.heartbeat()
                continue
            for delivery in await _live(item, session, store):
                yield delivery


async def _backlog(
    subscription: Subscription, session: WatchSession, cursor: Cursor
) -> list[Delivery] | None:
    """What the feed holds after ``cursor``; None when it no longer reaches back that far."""
    session.position = cursor
    deliveries: list[Delivery] = []
    while True:
        entries = await subscription.after(session.position, BACKLOG_PAGE)
        if entries is None:
            return None
        deliveries.extend(
            delivery for entry in entries if (delivery := session.accept(entry)) is not None
        )
        if len(entries) < BACKLOG_PAGE:
            return deliveries


async def _snapshot(
    subscription: Subscription, session: WatchSession, store: OrderStore
) -> list[Delivery]:
    """Where the feed ends now, then the orders as they are: a change published in between
    arrives live as well, and the session drops it by version."""
    session.position = await subscription.position()
    if session.order_id is not None:
        current = await store.get(session.order_id)
        orders: Sequence[Order] = [] if current is None else [current]
    else:
        orders = await store.recent(session.user_id, SNAPSHOT_LIMIT)
    return session.snapshot(orders)


async def _live(
    item: FeedEntry | FeedReset, session: WatchSession, store: OrderStore
) -> list[Delivery]:
    """A live entry (after any versions of its order that went missing before it), or, after
    the feed's store was away, whatever the order history recorded meanwhile."""
    if isinstance(item, FeedReset):
        session.rebase(item.epoch)
        history = await store.status_history(
            [session.user_id], since=item.since, order_id=session.order_id
        )
        return session.fill(history)
    deliveries: list[Delivery] = []
    gap = session.missing_before(item)
    if gap is not None:
        gap_order, after, before = gap
        history = await store.status_history(
            [session.user_id], order_id=gap_order, versions=(after, before)
        )
        deliveries.extend(session.fill(history))
    delivery = session.accept(item)
    if delivery is not None:
        deliveries.append(delivery)
    return deliveries
