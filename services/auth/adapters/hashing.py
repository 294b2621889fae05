"""argon2id password hashing (argon2-cffi's RFC 9106 defaults), off the event loop.

Each hash takes about 0.1 s of CPU and 64 MiB of memory, so concurrent hashes are bounded,
and so is the queue in front of them: a burst of logins waits for a slot while at most
`max_queued` others wait, and past that is refused at once (ResourceExhausted, so 429 with
Retry-After) instead of piling up calls that hold memory and would time out anyway.
"""

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import argon2

from services.common.errors import ResourceExhausted

# A full queue drains in well under a second (max_queued / max_concurrent hashes of ~0.1 s).
RETRY_AFTER_SECONDS = 1


class Argon2PasswordHasher:
    def __init__(
        self,
        hasher: argon2.PasswordHasher | None = None,
        *,
        max_concurrent: int,
        max_queued: int,
    ) -> None:
        if max_concurrent < 1 or max_queued < 0:
            raise ValueError("max_concurrent must be at least 1 and max_queued not negative")
        self._hasher = hasher or argon2.PasswordHasher()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._capacity = max_concurrent + max_queued
        self._admitted = 0
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    @property
    def dummy_hash(self) -> str:
        return self._dummy_hash

    async def hash(self, password: str) -> str:
        async with self._slot():
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password: str, password_hash: str) -> bool:
        async with self._slot():
            try:
                return await asyncio.to_thread(self._hasher.verify, password_hash, password)
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """Admits the call if fewer than max_concurrent + max_queued are admitted (hashing or
        waiting for a slot); refuses it at once otherwise."""
        if self._admitted >= self._capacity:
            raise ResourceExhausted(
                "too many password checks in progress; retry shortly",
                retry_after_seconds=RETRY_AFTER_SECONDS,
            )
        self._admitted += 1
        try:
            async with self._slots:
                yield
        finally:
            self._admitted -= 1
