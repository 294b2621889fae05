"""Accounts, token pairs and signing keys as the auth service reasons about them."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from services.common.identity import Role, Tier


class TokenKind(StrEnum):
    """The `typ` claim: an access token authorises calls, a refresh token only renews."""

    ACCESS = "access"
    REFRESH = "refresh"


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    email: str
    full_name: str
    phone: str | None
    tier: Tier
    role: Role
    created_at: datetime
    password_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NewUser:
    user_id: str
    email: str
    full_name: str
    phone: str | None
    tier: Tier
    role: Role
    password_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AccessChange:
    """An operator's change of an account's tier or role: the value before and after."""

    email: str
    attribute: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class Registration:
    """A registration request that passed validation, with its email normalised."""

    email: str
    full_name: str
    phone: str | None


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    issuer: str
    audience: str
    access_ttl: timedelta
    refresh_ttl: timedelta


@dataclass(frozen=True, slots=True)
class IssuedRefreshToken:
    """What the server keeps of a refresh token it hands out: its id (the `jti` claim) and
    lifetime."""

    token_id: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in_seconds: int
    refresh: IssuedRefreshToken


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    """A refresh token as the server remembers it. A login starts a family; each refresh
    spends one token of the family and adds its successor. A token is spent at most once, so
    one presented again was copied: its whole family is revoked (as logout revokes it)."""

    token_id: str
    family_id: str
    user_id: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SigningKeyInfo:
    """A signing key's lifecycle: pending (published, not signing) until activated; the most
    recently activated key signs; a retired key is neither published nor used."""

    kid: str
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An RSA public key in JWK terms: modulus and exponent, base64url without padding."""

    kid: str
    n: str
    e: str


@dataclass(frozen=True, slots=True)
class RotationOutcome:
    activated_kid: str
    retired_kids: tuple[str, ...]
