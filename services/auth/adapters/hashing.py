"""argon2id password hashing (argon2-cffi's RFC 9106 defaults), off the event loop.

Each hash takes about 0.1 s of CPU and 64 MiB of memory, so concurrent hashes are bounded:
a burst of logins queues instead of exhausting memory or starving the event loop's thread.
"""

import asyncio
import os
import secrets

import argon2


class Argon2PasswordHasher:
    def __init__(
        self, hasher: argon2.PasswordHasher | None = None, *, max_concurrent: int | None = None
    ) -> None:
        self._hasher = hasher or argon2.PasswordHasher()
        self._slots = asyncio.Semaphore(max_concurrent or os.cpu_count() or 1)
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    @property
    def dummy_hash(self) -> str:
        return self._dummy_hash

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password: str, password_hash: str) -> bool:
        async with self._slots:
            try:
                return await asyncio.to_thread(self._hasher.verify, password_hash, password)
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
