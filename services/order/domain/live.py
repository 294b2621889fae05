"""The live feed of order status changes, in domain terms: what a watcher is told when an
order moves, where in a user's feed an update sits (its cursor), and what one watch session
decides (is this update new to the watcher, is something missing before it). Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.common.errors import InvalidArgument
from services.order.domain.model import Order, OrderStatus

# What a status change says when the writer gave no reason of its own.
DEFAULT_MESSAGES: dict[OrderStatus, str] = {
    OrderStatus.PENDING: "order received",
    OrderStatus.VALIDATED: "order validated",
    OrderStatus.PAID: "payment captured",
    OrderStatus.FULFILLED: "stock allocated; handed to the warehouse",
    OrderStatus.SHIPPED: "shipped",
    OrderStatus.DELIVERED: "delivered",
    OrderStatus.FAILED: "order failed",
    OrderStatus.CANCELLED: "order cancelled",
}


def message_for(status: OrderStatus, reason: str) -> str:
    return reason or DEFAULT_MESSAGES[status]


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One status an order reached, with the order's version after reaching it."""

    order_id: str
    user_id: str
    status: OrderStatus
    version: int
    message: str
    occurred_at: datetime
    carrier: str = ""
    tracking_number: str = ""
    estimated_delivery: datetime | None = None

    @classmethod
    def of(cls, order: Order) -> StatusUpdate:
        """The order's current state as an update (a snapshot entry)."""
        shipped = order.status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED)
        return cls(
            order_id=order.order_id,
            user_id=order.user_id,
            status=order.status,
            version=order.version,
            message=message_for(order.status, order.status_reason),
            occurred_at=order.updated_at,
            carrier=order.carrier if shipped else "",
            tracking_number=order.tracking_number if shipped else "",
            estimated_delivery=order.estimated_delivery if shipped else None,
        )


_CURSOR = re.compile(r"([0-9a-f]{8,32})\.([0-9]{1,15})-([0-9]{1,15})")


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in one user's feed: the feed's epoch (a new epoch means the feed's store
    lost its history, so older positions mean nothing) and the entry's place in it."""

    epoch: str = field(compare=False)
    millis: int
    sequence: int

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _CURSOR.fullmatch(text)
        if match is None:
            raise InvalidArgument(
                "cursor is not one this service handed out; pass the cursor of the last"
                " update received, or none to start from now",
                field="cursor",
            )
        return cls(match[1], int(match[2]), int(match[3]))

    @classmethod
    def start(cls, epoch: str) -> Cursor:
        """Before the first entry of a feed."""
        return cls(epoch, 0, 0)

    def __str__(self) -> str:
        return f"{self.epoch}.{self.millis}-{self.sequence}"

    @property
    def entry_id(self) -> str:
        return f"{self.millis}-{self.sequence}"


@dataclass(frozen=True, slots=True)
class FeedEntry:
    cursor: Cursor
    update: StatusUpdate


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a watcher is sent: an update (``snapshot`` when it states where an order is
    rather than a change just made), or a heartbeat (``update`` is None) carrying the
    position the watcher has reached."""

    cursor: Cursor
    update: StatusUpdate | None = None
    snapshot: bool = False


@dataclass
class WatchSession:
    """What one watcher has been told: its position in the feed, and each order's last
    version and status. It decides what is new, what is a repeat, and where a gap is."""

    user_id: str
    order_id: str | None
    position: Cursor
    versions: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, OrderStatus] = field(default_factory=dict)

    def watches(self, update: StatusUpdate) -> bool:
        return update.user_id == self.user_id and self.order_id in (None, update.order_id)

    def snapshot(self, orders: Iterable[Order]) -> list[Delivery]:
        """The current state of ``orders``, oldest change first, as snapshot entries."""
        deliveries = []
        for order in sorted(orders, key=lambda order: (order.updated_at, order.order_id)):
            if self.order_id not in (None, order.order_id):
                continue
            update = StatusUpdate.of(order)
            self._remember(update)
            deliveries.append(Delivery(self.position, update, snapshot=True))
        return deliveries

    def missing_before(self, entry: FeedEntry) -> tuple[str, int, int] | None:
        """(order, after version, before version) when the entry's order skipped versions
        this watcher was told of: statuses that may have been lost on the way and are to be
        read from the order's history. None when nothing can be missing."""
        update = entry.update
        known = self.versions.get(update.order_id)
        if known is None or update.version <= known + 1:
            return None
        return update.order_id, known, update.version

    def accept(self, entry: FeedEntry) -> Delivery | None:
        """The delivery for a feed entry, or None for one the watcher already has (at or
        before its position) or does not watch."""
        if entry.cursor.epoch == self.position.epoch and entry.cursor <= self.position:
            return None
        self.position = entry.cursor
        return self._fresh(entry.update)

    def fill(self, updates: Sequence[StatusUpdate]) -> list[Delivery]:
        """Deliveries for statuses read from history (a gap), skipping what the watcher has
        and rows that changed no status (a metadata edit also gets a version)."""
        deliveries = []
        for update in sorted(updates, key=lambda u: (u.occurred_at, u.order_id, u.version)):
            delivery = self._fresh(update)
            if delivery is not None:
                deliveries.append(delivery)
        return deliveries

    def rebase(self, epoch: str) -> None:
        """The feed's store lost its history: positions start again in a new epoch."""
        if epoch != self.position.epoch:
            self.position = Cursor.start(epoch)

    def heartbeat(self) -> Delivery:
        return Delivery(self.position)

    def _fresh(self, update: StatusUpdate) -> Delivery | None:
        if not self.watches(update):
            return None
        known = self.versions.get(update.order_id)
        if known is not None and update.version <= known:
            return None
        if self.statuses.get(update.order_id) is update.status:
            # A later version with the same status: a metadata edit, not a status change.
            self.versions[update.order_id] = update.version
            return None
        self._remember(update)
        return Delivery(self.position, update)

    def _remember(self, update: StatusUpdate) -> None:
        self.versions[update.order_id] = update.version
        self.statuses[update.order_id] = update.status
