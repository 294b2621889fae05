"""The auth handlers against in-memory fakes of their ports."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.auth import handlers
from services.auth.domain.commands import (
    Login,
    Logout,
    RefreshTokens,
    RegisterUser,
    RotateSigningKey,
)
from services.auth.domain.model import (
    IssuedRefreshToken,
    NewUser,
    PublicKey,
    RefreshTokenRecord,
    SigningKeyInfo,
    TokenPair,
    User,
)
from services.auth.domain.rules import (
    INVALID_CREDENTIALS,
    REFRESH_TOKEN_REUSED,
    UNKNOWN_REFRESH_TOKEN,
)
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


@dataclass
class Sessions:
    """The login and refresh handlers over one set of fakes."""

    users: FakeUsers
    hasher: FakeHasher
    tokens: FakeTokens = field(default_factory=FakeTokens)
    store: FakeRefreshTokens = field(default_factory=FakeRefreshTokens)
    clock: "FakeClock" = field(default_factory=lambda: FakeClock(T0))
    families: int = 0

    def new_family_id(self) -> str:
        self.families += 1
        return f"family-{self.families}"

    async def login(self, email: str = "ada@example.com", password: str = PASSWORD) -> TokenPair:
        return await handlers.login(
            Login(email, password),
            self.users,
            self.hasher,
            self.tokens,
            refresh_store=self.store,
            new_id=self.new_family_id,
        )

    async def refresh(self, refresh_token: str) -> TokenPair:
        return await handlers.refresh_tokens(
            RefreshTokens(refresh_token),
            self.tokens,
            self.users,
            self.tokens,
            refresh_store=self.store,
            clock=self.clock,
        )

    async def logout(self, refresh_token: str) -> None:
        await handlers.logout(Logout(refresh_token), self.tokens, self.store, self.clock)

    def family_of(self, pair: TokenPair) -> str:
        return self.store.records[pair.refresh.token_id].family_id


@pytest.fixture
def sessions(users: FakeUsers, hasher: FakeHasher) -> Sessions:
    return Sessions(users, hasher)


async def test_login_issues_tokens_for_the_right_password(sessions: Sessions) -> None:
    user = await register(sessions.users, sessions.hasher)
    pair = await sessions.login("  ADA@example.com")
    assert sessions.tokens.issued_for == [user]
    assert sessions.tokens.claims_by_token[pair.access_token]["sub"] == user.user_id


async def test_wrong_password_and_unknown_email_fail_alike(sessions: Sessions) -> None:
    hasher = sessions.hasher
    await register(sessions.users, hasher)
    with pytest.raises(Unauthenticated) as wrong_password:
        await sessions.login("ada@example.com", "wrong password")
    with pytest.raises(Unauthenticated) as unknown_email:
        await sessions.login("bob@example.com")
    assert str(wrong_password.value) == str(unknown_email.value) == INVALID_CREDENTIALS
    assert hasher.verified_against == [f"v2:{PASSWORD}", hasher.dummy_hash]
    assert sessions.tokens.issued_for == []
    assert sessions.store.records == {}


async def test_login_upgrades_a_hash_made_with_old_parameters(sessions: Sessions) -> None:
    user = await register(sessions.users, sessions.hasher)
    await sessions.users.set_password_hash(user.user_id, f"v1:{PASSWORD}")
    await sessions.login()
    assert sessions.users.by_user_id[user.user_id].password_hash == f"v2:{PASSWORD}"


async def test_login_succeeds_when_the_hash_upgrade_is_refused(sessions: Sessions) -> None:
    user = await register(sessions.users, sessions.hasher)
    await sessions.users.set_password_hash(user.user_id, f"v1:{PASSWORD}")
    sessions.hasher.busy = True
    await sessions.login()
    assert [issued.user_id for issued in sessions.tokens.issued_for] == [user.user_id]
    assert sessions.users.by_user_id[user.user_id].password_hash == f"v1:{PASSWORD}"


async def test_registration_is_refused_while_the_hasher_is_full(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    hasher.busy = True
    with pytest.raises(ResourceExhausted):
        await register(users, hasher)
    assert users.by_user_id == {}


async def test_every_login_starts_its_own_family(sessions: Sessions) -> None:
    user = await register(sessions.users, sessions.hasher)
    first, second = await sessions.login(), await sessions.login()
    assert sessions.family_of(first) != sessions.family_of(second)
    stored = sessions.store.records[first.refresh.token_id]
    assert (stored.user_id, stored.issued_at, stored.expires_at) == (
        user.user_id,
        first.refresh.issued_at,
        first.refresh.expires_at,
    )
    assert stored.used_at is None and stored.revoked_at is None


async def test_refresh_rotates_the_refresh_token_within_its_family(sessions: Sessions) -> None:
    await register(sessions.users, sessions.hasher)
    login = await sessions.login()
    second = await sessions.refresh(login.refresh_token)
    third = await sessions.refresh(second.refresh_token)
    assert len({login.refresh_token, second.refresh_token, third.refresh_token}) == 3
    assert sessions.family_of(second) == sessions.family_of(third) == sessions.family_of(login)
    records = sessions.store.records
    assert records[login.refresh.token_id].used_at == T0
    assert records[second.refresh.token_id].used_at == T0
    assert records[third.refresh.token_id].used_at is None
    assert not sessions.store.family_revoked(sessions.family_of(login))


async def test_a_reused_refresh_token_revokes_its_whole_family(sessions: Sessions) -> None:
    await register(sessions.users, sessions.hasher)
    other_device = await sessions.login()
    login = await sessions.login()
    newer = await sessions.refresh(login.refresh_token)
    sessions.clock.now = T0 + timedelta(minutes=5)

    with pytest.raises(Unauthenticated, match="already used") as reused:
        await sessions.refresh(login.refresh_token)
    assert str(reused.value) == REFRESH_TOKEN_REUSED
    with pytest.raises(Unauthenticated, match="already used"):
        await sessions.refresh(newer.refresh_token)

    family = sessions.family_of(login)
    assert sessions.store.records[newer.refresh.token_id].revoked_at == sessions.clock.now
    assert all(
        record.revoked_at == sessions.clock.now
        for record in sessions.store.records.values()
        if record.family_id == family
    )
    assert await sessions.refresh(other_device.refresh_token), "other logins are untouched"


async def test_of_two_concurrent_refreshes_with_one_token_one_wins(sessions: Sessions) -> None:
    await register(sessions.users, sessions.hasher)
    login = await sessions.login()
    outcomes = await asyncio.gather(
        sessions.refresh(login.refresh_token),
        sessions.refresh(login.refresh_token),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, TokenPair)]
    losers = [o for o in outcomes if isinstance(o, Unauthenticated)]
    assert (len(winners), len(losers)) == (1, 1)
    with pytest.raises(Unauthenticated):
        await sessions.refresh(winners[0].refresh_token)


async def test_an_expired_refresh_token_is_refused_and_spends_nothing(
    sessions: Sessions,
) -> None:
    await register(sessions.users, sessions.hasher)
    login = await sessions.login()
    sessions.tokens.expired.add(login.refresh_token)
    with pytest.raises(Unauthenticated, match="expired"):
        await sessions.refresh(login.refresh_token)
    assert sessions.store.records[login.refresh.token_id].used_at is None


async def test_a_refresh_token_the_server_never_stored_is_refused(sessions: Sessions) -> None:
    user = await register(sessions.users, sessions.hasher)
    sessions.tokens.claims_by_token["unrecorded"] = {
        "sub": user.user_id,
        "typ": "refresh",
        "jti": "never-stored",
    }
    with pytest.raises(Unauthenticated) as refused:
        await sessions.refresh("unrecorded")
    assert str(refused.value) == UNKNOWN_REFRESH_TOKEN


async def test_refresh_needs_a_refresh_token_of_an_existing_user(sessions: Sessions) -> None:
    await register(sessions.users, sessions.hasher)
    login = await sessions.login()
    sessions.tokens.claims_by_token["orphan"] = {
        "sub": "deleted-user",
        "typ": "refresh",
        "jti": login.refresh.token_id,
    }
    with pytest.raises(Unauthenticated):
        await sessions.refresh(login.access_token)
    with pytest.raises(Unauthenticated, match="no longer exists"):
        await sessions.refresh("orphan")
    assert set(sessions.tokens.asked_for) == {"refresh"}
    assert sessions.store.records[login.refresh.token_id].used_at is None


async def test_logout_revokes_the_family_and_may_be_repeated(sessions: Sessions) -> None:
    await register(sessions.users, sessions.hasher)
    other_device = await sessions.login()
    login = await sessions.login()
    current = await sessions.refresh(login.refresh_token)
    sessions.clock.now = T0 + timedelta(hours=1)

    await sessions.logout(current.refresh_token)
    assert sessions.store.family_revoked(sessions.family_of(login))
    with pytest.raises(Unauthenticated):
        await sessions.refresh(current.refresh_token)
    await sessions.logout(current.refresh_token)
    assert sessions.store.records[login.refresh.token_id].revoked_at == sessions.clock.now
    assert await sessions.refresh(other_device.refresh_token), "other logins are untouched"


async def test_logout_with_a_spent_token_still_ends_its_login(sessions: Sessions) -> None:
    await register(sessions.users, sessions.hasher)
    login = await sessions.login()
    current = await sessions.refresh(login.refresh_token)
    await sessions.logout(login.refresh_token)
    with pytest.raises(Unauthenticated):
        await sessions.refresh(current.refresh_token)


async def test_logout_needs_a_valid_refresh_token_the_server_issued(sessions: Sessions) -> None:
    user = await register(sessions.users, sessions.hasher)
    login, expired = await sessions.login(), await sessions.login()
    sessions.tokens.expired.add(expired.refresh_token)
    sessions.tokens.claims_by_token["unrecorded"] = {
        "sub": user.user_id,
        "typ": "refresh",
        "jti": "never-stored",
    }
    for token in ("garbage", expired.refresh_token, login.access_token, "unrecorded"):
        with pytest.raises(Unauthenticated):
            await sessions.logout(token)
    assert not sessions.store.family_revoked(sessions.family_of(expired))
    assert not sessions.store.family_revoked(sessions.family_of(login))
    assert await sessions.refresh(login.refresh_token)


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
