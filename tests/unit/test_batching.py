"""Lookups answered together (services/platform/batching.py): one fetch for the lookups
that arrive together, never a fetch that started before a lookup was asked, a bounded number
of fetches at once, and failures and cancellations confined to their own lookups."""

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from services.platform.batching import BatchedLookup


class Store:
    """Values by key, read when a fetch starts (as a query's snapshot is); each fetch then
    waits until the test releases it."""

    def __init__(self, values: Mapping[str, int]) -> None:
        self.values = dict(values)
        self.fetches: list[list[str]] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()
        self.release.set()
        self.failure: Exception | None = None

    async def fetch(self, keys: Sequence[str]) -> dict[str, int]:
        self.fetches.append(list(keys))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            found = {key: self.values[key] for key in keys if key in self.values}
            await asyncio.sleep(0)
            await self.release.wait()
            if self.failure is not None:
                raise self.failure
            return found
        finally:
            self.running -= 1


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_lookups_made_together_are_one_fetch() -> None:
    store = Store({"a": 1, "b": 2})
    lookup = BatchedLookup(store.fetch)
    assert list(await asyncio.gather(lookup.get("a"), lookup.get("b"), lookup.get("a"))) == [
        1,
        2,
        1,
    ]
    assert await lookup.get("missing") is None
    assert store.fetches == [["a", "b"], ["missing"]]


async def test_a_lookup_is_never_answered_by_a_fetch_that_started_before_it() -> None:
    store = Store({"a": 1})
    store.release.clear()
    lookup = BatchedLookup(store.fetch)
    first = asyncio.create_task(lookup.get("a"))
    await settle()
    assert store.fetches == [["a"]]
    store.values["a"] = 2  # committed after the first fetch started
    second = asyncio.create_task(lookup.get("a"))
    third = asyncio.create_task(lookup.get("a"))
    await settle()
    store.release.set()
    assert await first == 1
    assert (await second, await third) == (2, 2)
    assert store.fetches == [["a"], ["a"]]


@pytest.mark.parametrize("max_in_flight", [1, 3])
async def test_fetches_in_flight_are_bounded(max_in_flight: int) -> None:
    store = Store({str(n): n for n in range(50)})
    store.release.clear()
    lookup = BatchedLookup(store.fetch, max_in_flight=max_in_flight, max_keys=4)
    lookups = asyncio.gather(*(lookup.get(str(n)) for n in range(50)))
    await settle()
    assert store.running == lookup.fetches_in_flight == max_in_flight
    store.release.set()
    assert list(await lookups) == list(range(50))
    assert store.most_running == max_in_flight
    assert all(len(keys) <= 4 for keys in store.fetches)
    assert sorted(key for keys in store.fetches for key in keys) == sorted(map(str, range(50)))
    assert lookup.fetches_in_flight == 0


async def test_a_failed_fetch_fails_its_lookups_only() -> None:
    store = Store({"a": 1, "b": 2})
    lookup = BatchedLookup(store.fetch)
    store.failure = ConnectionError("database away")
    results = await asyncio.gather(lookup.get("a"), lookup.get("b"), return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    store.failure = None
    assert await lookup.get("a") == 1


async def test_a_cancelled_lookup_leaves_the_others_answered() -> None:
    store = Store({"a": 1, "b": 2})
    store.release.clear()
    lookup = BatchedLookup(store.fetch)
    cancelled = asyncio.create_task(lookup.get("a"))
    kept = asyncio.create_task(lookup.get("b"))
    await settle()
    cancelled.cancel()
    await settle()
    store.release.set()
    assert await kept == 2
    assert cancelled.cancelled()


def test_bounds_must_be_positive() -> None:
    async def fetch(keys: Sequence[str]) -> dict[str, int]:
        return {}

    with pytest.raises(ValueError, match="positive"):
        BatchedLookup(fetch, max_in_flight=0)
