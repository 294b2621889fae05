"""What the handlers need from the outside world; adapters/ implements it for production
and the unit tests implement it with fakes."""

from collections.abc import Sequence
from typing import Any, Protocol

from services.auth.domain.model import NewUser, PublicKey, SigningKeyInfo, TokenPair, User


class UserRepository(Protocol):
    async def add(self, user: NewUser) -> User | None:
        """Stores the user; None if the email is taken."""

    async def by_email(self, email: str) -> User | None: ...

    async def by_id(self, user_id: str) -> User | None: ...

    async def set_password_hash(self, user_id: str, password_hash: str) -> None: ...


class PasswordHasher(Protocol):
    @property
    def dummy_hash(self) -> str:
        """A hash of a random password with the current parameters, to verify against when
        the account does not exist."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password: str, password_hash: str) -> bool: ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class TokenIssuer(Protocol):
    async def issue(self, user: User) -> TokenPair: ...


class TokenVerifier(Protocol):
    async def claims(self, token: str, *, expected_type: str) -> dict[str, Any]:
        """The verified claims; raises Unauthenticated for any invalid token."""


class SigningKeyStore(Protocol):
    async def published(self) -> list[PublicKey]:
        """Every key that is not retired, creating the first signing key if there is none."""

    async def pending_or_new(self) -> SigningKeyInfo:
        """The key waiting to be activated, created if there is none."""

    async def activate(self, kid: str) -> None: ...

    async def all(self) -> list[SigningKeyInfo]: ...

    async def retire(self, kids: Sequence[str]) -> None: ...
