"""AuthService's servicer through grpc_testing, behind the platform interceptor, over fakes of
its ports: every RPC's translation, its errors' statuses and details, the contract's bounds,
and which calls need an access token."""

from collections.abc import Callable, Iterator
from datetime import timedelta

import grpc
import pytest
from google.protobuf.message import Message
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc

from services.auth.api import PUBLIC_METHODS, SERVICE, AuthApi
from services.auth.domain.model import SigningKeyInfo, User
from services.auth.domain.rules import INVALID_CREDENTIALS, REFRESH_TOKEN_REUSED
from services.common.identity import Principal, Role, Tier
from services.platform.tokens import KEYS_UNAVAILABLE, TokenVerifier
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
from tests.unit.servicer_harness import (
    AUDIENCE,
    BAD_CREDENTIALS,
    ISSUER,
    ServicerHarness,
    TokenMint,
)

DESCRIPTOR = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
PASSWORD = "correct horse"
ADA = User("user-ada", "ada@example.com", "Ada", None, Tier.FREE, Role.USER, T0, f"v2:{PASSWORD}")


def principal_of(user: User) -> Principal:
    return Principal(user.user_id, user.email, user.role, user.tier)


@pytest.fixture
def users() -> FakeUsers:
    return FakeUsers({ADA.user_id: ADA})


@pytest.fixture
def hasher() -> FakeHasher:
    return FakeHasher()


@pytest.fixture
def tokens() -> FakeTokens:
    return FakeTokens()


@pytest.fixture
def refresh_store() -> FakeRefreshTokens:
    return FakeRefreshTokens()


@pytest.fixture
def keys() -> FakeKeyStore:
    return FakeKeyStore(
        {
            "current": SigningKeyInfo("current", T0, T0, None),
            "retired": SigningKeyInfo("retired", T0, T0, T0 + timedelta(days=9)),
        },
        FakeClock(T0),
    )


@pytest.fixture
def api(
    users: FakeUsers,
    hasher: FakeHasher,
    tokens: FakeTokens,
    refresh_store: FakeRefreshTokens,
    keys: FakeKeyStore,
) -> AuthApi:
    return AuthApi(
        users=users,
        hasher=hasher,
        tokens=tokens,
        refresh_store=refresh_store,
        keys=keys,
        verifier=tokens,
        throttle=FakeThrottle(),
    )


def harness(
    api: AuthApi, mint: TokenMint, verifier: TokenVerifier | None = None
) -> ServicerHarness:
    return ServicerHarness(
        DESCRIPTOR,
        api,
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        mint=mint,
        public_methods=PUBLIC_METHODS,
        verifier=verifier,
    )


@pytest.fixture
def auth(mint: TokenMint, api: AuthApi) -> Iterator[ServicerHarness]:
    with harness(api, mint) as served:
        yield served


def login(auth: ServicerHarness) -> auth_pb2.LoginResponse:
    request = auth_pb2.LoginRequest(email="ada@example.com", password=PASSWORD)
    response: auth_pb2.LoginResponse = auth.unary("Login", request).ok()
    return response


def test_only_the_current_user_needs_an_access_token() -> None:
    private = {f"/{SERVICE}/{name}" for name in DESCRIPTOR.methods_by_name} - set(PUBLIC_METHODS)
    assert private == {f"/{SERVICE}/GetCurrentUser"}


def test_register_answers_the_new_account(auth: ServicerHarness, users: FakeUsers) -> None:
    request = auth_pb2.RegisterRequest(
        email=" Grace@Example.com", password=PASSWORD, full_name="Grace Hopper", phone="+1 555"
    )
    user = auth.unary("Register", request).ok().user
    assert user == auth_pb2.User(
        user_id=user.user_id,
        email="grace@example.com",
        full_name="Grace Hopper",
        phone="+1 555",
        tier=auth_pb2.TIER_FREE,
        role=auth_pb2.ROLE_USER,
        created_at=user.created_at,
    )
    assert user.created_at.ToDatetime(tzinfo=T0.tzinfo) == T0
    assert users.by_user_id[user.user_id].password_hash == f"v2:{PASSWORD}"


def test_register_without_a_phone_answers_an_empty_one(auth: ServicerHarness) -> None:
    request = auth_pb2.RegisterRequest(
        email="grace@example.com", password=PASSWORD, full_name="Grace Hopper"
    )
    assert auth.unary("Register", request).ok().user.phone == ""


