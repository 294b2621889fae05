"""The per-user feed of the bridge against a stand-in order feed: one shared subscription per
watched user, fan-out, and the cursor hand-off (nothing missed, nothing repeated)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from functools import partial

from ordermesh.order.v1 import order_pb2

from gateway.auth import Grant
from gateway.closecodes import CloseCode
from gateway.feed import FeedSettings, History, Hub, Session
from gateway.messages import FeedEntry
from services.common.identity import Principal, Role, Tier
from tests.unit.gateway_harness import FakeOrderFeed, cursor_at

S = order_pb2.OrderStatus
LIFECYCLE = (S.ORDER_STATUS_PENDING, S.ORDER_STATUS_VALIDATED, S.ORDER_STATUS_PAID,
             S.ORDER_STATUS_FULFILLED, S.ORDER_STATUS_SHIPPED)  # fmt: skip
USER = "user-1"
FAST = FeedSettings(upstream_grace_seconds=0.5, backoff_initial=0.01, backoff_max=0.05)


def grant(user_id: str = USER, *, expires_in: float = 900, token: str = "t") -> Grant:
    principal = Principal(user_id, f"{user_id}@example.com", Role.USER, Tier.FREE)
    return Grant(principal, f"{token}-{user_id}", time.time() + expires_in)


def session(name: str, *, cursor: str = "", queue: int = 1000, g: Grant | None = None) -> Session:
    return Session(name, g or grant(), cursor, queue_size=queue)


def received(s: Session, *, heartbeats: bool = False) -> list[dict[str, object]]:
    """Everything queued for ``s`` so far (taken), then its close if it was ended; without
    the heartbeat that marks the socket live unless ``heartbeats``. Each live socket queues
    one such heartbeat, so a socket with n updates queued has n + 1 items."""
    out: list[dict[str, object]] = [json.loads(text) for text in s.take()]
    if s.ended is not None:
        out.append({"type": "close", "code": int(s.ended.code)})
    return [m for m in out if heartbeats or m["type"] != "heartbeat"]


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    """Bounded polling for a state the event loop reaches by itself."""
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(0.01)


def versions(messages: list[dict[str, object]], order_id: str) -> list[object]:
    return [m["version"] for m in messages if m.get("order_id") == order_id]


async def walk(
    feed: FakeOrderFeed,
    order_id: str,
    statuses: tuple[order_pb2.OrderStatus.ValueType, ...],
    start: int = 1,
) -> list[str]:
    return [
        await feed.update(USER, order_id, status, start + i) for i, status in enumerate(statuses)
    ]


async def test_the_first_socket_gets_a_snapshot_then_every_update_once() -> None:
    upstream = FakeOrderFeed()
    await walk(upstream, "o1", LIFECYCLE[:2])
    hub = Hub(upstream, FAST)
    first = session("a")
    feed = hub.join(first, USER, "")
    await eventually(lambda: feed.streaming and feed.position is not None)
    await walk(upstream, "o1", LIFECYCLE[2:], start=3)
    await eventually(lambda: first.queued >= 5)
    with_mark = received(first, heartbeats=True)
    assert with_mark[1] == {"type": "heartbeat", "status": "alive", "cursor": cursor_at(2)}
    got = [m for m in with_mark if m["type"] != "heartbeat"]
    assert [m["version"] for m in got] == [2, 3, 4, 5]
    assert got[0]["snapshot"] is True and "snapshot" not in got[1]
    assert [m["status"] for m in got] == ["validated", "paid", "fulfilled", "shipped"]
    assert upstream.opened == [(USER, "")]
    await hub.close()


async def test_sockets_of_one_user_share_one_subscription() -> None:
    upstream = FakeOrderFeed()
    hub = Hub(upstream, FAST)
    sockets = [session(str(n)) for n in range(4)]
    feed = hub.join(sockets[0], USER, "")
    await eventually(lambda: feed.position is not None)
    for s in sockets[1:]:
        hub.join(s, USER, "")
    await eventually(lambda: feed.catching_up == 0)
    await walk(upstream, "o1", LIFECYCLE)
    await eventually(lambda: all(s.queued == 6 for s in sockets))
    await eventually(lambda: upstream.open_streams == 1)
    for s in sockets:
        assert versions(received(s), "o1") == [1, 2, 3, 4, 5]
    assert hub.counters() == {
        "sockets": 4,
        "watched_users": 1,
        "subscriptions_streaming": 1,
        "catching_up": 0,
    }
    await hub.close()


async def test_a_socket_with_a_cursor_gets_what_followed_it_then_the_live_tail() -> None:
    upstream = FakeOrderFeed()
    hub = Hub(upstream, FAST)
    first = session("a")
    feed = hub.join(first, USER, "")
    cursors = await walk(upstream, "o1", LIFECYCLE[:3])
    await eventually(lambda: feed.position == cursors[-1])
    resumed = session("b", cursor=cursors[0])
    hub.join(resumed, USER, cursors[0])
    await eventually(lambda: feed.catching_up == 0)
    await walk(upstream, "o1", LIFECYCLE[3:], start=4)
    await eventually(lambda: resumed.queued == 5)
    assert versions(received(resumed), "o1") == [2, 3, 4, 5]
    await eventually(lambda: upstream.open_streams == 1)
    await hub.close()


async def test_the_only_socket_resuming_gets_no_snapshot_and_no_repeat() -> None:
    upstream = FakeOrderFeed()
    cursors = await walk(upstream, "o1", LIFECYCLE[:2])
    await walk(upstream, "o2", LIFECYCLE[:1])
    hub = Hub(upstream, FAST)
    resumed = session("a", cursor=cursors[0])
    feed = hub.join(resumed, USER, cursors[0])
    await eventually(lambda: feed.catching_up == 0)
    await walk(upstream, "o1", LIFECYCLE[2:], start=3)
    await eventually(lambda: resumed.queued == 6)
    got = received(resumed)
    assert [(m["order_id"], m["version"]) for m in got] == [
        ("o1", 2), ("o2", 1), ("o1", 3), ("o1", 4), ("o1", 5),
    ]  # fmt: skip
    assert not any(m.get("snapshot") for m in got)
    await hub.close()


async def test_no_socket_splices_at_a_bookmark_its_snapshot_ran_ahead_of() -> None:
    """The shared subscription's snapshot may state an order at a version newer than the
    bookmark that follows it (a change made while the snapshot was read); the stream then
    drops that change. A socket catching up must not be handed over at that bookmark."""
    upstream = FakeOrderFeed(heartbeat_seconds=0.3)
    cursors = await walk(upstream, "o1", LIFECYCLE[:3])
    late: list[str] = []

    async def change_while_snapshotting() -> None:
        late.append(await upstream.update(USER, "o1", LIFECYCLE[3], 4))

    upstream.before_snapshot = change_while_snapshotting
    hub = Hub(upstream, FAST)
    first = session("first")
    feed = hub.join(first, USER, "")
    await eventually(lambda: feed.position == cursors[-1])
    resumed = session("resumed", cursor=cursors[1])
    hub.join(resumed, USER, cursors[1])
    await eventually(lambda: feed.catching_up == 0)
    await eventually(lambda: resumed.queued == 3)
    assert [(m["version"], m["cursor"]) for m in received(resumed)] == [
        (3, cursors[2]),
        (4, late[0]),
    ]
    assert [(m["version"], m.get("snapshot")) for m in received(first)] == [(4, True)]
    await hub.close()


async def test_a_catch_up_bookmark_proves_a_snapshot_bookmark_safe() -> None:
    """Without a change ahead of the shared snapshot, the hand-off happens at once (on the
    catch-up's own bookmark), not at the next idle heartbeat of the shared subscription."""
    upstream = FakeOrderFeed(heartbeat_seconds=60)
    cursors = await walk(upstream, "o1", LIFECYCLE[:3])
    hub = Hub(upstream, FAST)
    feed = hub.join(session("first"), USER, "")
    await eventually(lambda: feed.position == cursors[-1])
    resumed = session("resumed", cursor=cursors[0])
    hub.join(resumed, USER, cursors[0])
    await eventually(lambda: feed.catching_up == 0, within=2)
    await walk(upstream, "o1", LIFECYCLE[3:], start=4)
    await eventually(lambda: resumed.queued == 5)
    assert versions(received(resumed), "o1") == [2, 3, 4, 5]
    await hub.close()


async def test_updates_racing_the_hand_off_arrive_once_and_in_order() -> None:
    """Sockets join with every cursor of a busy feed while updates keep flowing: each gets
    exactly the updates after its cursor, in feed order."""
    upstream = FakeOrderFeed()
    hub = Hub(upstream, FAST)
    anchor = session("anchor")
    feed = hub.join(anchor, USER, "")
    await eventually(lambda: feed.position is not None)
    all_cursors: list[str] = []
    joined: list[tuple[Session, int]] = []
    for round_ in range(12):
        order_id = f"o{round_}"
        for version, status in enumerate(LIFECYCLE, start=1):
            all_cursors.append(await upstream.update(USER, order_id, status, version))
            if version % 2 == 0:
                start = max(0, len(all_cursors) - 3)
                s = session(f"s{round_}-{version}", cursor=all_cursors[start])
                hub.join(s, USER, all_cursors[start])
                joined.append((s, start + 1))
            await asyncio.sleep(0)
    await eventually(lambda: feed.catching_up == 0)
    total = len(all_cursors)
    for s, first in joined:
        expected = total - first + 1
        await eventually(partial(lambda s, n: s.queued == n, s, expected))
        got = [m["cursor"] for m in received(s)]
        assert got == all_cursors[first:], s.id
    await eventually(lambda: upstream.open_streams == 1)
    await hub.close()


async def test_a_trimmed_cursor_yields_a_snapshot_then_the_tail() -> None:
    upstream = FakeOrderFeed()
    cursors = await walk(upstream, "o1", LIFECYCLE[:3])
    upstream.trim(USER, cursors[1])
    hub = Hub(upstream, FAST)
    s = session("a", cursor=cursors[0])
    feed = hub.join(s, USER, cursors[0])
    await eventually(lambda: feed.catching_up == 0)
    await walk(upstream, "o1", LIFECYCLE[3:], start=4)
    await eventually(lambda: s.queued == 4)
    got = received(s)
    assert [(m["version"], m.get("snapshot", False)) for m in got] == [
        (3, True),
        (4, False),
        (5, False),
    ]
    await hub.close()


async def test_a_slow_socket_is_dropped_without_holding_up_the_others() -> None:
    upstream = FakeOrderFeed()
    hub = Hub(upstream, FAST)
    slow = session("slow", queue=3)
    fast = session("fast")
    feed = hub.join(slow, USER, "")
    await eventually(lambda: feed.position is not None)
    hub.join(fast, USER, "")
    await eventually(lambda: feed.catching_up == 0)
    await walk(upstream, "o1", LIFECYCLE)
    await eventually(lambda: fast.queued == 6)
    assert slow.ended is not None and slow.ended.code is CloseCode.SLOW_CONSUMER
    assert received(slow) == [{"type": "close", "code": 4006}]
    assert versions(received(fast), "o1") == [1, 2, 3, 4, 5]
    await hub.close()


async def test_a_short_outage_is_invisible_and_loses_nothing() -> None:
    upstream = FakeOrderFeed(heartbeat_seconds=0.05)
    hub = Hub(upstream, FeedSettings(upstream_grace_seconds=5, backoff_initial=0.01))
    s = session("a")
    feed = hub.join(s, USER, "")
    await eventually(lambda: feed.position is not None)
    cursors = await walk(upstream, "o1", LIFECYCLE[:2])
    await eventually(lambda: feed.position == cursors[-1])
    upstream.failing = True
    await eventually(lambda: not feed.streaming)
    await walk(upstream, "o1", LIFECYCLE[2:], start=3)
    upstream.failing = False
    await eventually(lambda: s.queued >= 6)
    assert versions(received(s), "o1") == [1, 2, 3, 4, 5]
    assert upstream.opened[-1] == (USER, cursors[-1])
    assert s.ended is None
    await hub.close()


async def test_a_long_outage_closes_the_sockets_with_upstream_unavailable() -> None:
    upstream = FakeOrderFeed(heartbeat_seconds=0.05)
    hub = Hub(upstream, FAST)
    s = session("a")
    feed = hub.join(s, USER, "")
    await eventually(lambda: feed.streaming)
    upstream.failing = True
    await eventually(lambda: s.ended is not None)
    assert s.ended is not None and s.ended.code is CloseCode.UPSTREAM_UNAVAILABLE
    await hub.close()


async def test_reopening_uses_a_valid_token_or_closes_with_token_expired() -> None:
    upstream = FakeOrderFeed(heartbeat_seconds=0.05)
    hub = Hub(upstream, FAST)
    fresh = session("fresh", g=grant(token="fresh"))
    feed = hub.join(fresh, USER, "")
    await eventually(lambda: feed.streaming)
    # Valid for half a second more (Grant.valid keeps a 5 s margin).
    expiring = session("expiring", g=grant(token="old", expires_in=5.5))
    hub.join(expiring, USER, "")
    await eventually(lambda: feed.catching_up == 0)
    hub.leave(fresh, feed)
    await asyncio.sleep(0.6)
    upstream.failing = True
    await eventually(lambda: not feed.streaming)
    upstream.failing = False
    await eventually(lambda: expiring.ended is not None)
    assert expiring.ended is not None and expiring.ended.code is CloseCode.TOKEN_EXPIRED
    await hub.close()


def test_history_splices_after_a_recorded_position_or_the_base() -> None:
    history = History(limit=3)
    assert history.after("x") is None
    history.start("base")
    a, b = FeedEntry("p1", "o", 1, "{}"), FeedEntry("p2")
    history.record(a)
    history.record(b)
    assert history.after("base") == [a, b]
    assert history.after("p1") == [b]
    assert history.after("p2") == []
    assert history.after("p0") is None
    history.record(FeedEntry("p3"))
    history.record(FeedEntry("p4"))
    assert history.after("base") is None  # fell out of the window
    assert history.after("p1") is None
    assert history.after("p3") is not None
    history.stop()
    assert history.after("p3") is None and len(history) == 0


def test_entries_sharing_a_position_are_all_handed_over() -> None:
    history = History(limit=10)
    history.start(None)
    live, filled, nxt = (
        FeedEntry("p1", "o", 1, "{}"),
        FeedEntry("p1", "o", 2, "{}"),
        FeedEntry("p2"),
    )
    for entry in (live, filled, nxt):
        history.record(entry)
    assert history.after("p1") == [filled, nxt]


def test_snapshot_entries_are_states_not_positions() -> None:
    history = History(limit=10)
    history.start(None)
    state = FeedEntry("c-1", "o", 3, "{}", snapshot=True)
    history.record(state)
    assert history.after("c-1") is None


def test_a_session_never_sends_an_order_version_twice_or_backwards() -> None:
    s = session("a")
    for version in (1, 2, 2, 1, 3):
        s.deliver(FeedEntry(cursor_at(version), "o", version, json.dumps({"v": version})))
    s.deliver(FeedEntry("c-9"))
    s.deliver(FeedEntry("c-10"))
    assert received(s, heartbeats=True) == [
        {"v": 1}, {"v": 2}, {"v": 3},
        {"type": "heartbeat", "status": "alive", "cursor": "c-9"},
    ]  # fmt: skip
    assert s.position == "c-10"
