"""RS256 JWTs signed with the active signing key; the header names the key (`kid`)."""

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from services.auth.domain.model import TokenKind, TokenPair, TokenPolicy, User
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
        issued_at = self._clock()

        def sign(kind: TokenKind) -> str:
            claims = token_claims(
                user, kind, self._policy, issued_at=issued_at, token_id=uuid.uuid4().hex
            )
            return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})

        return TokenPair(
            access_token=sign(TokenKind.ACCESS),
            refresh_token=sign(TokenKind.REFRESH),
            expires_in_seconds=int(self._policy.access_ttl.total_seconds()),
        )
