"""One ``WatchOrders`` subscription per watched user per bridge process, fanned out to that
user's sockets, with a hand-off that lets every socket start from its own cursor and still
miss nothing and repeat nothing.

The shared subscription (one per watched user, opened with the token of one of the user's
sockets) is what every socket ends up on. A socket joins it in one of two ways:

- the socket that opens the subscription without a cursor is on it from the start (its
  snapshot is what that socket needs);
- every other socket first gets its own short catch-up stream, ``WatchOrders(cursor)`` with
  its own cursor and token, and is moved to the shared subscription at the first position
  the two streams have in common. Both streams are the same per-user feed, each in feed
  order, so a position (the cursor of an update, or of a heartbeat bookmark) seen on both
  splits the feed exactly: everything up to it came from the catch-up, everything after it
  comes from the shared subscription. Cursors are only ever compared for equality.

  While any socket catches up, the feed records what the shared subscription delivers, from
  the position it had when the socket joined (the *base*). Each position the catch-up
  forwards is looked up there: found, the socket gets the recorded entries after it and goes
  live. Not found (the shared stream is behind), the socket waits for that position on the
  shared stream, and goes live right after it. The catch-up keeps forwarding (and the
  awaited position moves) until the streams meet; idle streams meet at the next heartbeat
  bookmark at the latest, since both report the same current position.

Belt and braces: each socket remembers the last version it was sent of every order and never
gets an update of an order at or below it (versions increase by one with every change), so
no overlap between streams, snapshot or reconnection can show a client a status twice.

When the shared subscription breaks it is reopened from its last position with capped,
jittered backoff, using the freshest still-valid token among the user's sockets; a token the
order service refuses is set aside. With no valid token left, the user's sockets are closed
with 4003 (reconnect with a fresh token and the cursor). An outage longer than the grace
period closes them with 4007; shorter ones are invisible to clients.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.auth import Grant
from gateway.closecodes import CloseCode, Refusal
from gateway.messages import FeedEntry
from gateway.upstream import Rejected, Unavailable, WatchSource

log = logging.getLogger(__name__)

# Orders whose last sent version a socket remembers; past it the oldest are forgotten.
MAX_TRACKED_ORDERS = 4096
TOKEN_EXPIRED_REASON = "token expired: reconnect with a fresh token and your cursor"
UPSTREAM_REASON = "order service unavailable: retry later with your cursor"


@dataclass(frozen=True, slots=True)
class FeedSettings:
    send_queue_size: int = 256
    upstream_grace_seconds: float = 20.0
    history_limit: int = 1024
    backoff_initial: float = 0.2
    backoff_max: float = 5.0


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._initial = initial
        self._maximum = maximum
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self._maximum, self._initial * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        return random.uniform(ceiling / 2, ceiling)


class Session:
    """One socket: what it was sent, and the bounded queue its writer drains.

    ``deliver`` never blocks: a socket whose queue is full is ended (slow consumer) rather
    than slowing the feed down for the others."""

    __slots__ = ("ended", "grant", "id", "outbox", "position", "queue_size", "versions")

    def __init__(self, socket_id: str, grant: Grant, cursor: str, queue_size: int) -> None:
        self.id = socket_id
        self.grant = grant
        self.position: str | None = cursor or None
        self.versions: dict[str, int] = {}
        self.queue_size = queue_size
        self.outbox: asyncio.Queue[str | Refusal] = asyncio.Queue()
        self.ended: Refusal | None = None

    def deliver(self, entry: FeedEntry) -> None:
        if entry.text is not None:
            if entry.version <= self.versions.get(entry.order_id, 0):
                return
            if entry.order_id not in self.versions and len(self.versions) >= MAX_TRACKED_ORDERS:
                del self.versions[next(iter(self.versions))]
            self.versions[entry.order_id] = entry.version
            self.send(entry.text)
        if entry.is_position:
            self.position = entry.cursor

    def send(self, text: str) -> None:
        if self.ended is not None:
            return
        if self.outbox.qsize() >= self.queue_size:
            self.end(
                Refusal(CloseCode.SLOW_CONSUMER, "too slow: send queue full; reconnect with cursor")
            )
            return
        self.outbox.put_nowait(text)

    def end(self, refusal: Refusal) -> None:
        """Closes the socket with ``refusal`` as soon as its writer sees it; what was still
        queued is dropped (the client resumes from its cursor)."""
        if self.ended is not None:
            return
        self.ended = refusal
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.outbox.put_nowait(refusal)


class History:
    """What the shared subscription delivered since the oldest pending catch-up began."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._entries: deque[tuple[int, FeedEntry]] = deque()
        self._index: dict[str, int] = {}
        self._seq = 0
        self._base: str | None = None
        self.recording = False

    def start(self, base: str | None) -> None:
        if not self.recording:
            self.recording = True
            self._base = base

    def stop(self) -> None:
        self.recording = False
        self._entries.clear()
        self._index.clear()
        self._base = None

    def record(self, entry: FeedEntry) -> None:
        if not self.recording:
            return
        self._seq += 1
        if len(self._entries) >= self._limit:
            seq, oldest = self._entries.popleft()
            if self._index.get(oldest.cursor) == seq:
                del self._index[oldest.cursor]
            self._base = None
        self._entries.append((self._seq, entry))
        if entry.is_position:
            # The first entry at a position: several may share one (the updates the order
            # service fills in from history carry the position they follow), and a splice
            # must hand over all of them (the socket's version guard drops what it has).
            self._index.setdefault(entry.cursor, self._seq)

    def after(self, position: str) -> list[FeedEntry] | None:
        """The recorded entries after the first one at ``position``; None if it was not
        recorded."""
        if not self.recording:
            return None
        seq = self._index.get(position)
        if seq is not None:
            return [entry for number, entry in self._entries if number > seq]
        if position == self._base:
            return [entry for _, entry in self._entries]
        return None

    def __len__(self) -> int:
        return len(self._entries)


