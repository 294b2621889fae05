"""In-memory stand-ins for the auth service's ports."""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.auth.domain.model import (
    IssuedRefreshToken,
    NewUser,
    PublicKey,
    RefreshTokenRecord,
    SigningKeyInfo,
    TokenPair,
    User,
)
from services.common.errors import DependencyUnavailable, ResourceExhausted, Unauthenticated
from services.common.identity import Role, Tier

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeUsers:
    by_user_id: dict[str, User] = field(default_factory=dict)

    async def add(self, user: NewUser) -> User | None:
        if any(u.email == user.email for u in self.by_user_id.values()):
            return None
        stored = User(
            user_id=user.user_id,
            email=user.email,
            full_name=user.full_name,
            phone=user.phone,
            tier=user.tier,
            role=user.role,
            created_at=T0,
            password_hash=user.password_hash,
        )
        self.by_user_id[user.user_id] = stored
        return stored

    async def by_email(self, email: str) -> User | None:
        return next((u for u in self.by_user_id.values() if u.email == email), None)

    async def by_id(self, user_id: str) -> User | None:
        return self.by_user_id.get(user_id)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        self.by_user_id[user_id] = replace(self.by_user_id[user_id], password_hash=password_hash)

    async def set_tier(self, email: str, tier: Tier) -> Tier | None:
        user = await self.by_email(email)
        if user is None:
            return None
        self.by_user_id[user.user_id] = replace(user, tier=tier)
        return user.tier

    async def set_role(self, email: str, role: Role) -> Role | None:
        user = await self.by_email(email)
        if user is None:
            return None
        self.by_user_id[user.user_id] = replace(user, role=role)
        return user.role


@dataclass
class FakeThrottle:
    """Admits ``limit`` attempts per email; ``down`` makes it unreachable."""

    limit: int = 1_000_000
    down: bool = False
    attempts: dict[str, int] = field(default_factory=dict)

    async def admit(self, email: str) -> None:
        if self.down:
            raise DependencyUnavailable("throttle down", dependency="the rate-limit service")
        if self.attempts.get(email, 0) >= self.limit:
            raise ResourceExhausted("too many login attempts", retry_after_seconds=42)
        self.attempts[email] = self.attempts.get(email, 0) + 1


@dataclass
class FakeHasher:
    """Hashes are "<version>:<password>"; a hash of an older version needs rehashing. While
    `busy`, hashing is refused as a full queue refuses it."""

    version: str = "v2"
    verified_against: list[str] = field(default_factory=list)
    hashed: int = 0
    busy: bool = False

    @property
    def dummy_hash(self) -> str:
        return f"{self.version}:dummy-password-nobody-has"

    async def hash(self, password: str) -> str:
        if self.busy:
            raise ResourceExhausted("busy", retry_after_seconds=1)
        self.hashed += 1
        return f"{self.version}:{password}"

    async def verify(self, password: str, password_hash: str) -> bool:
        self.verified_against.append(password_hash)
        return password_hash.split(":", 1)[1] == password

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(f"{self.version}:")


@dataclass
class FakeTokens:
    """Issues "access-N"/"refresh-N" token pairs and verifies what it issued (or what a test
    put in `claims_by_token`); tokens in `expired` fail verification as expired ones do."""

    claims_by_token: dict[str, dict[str, Any]] = field(default_factory=dict)
    issued_for: list[User] = field(default_factory=list)
    expired: set[str] = field(default_factory=set)
    asked_for: list[str] = field(default_factory=list)

    async def issue(self, user: User) -> TokenPair:
        n = len(self.issued_for)
        self.issued_for.append(user)
        access, refresh = f"access-{n}", f"refresh-{n}"
        self.claims_by_token[access] = {"sub": user.user_id, "typ": "access", "jti": f"a-{n}"}
        self.claims_by_token[refresh] = {"sub": user.user_id, "typ": "refresh", "jti": f"r-{n}"}
        return TokenPair(
            access, refresh, 900, IssuedRefreshToken(f"r-{n}", T0, T0 + timedelta(days=7))
        )

    async def claims(self, token: str, *, expected_type: str) -> dict[str, Any]:
        self.asked_for.append(expected_type)
        if token in self.expired:
            raise Unauthenticated("token has expired")
        claims = self.claims_by_token.get(token)
        if claims is None or claims["typ"] != expected_type:
            raise Unauthenticated("invalid token")
        return claims


@dataclass
class FakeRefreshTokens:
    """The RefreshTokenStore contract in memory: a family is revoked once any token is."""

    records: dict[str, RefreshTokenRecord] = field(default_factory=dict)

    async def start_family(
        self, token: IssuedRefreshToken, *, family_id: str, user_id: str
    ) -> None:
        self.records[token.token_id] = RefreshTokenRecord(
            token.token_id, family_id, user_id, token.issued_at, token.expires_at
        )

    async def spend(
        self, token_id: str, successor: IssuedRefreshToken, *, at: datetime
    ) -> RefreshTokenRecord | None:
        record = self.records.get(token_id)
        if record is None or record.used_at or self.family_revoked(record.family_id):
            return None
        self.records[token_id] = replace(record, used_at=at)
        await self.start_family(successor, family_id=record.family_id, user_id=record.user_id)
        return self.records[token_id]

    async def find(self, token_id: str) -> RefreshTokenRecord | None:
        return self.records.get(token_id)

    async def revoke_family(self, family_id: str, *, at: datetime) -> None:
        for token_id, record in self.records.items():
            if record.family_id == family_id and record.revoked_at is None:
                self.records[token_id] = replace(record, revoked_at=at)

    def family_revoked(self, family_id: str) -> bool:
        return any(r.revoked_at for r in self.records.values() if r.family_id == family_id)


@dataclass
class FakeKeyStore:
    keys: dict[str, SigningKeyInfo]
    clock: "FakeClock"
    created: int = 0

    async def published(self) -> list[PublicKey]:
        return [PublicKey(k.kid, "n", "e") for k in self.keys.values() if k.retired_at is None]

    async def pending_or_new(self) -> SigningKeyInfo:
        for info in self.keys.values():
            if info.activated_at is None and info.retired_at is None:
                return info
        self.created += 1
        info = SigningKeyInfo(f"new-{self.created}", self.clock(), None, None)
        self.keys[info.kid] = info
        return info

    async def activate(self, kid: str) -> None:
        self.keys[kid] = replace(self.keys[kid], activated_at=self.clock())

    async def all(self) -> list[SigningKeyInfo]:
        return list(self.keys.values())

    async def retire(self, kids: Sequence[str]) -> None:
        for kid in kids:
            self.keys[kid] = replace(self.keys[kid], retired_at=self.clock())


@dataclass
class FakeClock:
    now: datetime
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)
