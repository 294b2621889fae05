"""What callers ask the auth service to do."""

from dataclasses import dataclass, field
from datetime import timedelta

from services.common.identity import Role, Tier


@dataclass(frozen=True, slots=True)
class RegisterUser:
    email: str
    password: str = field(repr=False)
    full_name: str
    phone: str = ""
    role: Role = Role.USER


@dataclass(frozen=True, slots=True)
class Login:
    email: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RefreshTokens:
    refresh_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Logout:
    refresh_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RotateSigningKey:
    """Publish a new key, wait `publish_delay` so every JWKS cache has seen it, make it the
    signing key, and retire keys superseded longer ago than `token_lifetime` (every token
    they signed has expired by then)."""

    publish_delay: timedelta
    token_lifetime: timedelta


@dataclass(frozen=True, slots=True)
class ChangeTier:
    """An operator moves an account to another tier; its next token carries it."""

    email: str
    tier: Tier


@dataclass(frozen=True, slots=True)
class ChangeRole:
    """An operator gives an account another role; its next token carries it."""

    email: str
    role: Role
