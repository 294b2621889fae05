"""RS256 JWTs signed with the active signing key; the header names the key (`kid`)."""

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from services.auth.domain.model import (
    IssuedRefreshToken,
    TokenKind,
    TokenPair,
    TokenPolicy,
    User,
)
from services.auth.domain.rules import token_claims
from services.common.clock import utc_now

ALGORITHM = "RS256"


class SigningKeySource(Protocol):
    async def signing_key(self) -> tuple[str, RSAPrivateKey]:
        """The active key's id and private key."""


class JwtTokenIssuer:
    def __init__(
        self,
        keys: SigningKeySource,
        policy: TokenPolicy,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._keys = keys
        self._policy = policy
        self._clock = clock

    async def issue(self, user: User) -> TokenPair:
        kid, key = await self._keys.signing_key()
        # Whole seconds, as in the iat and exp claims, so the stored times match the token's.
        issued_at = self._clock().replace(microsecond=0)
        refresh_id = uuid.uuid4().hex

        def sign(kind: TokenKind, token_id: str) -> str:
            claims = token_claims(user, kind, self._policy, issued_at=issued_at, token_id=token_id)
            return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})

        return TokenPair(
            access_token=sign(TokenKind.ACCESS, uuid.uuid4().hex),
            refresh_token=sign(TokenKind.REFRESH, refresh_id),
            expires_in_seconds=int(self._policy.access_ttl.total_seconds()),
            refresh=IssuedRefreshToken(
                token_id=refresh_id,
                issued_at=issued_at,
                expires_at=issued_at + self._policy.refresh_ttl,
            ),
        )