@pytest.mark.parametrize(
    ("request_", "violation"),
    [
        (
            auth_pb2.RegisterRequest(email="grace@example.com", password="short", full_name="G"),
            ("password", "password must be at least 8 characters"),
        ),
        (
            auth_pb2.RegisterRequest(email="not-an-email", password=PASSWORD, full_name="G"),
            ("email", "email must be a valid email address"),
        ),
        (
            auth_pb2.RegisterRequest(email="grace@example.com", password=PASSWORD),
            ("full_name", "full_name is required"),
        ),
    ],
)
def test_a_bad_registration_is_invalid_naming_the_field(
    auth: ServicerHarness, request_: auth_pb2.RegisterRequest, violation: tuple[str, str]
) -> None:
    outcome = auth.unary("Register", request_)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, violation[1])
    assert outcome.field_violations() == [violation]
    assert outcome.retry_after is None


def test_a_taken_email_already_exists(auth: ServicerHarness) -> None:
    request = auth_pb2.RegisterRequest(email="ADA@example.com", password=PASSWORD, full_name="A")
    outcome = auth.unary("Register", request)
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "an account with email ada@example.com already exists",
    )
    assert outcome.status().details == []


def test_a_full_hashing_queue_says_when_to_retry(
    auth: ServicerHarness, hasher: FakeHasher, users: FakeUsers
) -> None:
    hasher.busy = True
    request = auth_pb2.RegisterRequest(
        email="grace@example.com", password=PASSWORD, full_name="Grace"
    )
    outcome = auth.unary("Register", request)
    assert (outcome.code, outcome.details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
    assert outcome.retry_delay_seconds() == 1
    assert outcome.retry_after == "1"
    assert set(users.by_user_id) == {ADA.user_id}


def test_every_field_beyond_its_bound_is_named_before_any_hashing(
    auth: ServicerHarness, hasher: FakeHasher
) -> None:
    request = auth_pb2.RegisterRequest(
        email="a" * 245 + "@example.com", password="p" * 257, full_name="G", phone="1" * 41
    )
    outcome = auth.unary("Register", request)
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    assert outcome.field_violations() == [
        ("email", "email is 257 characters long; at most 254 are allowed"),
        ("password", "password is 257 characters long; at most 256 are allowed"),
        ("phone", "phone is 41 characters long; at most 40 are allowed"),
    ]
    assert hasher.hashed == 0


def test_login_answers_a_bearer_token_pair(
    auth: ServicerHarness, refresh_store: FakeRefreshTokens
) -> None:
    response = login(auth)
    assert response == auth_pb2.LoginResponse(
        access_token="access-0", refresh_token="refresh-0", token_type="bearer", expires_in=900
    )
    assert refresh_store.records["r-0"].user_id == ADA.user_id


@pytest.mark.parametrize(
    ("email", "password"), [("ada@example.com", "wrong password"), ("bob@example.com", PASSWORD)]
)
def test_bad_credentials_are_unauthenticated_alike(
    auth: ServicerHarness, email: str, password: str
) -> None:
    outcome = auth.unary("Login", auth_pb2.LoginRequest(email=email, password=password))
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.UNAUTHENTICATED,
        INVALID_CREDENTIALS,
    )


@pytest.mark.parametrize("kind", sorted(BAD_CREDENTIALS))
def test_the_public_methods_ignore_any_token_sent_along(
    auth: ServicerHarness, mint: TokenMint, kind: str
) -> None:
    metadata = mint.bad_credentials(kind, principal_of(ADA))
    request = auth_pb2.LoginRequest(email="ada@example.com", password=PASSWORD)
    assert auth.unary("Login", request, metadata=metadata).ok().token_type == "bearer"
    assert auth.unary("GetJwks", auth_pb2.GetJwksRequest(), metadata=metadata).ok().keys


def test_refresh_answers_the_next_pair(auth: ServicerHarness) -> None:
    first = login(auth)
    request = auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token)
    assert auth.unary("RefreshToken", request).ok() == auth_pb2.RefreshTokenResponse(
        access_token="access-1", refresh_token="refresh-1", token_type="bearer", expires_in=900
    )


def test_a_reused_refresh_token_is_unauthenticated(auth: ServicerHarness) -> None:
    request = auth_pb2.RefreshTokenRequest(refresh_token=login(auth).refresh_token)
    auth.unary("RefreshToken", request).ok()
    outcome = auth.unary("RefreshToken", request)
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.UNAUTHENTICATED,
        REFRESH_TOKEN_REUSED,
    )


SPENDING_REFRESH_TOKENS = pytest.mark.parametrize(
    ("method", "request_type"),
    [("RefreshToken", auth_pb2.RefreshTokenRequest), ("Logout", auth_pb2.LogoutRequest)],
)


@SPENDING_REFRESH_TOKENS
def test_an_unknown_refresh_token_is_unauthenticated(
    auth: ServicerHarness, method: str, request_type: Callable[..., Message]
) -> None:
    outcome = auth.unary(method, request_type(refresh_token="forged"))
    assert (outcome.code, outcome.details) == (grpc.StatusCode.UNAUTHENTICATED, "invalid token")


