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
from gateway.messages import FeedEntry, heartbeat
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


class Reconnection:
    """Backoff between attempts to (re)open a stream, and whether it has been down for
    longer than the grace period."""

    def __init__(self, settings: FeedSettings, clock: Callable[[], float]) -> None:
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self._grace = settings.upstream_grace_seconds
        self._clock = clock
        self._down_since: float | None = None

    def connected(self) -> None:
        self._backoff.reset()
        self._down_since = None

    def failed(self) -> bool:
        """Records a failure; True once failures have lasted the grace period."""
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
        return now - self._down_since >= self._grace

    async def pause(self) -> None:
        await asyncio.sleep(self._backoff.next())


class Session:
    """One socket: what it was sent, and the bounded queue its writer drains.

    ``deliver`` never blocks: a socket whose queue is full is ended (slow consumer) rather
    than slowing the feed down for the others. Kept small: a list, and ``on_queued`` (called
    when something is queued) starts a writer only while there is something to write, so
    an idle socket holds no task and no future of its own."""

    __slots__ = (
        "_outbox",
        "ended",
        "grant",
        "id",
        "last_sent",
        "live",
        "on_queued",
        "position",
        "queue_size",
        "versions",
        "writer",
    )

    def __init__(self, socket_id: str, grant: Grant, cursor: str, queue_size: int) -> None:
        self.id = socket_id
        self.grant = grant
        self.position: str | None = cursor or None
        self.versions: dict[str, int] = {}
        self.queue_size = queue_size
        self._outbox: list[str] = []
        self.ended: Refusal | None = None
        self.live = False
        self.last_sent = time.monotonic()
        self.on_queued: Callable[[], None] | None = None
        self.writer: asyncio.Task[None] | None = None

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
        if entry.heartbeat:
            self.mark_live()

    def mark_live(self) -> None:
        """The backlog (or snapshot) has been sent: the first bookmark came, or the socket
        was handed to the shared subscription. Say so at once, with a heartbeat, so a client
        knows that from here on it misses nothing."""
        if not self.live:
            self.live = True
            self.send(heartbeat(self.position))

    def send(self, text: str) -> None:
        if self.ended is not None:
            return
        if len(self._outbox) >= self.queue_size:
            self.end(
                Refusal(CloseCode.SLOW_CONSUMER, "too slow: send queue full; reconnect with cursor")
            )
            return
        self._outbox.append(text)
        self._wake()

    def end(self, refusal: Refusal) -> None:
        """Closes the socket with ``refusal`` as soon as its writer sees it; what was still
        queued is dropped (the client resumes from its cursor)."""
        if self.ended is not None:
            return
        self.ended = refusal
        self._outbox.clear()
        self._wake()

    @property
    def queued(self) -> int:
        return len(self._outbox)

    def take(self) -> list[str]:
        """Everything queued, oldest first (the writer sends it in that order)."""
        items, self._outbox = self._outbox, []
        return items

    def _wake(self) -> None:
        if self.on_queued is not None:
            self.on_queued()


