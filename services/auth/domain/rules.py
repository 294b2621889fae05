"""Validation of account data, the claims a token carries, and when signing keys retire."""

import itertools
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from services.auth.domain.commands import RegisterUser
from services.auth.domain.model import (
    Registration,
    SigningKeyInfo,
    TokenKind,
    TokenPolicy,
    User,
)
from services.common.errors import InvalidArgument, Unauthenticated

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
MAX_EMAIL_LENGTH = 254
MAX_FULL_NAME_LENGTH = 200
MAX_PHONE_LENGTH = 40

INVALID_CREDENTIALS = "invalid email or password"
UNKNOWN_REFRESH_TOKEN = "refresh token not recognised; log in again"
REFRESH_TOKEN_REUSED = (
    "refresh token already used or revoked; every token of its login is now revoked, log in again"
)

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


def normalise_email(email: str) -> str:
    return email.strip().lower()


def validate_registration(command: RegisterUser) -> Registration:
    email = normalise_email(command.email)
    if not email:
        raise InvalidArgument("email is required", field="email")
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        raise InvalidArgument("email must be a valid email address", field="email")
    if len(command.password) < MIN_PASSWORD_LENGTH:
        raise InvalidArgument(
            f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    if len(command.password) > MAX_PASSWORD_LENGTH:
        raise InvalidArgument(
            f"password must be at most {MAX_PASSWORD_LENGTH} characters", field="password"
        )
    full_name = command.full_name.strip()
    if not full_name:
        raise InvalidArgument("full_name is required", field="full_name")
    if len(full_name) > MAX_FULL_NAME_LENGTH:
        raise InvalidArgument(
            f"full_name must be at most {MAX_FULL_NAME_LENGTH} characters", field="full_name"
        )
    phone = command.phone.strip()
    if len(phone) > MAX_PHONE_LENGTH:
        raise InvalidArgument(f"phone must be at most {MAX_PHONE_LENGTH} characters", field="phone")
    return Registration(email=email, full_name=full_name, phone=phone or None)


def token_claims(
    user: User, kind: TokenKind, policy: TokenPolicy, *, issued_at: datetime, token_id: str
) -> dict[str, str | int]:
    ttl = policy.access_ttl if kind is TokenKind.ACCESS else policy.refresh_ttl
    issued = int(issued_at.timestamp())
    return {
        "iss": policy.issuer,
        "aud": policy.audience,
        "sub": user.user_id,
        "email": user.email,
        "tier": user.tier.value,
        "role": user.role.value,
        "iat": issued,
        "exp": issued + int(ttl.total_seconds()),
        "jti": token_id,
        "typ": kind.value,
    }


def refresh_token_id(claims: Mapping[str, object]) -> str:
    """The id (`jti`) under which the server remembers a verified refresh token."""
    token_id = claims.get("jti")
    if not isinstance(token_id, str) or not token_id:
        raise Unauthenticated(UNKNOWN_REFRESH_TOKEN)
    return token_id


def keys_to_retire(
    keys: Sequence[SigningKeyInfo], *, now: datetime, token_lifetime: timedelta
) -> list[str]:
    """Keys whose successor has been signing for longer than `token_lifetime`: nothing they
    signed is still valid, so they can leave the JWKS. The signing key and pending keys stay."""
    activated = sorted(
        (key for key in keys if key.activated_at is not None and key.retired_at is None),
        key=lambda key: (key.activated_at, key.kid),
    )
    return [
        key.kid
        for key, successor in itertools.pairwise(activated)
        if successor.activated_at is not None and successor.activated_at <= now - token_lifetime
    ]
