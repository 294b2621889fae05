"""The auth handlers against in-memory fakes of their ports."""

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from services.auth import handlers
from services.auth.domain.commands import (
    ChangeRole,
    ChangeTier,
    Login,
    Logout,
    RefreshTokens,
    RegisterUser,
    RotateSigningKey,
)
from services.auth.domain.model import AccessChange, SigningKeyInfo, TokenPair, User
from services.auth.domain.rules import (
    INVALID_CREDENTIALS,
    REFRESH_TOKEN_REUSED,
    UNKNOWN_REFRESH_TOKEN,
)
from services.common.errors import (
    AlreadyExists,
    DependencyUnavailable,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from services.common.identity import Principal, Role, Tier
from tests.unit.fakes.auth import (
    T0,
    FakeClock,
    FakeHasher,
    FakeKeyStore,
    FakeRefreshTokens,
    FakeThrottle,
    FakeTokens,
    FakeUsers,
)

PASSWORD = "correct horse"


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
    throttle: FakeThrottle = field(default_factory=FakeThrottle)
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
            throttle=self.throttle,
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


async def test_login_attempts_are_throttled_per_account_before_any_hash(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    await register(users, hasher)
    sessions = Sessions(users, hasher, throttle=FakeThrottle(limit=2))
    await sessions.login()
    with pytest.raises(Unauthenticated):
        await sessions.login(password="wrong password")
    hashed = len(hasher.verified_against)
    with pytest.raises(ResourceExhausted) as refused:
        await sessions.login(email="  ADA@example.com ")
    assert refused.value.retry_after_seconds == 42
    assert len(hasher.verified_against) == hashed, "a throttled attempt costs no hash"
    assert sessions.throttle.attempts == {"ada@example.com": 2}


async def test_logins_fail_closed_when_the_throttle_cannot_tell(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    await register(users, hasher)
    hasher.verified_against.clear()
    sessions = Sessions(users, hasher, throttle=FakeThrottle(down=True))
    with pytest.raises(DependencyUnavailable):
        await sessions.login()
    assert hasher.verified_against == []


async def test_an_operator_changes_tier_and_role_by_email_in_any_case(
    users: FakeUsers, hasher: FakeHasher
) -> None:
    user = await register(users, hasher)

    tier = await handlers.change_tier(ChangeTier(" ADA@example.com", Tier.PREMIUM), users)
    role = await handlers.change_role(ChangeRole("ada@example.com", Role.ADMIN), users)

    assert tier == AccessChange("ada@example.com", "tier", Tier.FREE, Tier.PREMIUM)
    assert role == AccessChange("ada@example.com", "role", Role.USER, Role.ADMIN)
    stored = users.by_user_id[user.user_id]
    assert (stored.tier, stored.role) == (Tier.PREMIUM, Role.ADMIN)


async def test_changing_an_unknown_account_names_it(users: FakeUsers) -> None:
    with pytest.raises(NotFound, match=r"no account with email nobody@example\.com"):
        await handlers.change_tier(ChangeTier("nobody@example.com", Tier.PREMIUM), users)
    with pytest.raises(NotFound, match=r"nobody@example\.com"):
        await handlers.change_role(ChangeRole("nobody@example.com", Role.ADMIN), users)