class History:
    """What the shared subscription delivered since the oldest pending catch-up began."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._entries: deque[tuple[int, FeedEntry]] = deque()
        self._index: dict[str, int] = {}
        self._seq = 0
        self._base: str | None = None
        self._overflowed = False
        self.recording = False

    def start(self, base: str | None) -> None:
        """Records from now on; ``base`` is the shared position now, if a socket may be
        handed over there (everything recorded comes after it)."""
        if not self.recording:
            self.recording = True
            self._base = base

    def stop(self) -> None:
        self.recording = False
        self._entries.clear()
        self._index.clear()
        self._base = None
        self._overflowed = False

    def allow(self, position: str) -> None:
        """``position`` (the current one) turned out to be a safe place for a hand-off."""
        if not self.recording or position == self._base or position in self._index:
            return
        for seq, entry in self._entries:
            if entry.is_position and entry.cursor == position:
                self._index[position] = seq
                return
        if self._base is None and not self._overflowed:
            # Recording began at this position, before it was known to be safe.
            self._base = position

    def record(self, entry: FeedEntry, *, spliceable: bool = True) -> None:
        """Keeps ``entry``; a socket may be handed over at its position if ``spliceable``."""
        if not self.recording:
            return
        self._seq += 1
        if len(self._entries) >= self._limit:
            seq, oldest = self._entries.popleft()
            if self._index.get(oldest.cursor) == seq:
                del self._index[oldest.cursor]
            self._base = None
            self._overflowed = True
        self._entries.append((self._seq, entry))
        if entry.is_position and spliceable:
            # The first entry at a position: several may share one (the updates the order
            # service fills in from history carry the position they follow), and a splice
            # must hand over all of them (the socket's version guard drops what it has).
            self._index.setdefault(entry.cursor, self._seq)

    def after(self, position: str) -> list[FeedEntry] | None:
        """The recorded entries after the first one at ``position``; None if it was not
        recorded."""
        if not self.recording:
            return None
        if position == self._base:
            return [entry for _, entry in self._entries]
        seq = self._index.get(position)
        if seq is not None:
            return [entry for number, entry in self._entries if number > seq]
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
        # Whether a socket may be handed over at ``position`` (see ``publish``), and how
        # many snapshot bookmarks (unsafe positions) the shared subscription has sent.
        self._spliceable = False
        self._after_snapshot = False
        self._unsafe_bookmarks = 0
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
        self.history.start(self.position if self._spliceable else None)
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
        session.mark_live()
        if session in self.sessions:
            self.live.add(session)

    # --- the shared subscription ------------------------------------------------------

    def publish(self, entry: FeedEntry) -> None:
        """One entry of the shared subscription, to every socket on it.

        The bookmark that ends a snapshot is no place to hand a socket over: the order
        service reads the snapshot after the bookmark's position, so a change made in between
        is stated in the snapshot (which a socket catching up never sees) and then dropped
        from the stream as already told. Any later position is safe: the service's position
        moves past a dropped change, so its next bookmark is past it too."""
        spliceable = False
        if entry.snapshot:
            self._after_snapshot = True
        elif entry.is_position:
            if entry.heartbeat and self._after_snapshot:
                self._after_snapshot = False
                self._unsafe_bookmarks += 1
            elif entry.cursor != self.position:
                spliceable = True
            else:
                # The same position again: an update filled in from history (it carries
                # the position it follows), or an idle heartbeat, which proves a snapshot
                # bookmark safe: a dropped change would have moved the position on.
                spliceable = self._spliceable or entry.heartbeat
            self.position = entry.cursor
            self._spliceable = spliceable
        self.history.record(entry, spliceable=spliceable)
        for session in self.live:
            session.deliver(entry)
        if self.waiting and entry.is_position and spliceable:
            met = [s for s, awaited in self.waiting.items() if awaited == entry.cursor]
            for session in met:
                self._go_live(session, ())

    def _prove_safe(self) -> None:
        """The shared position turned out to be a safe place for a hand-off."""
        self._spliceable = True
        if self.position is None:
            return
        self.history.allow(self.position)
        met = [s for s, awaited in self.waiting.items() if awaited == self.position]
        for session in met:
            self._go_live(session, self.history.after(self.position) or ())

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
        reconnection = Reconnection(self._settings, self._clock)
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
                        reconnection.connected()
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
                if reconnection.failed():
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
            await reconnection.pause()

    def _end_all(self, refusal: Refusal) -> None:
        for session in list(self.sessions):
            session.end(refusal)

    # --- catch-up -------------------------------------------------------------------------

    async def _catch_up(self, session: Session, cursor: str) -> None:
        reconnection = Reconnection(self._settings, self._clock)
        position = cursor
        while True:
            # A bookmark of this stream at the shared position proves that position safe
            # if the stream was opened after the shared subscription's unsafe bookmark: a
            # change the snapshot ran ahead with would be in this stream's position.
            unsafe_seen = None if self._spliceable else self._unsafe_bookmarks
            try:
                async for entry in self._source.watch(session.grant, self.user_id, position):
                    reconnection.connected()
                    session.deliver(entry)
                    if not entry.is_position:
                        continue
                    position = entry.cursor
                    if (
                        entry.heartbeat
                        and entry.cursor == self.position
                        and not self._spliceable
                        and unsafe_seen == self._unsafe_bookmarks
                    ):
                        self._prove_safe()
                        if session not in self._catch_ups:
                            return
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
                if reconnection.failed():
                    log.warning(
                        "catch-up gave up: order service unavailable",
                        extra={"user_id": self.user_id, "error": str(error)},
                    )
                    self._finish_catch_up(session)
                    session.end(Refusal(CloseCode.UPSTREAM_UNAVAILABLE, UPSTREAM_REASON))
                    return
            await reconnection.pause()


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
