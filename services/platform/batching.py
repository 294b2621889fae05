"""Lookups by key that arrive together are answered by one fetch.

A busy server handles many reads at once, each of which would otherwise check out a pooled
connection and make its own round trip. :class:`BatchedLookup` runs at most
``max_in_flight`` fetches at a time; the lookups that arrive while they are under way wait
and are answered together by the next fetch, so under load one round trip serves many reads,
and an idle server still starts a fetch on the next turn of the event loop.

One fetch at a time is the default, and what the order store uses: measured with 32
concurrent GetOrder clients, one fetch in flight gathered about 4 reads per query and cut the
server's CPU per read by about a third, while with two in flight the batches stayed near 1.3
reads and cost more than they saved.

A fetch starts after every lookup it answers was asked, never before: a lookup sees
everything committed before it was made, as a fetch of its own would. A failed fetch fails
each of its lookups with its error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Fetch = Callable[[Sequence[K]], Awaitable[Mapping[K, V]]]


class BatchedLookup(Generic[K, V]):
    def __init__(self, fetch: Fetch[K, V], *, max_in_flight: int = 1, max_keys: int = 256) -> None:
        if max_in_flight < 1 or max_keys < 1:
            raise ValueError("max_in_flight and max_keys must be positive")
        self._fetch = fetch
        self._max_in_flight = max_in_flight
        self._max_keys = max_keys
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._start_scheduled = False

    async def get(self, key: K) -> V | None:
        """The value of ``key``, or None if the fetch did not find it."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        self._schedule_start()
        return await future

    @property
    def fetches_in_flight(self) -> int:
        return len(self._in_flight)

    def _schedule_start(self) -> None:
        if self._waiting and not self._start_scheduled and self._has_room():
            self._start_scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _has_room(self) -> bool:
        return len(self._in_flight) < self._max_in_flight

    def _start(self) -> None:
        self._start_scheduled = False
        if not self._waiting or not self._has_room():
            return
        batch: dict[K, list[asyncio.Future[V | None]]] = {}
        for key in list(self._waiting)[: self._max_keys]:
            batch[key] = self._waiting.pop(key)
        task = asyncio.get_running_loop().create_task(self._answer(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._finished)
        self._schedule_start()

    async def _answer(self, batch: dict[K, list[asyncio.Future[V | None]]]) -> None:
        try:
            found = await self._fetch(list(batch))
        except Exception as error:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            return
        except BaseException:
            for futures in batch.values():
                for future in futures:
                    future.cancel()
            raise
        for key, futures in batch.items():
            value = found.get(key)
            for future in futures:
                if not future.done():
                    future.set_result(value)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._schedule_start()
