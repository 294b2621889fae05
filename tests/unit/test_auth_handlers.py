"""The auth handlers against in-memory fakes of their ports."""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.auth import handlers
from services.auth.domain.commands import Login, RefreshTokens, RegisterUser, RotateSigningKey
from services.auth.domain.model import (
    NewUser,
    PublicKey,
    SigningKeyInfo,
    TokenPair,
    User,
)
from services.auth.domain.rules import INVALID_CREDENTIALS
from services.common.errors import (
    AlreadyExists,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
)
from services.common.identity import Principal, Role, Tier

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PASSWORD = "correct horse"


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
class FakeIssuer:
    issued_for: list[User] = field(default_factory=list)

    async def issue(self, user: User) -> TokenPair:
        self.issued_for.append(user)
        return TokenPair(f"access-{user.user_id}", f"refresh-{user.user_id}", 900)


@dataclass
class FakeVerifier:
    claims_by_token: dict[str, dict[str, Any]]
    asked_for: list[str] = field(default_factory=list)

    async def claims(self, token: str, *, expected_type: str) -> dict[str, Any]:
        self.asked_for.append(expected_type)
        claims = self.claims_by_token.get(token)
        if claims is None or claims["typ"] != expected_type:
            raise Unauthenticated("invalid token")
        return claims


@pytest.fixture
def users() -> FakeUsers:
    return FakeUsers()


@pytest.fixture
def hasher() -> FakeHasher:
    return FakeHasher()


async def register(users: FakeUsers, hasher: FakeHasher, email: str = "ada@example.com") -> User:
    command = RegisterUser(email=email, password=PASSWORD, full_name="Ada", phone="")
    return await handlers.register_user(command, users, hasher)


