"""What the handlers need from the outside world; adapters/ implements it for production
and the unit tests implement it with fakes."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from services.auth.domain.model import (
    IssuedRefreshToken,
    NewUser,
    PublicKey,
    RefreshTokenRecord,
    SigningKeyInfo,
    TokenPair,
    User,
)
from services.common.identity import Role, Tier


class UserRepository(Protocol):
    async def add(self, user: NewUser) -> User | None:
        """Stores the user; None if the email is taken."""

    async def by_email(self, email: str) -> User | None: ...

    async def by_id(self, user_id: str) -> User | None: ...

    async def set_password_hash(self, user_id: str, password_hash: str) -> None: ...

    async def set_tier(self, email: str, tier: Tier) -> Tier | None:
        """Sets the tier of the account with this email; its tier before, None if there is
        no such account."""

    async def set_role(self, email: str, role: Role) -> Role | None:
        """Sets the role of the account with this email; its role before, None if there is
        no such account."""


class LoginThrottle(Protocol):
    async def admit(self, email: str) -> None:
        """Counts a login attempt for the (normalised) ``email``, whatever address it comes
        from. Raises ResourceExhausted when the account has had too many attempts lately,
        DependencyUnavailable when that cannot be told right now (logins then fail closed)."""


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


class RefreshTokenStore(Protocol):
    """The refresh tokens handed out, by token id, grouped in families (one per login)."""

    async def start_family(
        self, token: IssuedRefreshToken, *, family_id: str, user_id: str
    ) -> None:
        """Remembers the first token of a new family."""

    async def spend(
        self, token_id: str, successor: IssuedRefreshToken, *, at: datetime
    ) -> RefreshTokenRecord | None:
        """In one atomic step: marks the token used and adds `successor` to its family, if
        the token is not used, not revoked and its family not revoked. Returns the spent
        token, or None when it could not be spent (unknown, used, revoked): of concurrent
        calls with one token, at most one succeeds."""

    async def find(self, token_id: str) -> RefreshTokenRecord | None: ...

    async def revoke_family(self, family_id: str, *, at: datetime) -> None:
        """Revokes every token of the family; a token a concurrent `spend` adds to it later
        can never be spent either."""


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
