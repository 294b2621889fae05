"""Real argon2id whose work a test releases, so the bound on queued hashes is tested without
timing: while armed, every hash and verification waits in its worker thread until released."""

import threading
from typing import Literal

import argon2


class GatedArgon2(argon2.PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.armed = False
        self.entered = threading.Event()
        self.released = threading.Event()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self._gate()
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self._gate()
        return super().verify(hash, password)

    def _gate(self) -> None:
        if self.armed:
            self.entered.set()
            assert self.released.wait(timeout=30), "the test never released the hasher"