class UserFeed:
    """The shared subscription of one watched user and the sockets it feeds."""

    def __init__(
        self,
        user_id: str,
        source: WatchSource,
        settings: FeedSettings,
        on_empty: Callable[[UserFeed], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.user_id = user_id
        self._source = source
        self._settings = settings
        self._on_empty = on_empty
        self._clock = clock
        self.sessions: set[Session] = set()
        self.live: set[Session] = set()
        self.waiting: dict[Session, str] = {}
        self._catch_ups: dict[Session, asyncio.Task[None]] = {}
        self.history = History(settings.history_limit)
        self.position: str | None = None
        self.streaming = False
        self._refused_tokens: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # --- membership --------------------------------------------------------------------

    def join(self, session: Session, cursor: str) -> None:
        self.sessions.add(session)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run_shared(), name=f"feed {self.user_id}")
            if not cursor:
                self.live.add(session)
                return
        self.history.start(self.position)
        self._catch_ups[session] = asyncio.create_task(
            self._catch_up(session, cursor), name=f"catch-up {session.id}"
        )

    def leave(self, session: Session) -> None:
        self.sessions.discard(session)
        self.live.discard(session)
        self._refused_tokens.discard(session.grant.token)
        self._finish_catch_up(session)
        if not self.sessions:
            self.close()
            self._on_empty(self)

    def close(self) -> list[asyncio.Task[None]]:
        """Stops every stream of this feed; returns their tasks (cancelled)."""
        tasks = list(self._catch_ups.values())
        for session in list(self._catch_ups):
            self._finish_catch_up(session)
        if self._task is not None:
            tasks.append(self._task)
            self._task.cancel()
            self._task = None
        return tasks

    @property
    def catching_up(self) -> int:
        return len(self._catch_ups)

    def _finish_catch_up(self, session: Session) -> None:
        self.waiting.pop(session, None)
        task = self._catch_ups.pop(session, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if not self._catch_ups:
            self.history.stop()

    def _go_live(self, session: Session, tail: Iterable[FeedEntry]) -> None:
        self._finish_catch_up(session)
        for entry in tail:
            session.deliver(entry)
        if session in self.sessions:
            self.live.add(session)

    # --- the shared subscription ------------------------------------------------------

    def publish(self, entry: FeedEntry) -> None:
        """One entry of the shared subscription, to every socket on it."""
        if entry.is_position:
            self.position = entry.cursor
        self.history.record(entry)
        for session in self.live:
            session.deliver(entry)
        if self.waiting and entry.is_position:
            met = [s for s, awaited in self.waiting.items() if awaited == entry.cursor]
            for session in met:
                self._go_live(session, ())

    def _grant(self) -> Grant | None:
        """The freshest valid token among the user's sockets that was not refused."""
        now = time.time()
        usable = [
            s.grant
            for s in self.sessions
            if s.grant.token not in self._refused_tokens and s.grant.valid(now)
        ]
        return max(usable, key=lambda grant: grant.expires_at, default=None)

    async def _run_shared(self) -> None:
        try:
            await self._stream_shared()
        finally:
            self.streaming = False

    async def _stream_shared(self) -> None:
        backoff = Backoff(self._settings.backoff_initial, self._settings.backoff_max)
        down_since: float | None = None
        while self.sessions:
            grant = self._grant()
            if grant is None:
                log.info("feed closed: no valid token left", extra={"user_id": self.user_id})
                self._end_all(Refusal(CloseCode.TOKEN_EXPIRED, TOKEN_EXPIRED_REASON))
                return
            try:
                async for entry in self._source.watch(grant, self.user_id, self.position or ""):
                    if not self.streaming:
                        self.streaming = True
                        down_since = None
                        backoff.reset()
                    self.publish(entry)
            except Rejected as error:
                self.streaming = False
                if error.token_problem:
                    self._refused_tokens.add(grant.token)
                    continue
                log.warning("feed refused", extra={"user_id": self.user_id, "reason": str(error)})
                self._end_all(error.refusal)
                return
            except Unavailable as error:
                self.streaming = False
                now = self._clock()
                down_since = now if down_since is None else down_since
                if now - down_since >= self._settings.upstream_grace_seconds:
                    log.warning(
                        "feed closed: order service unavailable",
                        extra={"user_id": self.user_id, "error": str(error)},
                    )
                    self._end_all(Refusal(CloseCode.UPSTREAM_UNAVAILABLE, UPSTREAM_REASON))
                    return
                log.info(
                    "feed reconnecting",
                    extra={"user_id": self.user_id, "cursor": self.position, "error": str(error)},
                )
            await asyncio.sleep(backoff.next())

    def _end_all(self, refusal: Refusal) -> None:
        for session in list(self.sessions):
            session.end(refusal)

    # --- catch-up -------------------------------------------------------------------------

    async def _catch_up(self, session: Session, cursor: str) -> None:
        backoff = Backoff(self._settings.backoff_initial, self._settings.backoff_max)
        down_since: float | None = None
        position = cursor
        while True:
            try:
                async for entry in self._source.watch(session.grant, self.user_id, position):
                    down_since = None
                    session.deliver(entry)
                    if not entry.is_position:
                        continue
                    position = entry.cursor
                    tail = self.history.after(position)
                    if tail is not None:
                        self._go_live(session, tail)
                        return
                    self.waiting[session] = position
            except Rejected as error:
                self._finish_catch_up(session)
                session.end(error.refusal)
                return
            except Unavailable as error:
                now = self._clock()
                down_since = now if down_since is None else down_since
                if now - down_since >= self._settings.upstream_grace_seconds:
                    log.warning(
                        "catch-up gave up: order service unavailable",
                        extra={"user_id": self.user_id, "error": str(error)},
                    )
                    self._finish_catch_up(session)
                    session.end(Refusal(CloseCode.UPSTREAM_UNAVAILABLE, UPSTREAM_REASON))
                    return
            await asyncio.sleep(backoff.next())


class Hub:
    """Every watched user's feed in this process."""

    def __init__(self, source: WatchSource, settings: FeedSettings) -> None:
        self._source = source
        self._settings = settings
        self.feeds: dict[str, UserFeed] = {}
        self.sockets = 0

    def join(self, session: Session, user_id: str, cursor: str) -> UserFeed:
        feed = self.feeds.get(user_id)
        if feed is None:
            feed = UserFeed(user_id, self._source, self._settings, self._drop)
            self.feeds[user_id] = feed
        self.sockets += 1
        feed.join(session, cursor)
        return feed

    def leave(self, session: Session, feed: UserFeed) -> None:
        self.sockets -= 1
        feed.leave(session)

    def _drop(self, feed: UserFeed) -> None:
        if self.feeds.get(feed.user_id) is feed:
            del self.feeds[feed.user_id]

    def counters(self) -> dict[str, int]:
        feeds = self.feeds.values()
        return {
            "sockets": self.sockets,
            "watched_users": len(self.feeds),
            "subscriptions_streaming": sum(1 for feed in feeds if feed.streaming),
            "catching_up": sum(feed.catching_up for feed in feeds),
        }

    async def close(self) -> None:
        feeds = list(self.feeds.values())
        self.feeds.clear()
        tasks = [task for feed in feeds for task in feed.close()]
        await asyncio.gather(*tasks, return_exceptions=True)