@SPENDING_REFRESH_TOKENS
def test_a_refresh_token_beyond_its_bound_is_invalid(
    auth: ServicerHarness, method: str, request_type: Callable[..., Message]
) -> None:
    outcome = auth.unary(method, request_type(refresh_token="t" * 4097))
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in outcome.field_violations()] == ["refresh_token"]


def test_logout_revokes_the_login_and_may_be_repeated(
    auth: ServicerHarness, refresh_store: FakeRefreshTokens
) -> None:
    request = auth_pb2.LogoutRequest(refresh_token=login(auth).refresh_token)
    assert auth.unary("Logout", request).ok() == auth_pb2.LogoutResponse()
    assert refresh_store.family_revoked(refresh_store.records["r-0"].family_id)
    assert auth.unary("Logout", request).ok() == auth_pb2.LogoutResponse()


@pytest.mark.parametrize(
    ("tier", "role"),
    [
        (Tier.FREE, Role.USER),
        (Tier.STANDARD, Role.ADMIN),
        (Tier.PREMIUM, Role.SYSTEM),
        (Tier.ENTERPRISE, Role.USER),
    ],
)
def test_the_current_user_is_the_callers_stored_account(
    auth: ServicerHarness, users: FakeUsers, tier: Tier, role: Role
) -> None:
    user = User("user-grace", "grace@example.com", "Grace", "+1 555", tier, role, T0, "")
    users.by_user_id[user.user_id] = user
    caller = Principal(user.user_id, user.email, Role.USER, Tier.FREE)
    response = auth.unary("GetCurrentUser", auth_pb2.GetCurrentUserRequest(), caller=caller)
    assert response.ok().user == auth_pb2.User(
        user_id="user-grace",
        email="grace@example.com",
        full_name="Grace",
        phone="+1 555",
        tier=auth_pb2.Tier.Value(f"TIER_{tier.name}"),
        role=auth_pb2.Role.Value(f"ROLE_{role.name}"),
        created_at=response.response.user.created_at,
    )


def test_a_token_of_a_deleted_account_is_unauthenticated(auth: ServicerHarness) -> None:
    ghost = Principal("user-ghost", "ghost@example.com", Role.USER, Tier.FREE)
    outcome = auth.unary("GetCurrentUser", auth_pb2.GetCurrentUserRequest(), caller=ghost)
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "the token's account no longer exists",
    )


@pytest.mark.parametrize("kind", sorted(BAD_CREDENTIALS))
def test_the_current_user_needs_a_valid_access_token(
    auth: ServicerHarness, mint: TokenMint, kind: str
) -> None:
    metadata = mint.bad_credentials(kind, principal_of(ADA))
    outcome = auth.unary("GetCurrentUser", auth_pb2.GetCurrentUserRequest(), metadata=metadata)
    assert outcome.code is grpc.StatusCode.UNAUTHENTICATED
    assert BAD_CREDENTIALS[kind] in outcome.details


def test_tokens_cannot_be_checked_while_the_key_set_is_unavailable(
    mint: TokenMint, api: AuthApi
) -> None:
    async def unreachable() -> dict[str, object]:
        raise ConnectionError("auth service unreachable")

    verifier = TokenVerifier(unreachable, issuer=ISSUER, audience=AUDIENCE)
    with harness(api, mint, verifier) as auth:
        private = auth.unary(
            "GetCurrentUser", auth_pb2.GetCurrentUserRequest(), caller=principal_of(ADA)
        )
        public = auth.unary("GetJwks", auth_pb2.GetJwksRequest())
    assert (private.code, private.details) == (grpc.StatusCode.UNAVAILABLE, KEYS_UNAVAILABLE)
    public.ok()


def test_the_key_set_lists_every_key_not_retired(auth: ServicerHarness) -> None:
    response = auth.unary("GetJwks", auth_pb2.GetJwksRequest()).ok()
    assert list(response.keys) == [
        auth_pb2.Jwk(kty="RSA", kid="current", use="sig", alg="RS256", n="n", e="e")
    ]


def test_the_callers_request_id_is_echoed_on_success_and_on_error(auth: ServicerHarness) -> None:
    metadata = (("x-request-id", "req-auth-1"),)
    good = auth_pb2.LoginRequest(email="ada@example.com", password=PASSWORD)
    bad = auth_pb2.LoginRequest(email="ada@example.com", password="wrong password")
    assert auth.unary("Login", good, metadata=metadata).request_id == "req-auth-1"
    assert auth.unary("Login", bad, metadata=metadata).request_id == "req-auth-1"