async def test_register_creates_a_free_user_with_a_hashed_password(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    user = await register(users, hasher, email=" Ada@Example.com")
    assert (user.email, user.tier, user.role, user.phone) == (
        "ada@example.com",
        Tier.FREE,
        Role.USER,
        None,
    )
    assert user.password_hash == f"v2:{PASSWORD}"
    assert users.by_user_id == {user.user_id: user}


async def test_register_refuses_a_taken_email_in_any_case(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    await register(users, hasher)
    with pytest.raises(AlreadyExists, match=r"ada@example\.com"):
        await register(users, hasher, email="ADA@example.com")


async def test_register_validates_before_hashing(users: FakeUsers, hasher: FakeHasher) -> None:
    command = RegisterUser(email="ada@example.com", password="short", full_name="Ada")
    with pytest.raises(InvalidArgument):
        await handlers.register_user(command, users, hasher)
    assert hasher.hashed == 0
    assert users.by_user_id == {}


async def test_register_can_create_an_admin(users: FakeUsers, hasher: FakeHasher) -> None:
    command = RegisterUser(
        email="root@example.com", password=PASSWORD, full_name="Root", role=Role.ADMIN
    )
    assert (await handlers.register_user(command, users, hasher)).role is Role.ADMIN


async def test_login_issues_tokens_for_the_right_password(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    user = await register(users, hasher)
    issuer = FakeIssuer()
    pair = await handlers.login(Login("  ADA@example.com", PASSWORD), users, hasher, issuer)
    assert pair.access_token == f"access-{user.user_id}"
    assert issuer.issued_for == [user]


async def test_wrong_password_and_unknown_email_fail_alike(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    await register(users, hasher)
    issuer = FakeIssuer()
    with pytest.raises(Unauthenticated) as wrong_password:
        await handlers.login(Login("ada@example.com", "wrong password"), users, hasher, issuer)
    with pytest.raises(Unauthenticated) as unknown_email:
        await handlers.login(Login("bob@example.com", PASSWORD), users, hasher, issuer)
    assert str(wrong_password.value) == str(unknown_email.value) == INVALID_CREDENTIALS
    assert hasher.verified_against == [f"v2:{PASSWORD}", hasher.dummy_hash]
    assert issuer.issued_for == []


async def test_login_upgrades_a_hash_made_with_old_parameters(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    user = await register(users, hasher)
    await users.set_password_hash(user.user_id, f"v1:{PASSWORD}")
    await handlers.login(Login("ada@example.com", PASSWORD), users, hasher, FakeIssuer())
    assert users.by_user_id[user.user_id].password_hash == f"v2:{PASSWORD}"


async def test_login_succeeds_when_the_hash_upgrade_is_refused(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    user = await register(users, hasher)
    await users.set_password_hash(user.user_id, f"v1:{PASSWORD}")
    hasher.busy = True
    pair = await handlers.login(Login("ada@example.com", PASSWORD), users, hasher, FakeIssuer())
    assert pair.access_token == f"access-{user.user_id}"
    assert users.by_user_id[user.user_id].password_hash == f"v1:{PASSWORD}"


async def test_registration_is_refused_while_the_hasher_is_full(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    hasher.busy = True
    with pytest.raises(ResourceExhausted):
        await register(users, hasher)
    assert users.by_user_id == {}


async def test_refresh_needs_a_refresh_token_of_an_existing_user(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    user = await register(users, hasher)
    verifier = FakeVerifier(
        {
            "refresh": {"sub": user.user_id, "typ": "refresh"},
            "access": {"sub": user.user_id, "typ": "access"},
            "orphan": {"sub": "deleted-user", "typ": "refresh"},
        }
    )
    issuer = FakeIssuer()
    pair = await handlers.refresh_tokens(RefreshTokens("refresh"), verifier, users, issuer)
    assert pair.refresh_token == f"refresh-{user.user_id}"
    with pytest.raises(Unauthenticated):
        await handlers.refresh_tokens(RefreshTokens("access"), verifier, users, issuer)
    with pytest.raises(Unauthenticated, match="no longer exists"):
        await handlers.refresh_tokens(RefreshTokens("orphan"), verifier, users, issuer)
    assert set(verifier.asked_for) == {"refresh"}
    assert issuer.issued_for == [user]


async def test_current_user_is_the_callers_account(users: FakeUsers, hasher: FakeHasher) -> None:
    user = await register(users, hasher)
    principal = Principal(user.user_id, user.email, Role.USER, Tier.FREE)
    assert await handlers.current_user(principal, users) == user
    ghost = Principal("ghost", "ghost@example.com", Role.USER, Tier.FREE)
    with pytest.raises(Unauthenticated):
        await handlers.current_user(ghost, users)


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


ROTATION = RotateSigningKey(publish_delay=timedelta(minutes=15), token_lifetime=timedelta(days=7))


async def test_rotation_publishes_then_activates_then_retires_expired_keys() -> None:
    clock = FakeClock(T0 + timedelta(days=30))
    store = FakeKeyStore(
        {
            "oldest": SigningKeyInfo("oldest", T0, T0, None),
            "previous": SigningKeyInfo("previous", T0, T0 + timedelta(days=1), None),
        },
        clock,
    )
    outcome = await handlers.rotate_signing_key(ROTATION, store, clock, clock.sleep)
    assert outcome.activated_kid == "new-1"
    assert clock.slept == [15 * 60]
    assert store.keys["new-1"].activated_at == T0 + timedelta(days=30, minutes=15)
    assert outcome.retired_kids == ("oldest",)
    assert store.keys["previous"].retired_at is None


async def test_rotation_finishes_a_pending_key_left_by_an_interrupted_run() -> None:
    clock = FakeClock(T0 + timedelta(hours=1))
    store = FakeKeyStore(
        {
            "current": SigningKeyInfo("current", T0, T0, None),
            "pending": SigningKeyInfo("pending", T0 + timedelta(minutes=50), None, None),
        },
        clock,
    )
    outcome = await handlers.rotate_signing_key(ROTATION, store, clock, clock.sleep)
    assert outcome.activated_kid == "pending"
    assert clock.slept == [5 * 60]
    assert store.created == 0
    assert outcome.retired_kids == ()
