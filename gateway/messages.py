"""What travels on the sockets: the original system's JSON messages, extended compatibly.

An order update (statuses lower-case words, times RFC 3339 in UTC)::

    {"type": "order.update", "order_id": "...", "status": "shipped", "message": "...",
     "version": 5, "timestamp": "2025-01-01T12:00:00.123456Z", "cursor": "...",
     "data": {"tracking_number": "...", "carrier": "...", "estimated_delivery": "..."}}

``data`` always has its three keys (null until the order ships); ``"snapshot": true`` marks
the current state of an order sent instead of its history (a first connection, or a cursor
too old to resume from). Idle sockets get ``{"type": "heartbeat", "status": "alive"}`` (with
the socket's ``cursor`` once it has one: resuming from it skips nothing). A client's ``ping``
(the text ``ping`` or ``{"type": "ping"}``) is answered with ``{"type": "pong"}``.

Each upstream message is encoded once, whatever the number of sockets it goes to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from ordermesh.order.v1 import order_pb2

_STATUS_PREFIX = "ORDER_STATUS_"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

PONG = _ENCODER.encode({"type": "pong"})
HEARTBEAT = _ENCODER.encode({"type": "heartbeat", "status": "alive"})


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One message of a WatchOrders stream, translated: an order update (``text`` is what the
    sockets get) or a heartbeat bookmark (``text`` is None). ``cursor`` is a position in the
    watched user's feed, except on snapshot entries, which are states, not positions."""

    cursor: str
    order_id: str = ""
    version: int = 0
    text: str | None = None
    snapshot: bool = False

    @property
    def heartbeat(self) -> bool:
        return self.text is None

    @property
    def is_position(self) -> bool:
        """Whether ``cursor`` names a position both streams of a user share."""
        return not self.snapshot and bool(self.cursor)


def status_word(status: order_pb2.OrderStatus.ValueType) -> str:
    """``ORDER_STATUS_SHIPPED`` -> ``shipped``."""
    return order_pb2.OrderStatus.Name(status).removeprefix(_STATUS_PREFIX).lower()


def _time(value: timestamp_pb2.Timestamp, present: bool) -> str | None:
    if not present:
        return None
    moment = datetime.fromtimestamp(value.seconds, UTC).replace(microsecond=value.nanos // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def entry_from_response(response: order_pb2.WatchOrdersResponse) -> FeedEntry:
    if response.heartbeat:
        return FeedEntry(cursor=response.cursor)
    message: dict[str, object] = {
        "type": "order.update",
        "order_id": response.order_id,
        "status": status_word(response.status),
        "message": response.message,
        "version": response.version,
        "timestamp": _time(response.occurred_at, response.HasField("occurred_at")),
        "cursor": response.cursor,
        "data": {
            "tracking_number": response.tracking_number or None,
            "carrier": response.carrier or None,
            "estimated_delivery": _time(
                response.estimated_delivery, response.HasField("estimated_delivery")
            ),
        },
    }
    if response.snapshot:
        message["snapshot"] = True
    return FeedEntry(
        cursor=response.cursor,
        order_id=response.order_id,
        version=response.version,
        text=_ENCODER.encode(message),
        snapshot=response.snapshot,
    )


def heartbeat(cursor: str | None) -> str:
    if not cursor:
        return HEARTBEAT
    return _ENCODER.encode({"type": "heartbeat", "status": "alive", "cursor": cursor})


def is_ping(data: str | bytes) -> bool:
    """Whether a client message is a ping: the text ``ping`` or ``{"type": "ping"}``."""
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            return False
    text = data.strip()
    if text.lower() == "ping":
        return True
    if not text.startswith("{"):
        return False
    try:
        parsed = json.loads(text)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("type") == "ping"
