"""AuthService over real gRPC against real Postgres: accounts, tokens, keys and rotation."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from ordermesh.auth.v1 import auth_pb2, auth_pb2_grpc

from devstack import cli, postgres
from devstack import stack as devstack_stack
from devstack.ports import Ports
from services.auth import bootstrap as auth_bootstrap
from services.auth.adapters.keys import PostgresSigningKeyStore, SigningKeyUnavailable
from services.auth.bootstrap import signing_key_store
from services.auth.create_admin import create_admin
from services.auth.domain.model import RotationOutcome
from services.auth.rotate_keys import rotate
from services.common.errors import AlreadyExists
from services.platform import migrations
from services.platform.db import Pool, open_pool
from services.platform.settings import Settings
from services.platform.tokens import TokenVerifier
from tests.integration.grpc_harness import PASSWORD, GrpcStack, grpc_stack, rpc_error

pytestmark = pytest.mark.integration

AUTH_MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "auth" / "migrations"


@pytest.fixture(scope="module")
async def stack(settings: Settings, pool: Pool) -> AsyncIterator[GrpcStack]:
    async with grpc_stack(settings, pool, [auth_bootstrap.component]) as running:
        yield running


@pytest.fixture
def auth(stack: GrpcStack) -> auth_pb2_grpc.AuthServiceAsyncStub:
    return auth_pb2_grpc.AuthServiceStub(stack.channel)


def unique_email() -> str:
    return f"auth-{uuid.uuid4().hex[:12]}@example.com"


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def register(auth: auth_pb2_grpc.AuthServiceAsyncStub, email: str) -> auth_pb2.User:
    response = await auth.Register(
        auth_pb2.RegisterRequest(email=email, password=PASSWORD, full_name="Ada Lovelace")
    )
    return response.user


async def login(auth: auth_pb2_grpc.AuthServiceAsyncStub, email: str) -> auth_pb2.LoginResponse:
    return await auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))


async def test_register_login_me_refresh_and_jwks(auth: auth_pb2_grpc.AuthServiceAsyncStub) -> None:
    email = unique_email()
    registered = await auth.Register(
        auth_pb2.RegisterRequest(
            email=email.upper(), password=PASSWORD, full_name=" Ada ", phone="+1 555 0100"
        )
    )
    user = registered.user
    assert (user.email, user.full_name, user.phone) == (email, "Ada", "+1 555 0100")
    assert (user.tier, user.role) == (auth_pb2.TIER_FREE, auth_pb2.ROLE_USER)
    assert uuid.UUID(user.user_id) and user.created_at.seconds > 0

    tokens = await login(auth, email)
    assert (tokens.token_type, tokens.expires_in) == ("bearer", 15 * 60)
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert {k: claims[k] for k in ("sub", "email", "tier", "role", "typ")} == {
        "sub": user.user_id,
        "email": email,
        "tier": "free",
        "role": "user",
        "typ": "access",
    }
    assert (claims["iss"], claims["aud"]) == ("ordermesh-auth", "ordermesh")

    me = await auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(tokens.access_token)
    )
    assert me.user == user

    refreshed = await auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token)
    )
    assert refreshed.token_type == "bearer"
    assert refreshed.access_token != tokens.access_token
    assert refreshed.refresh_token != tokens.refresh_token
    me_again = await auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(refreshed.access_token)
    )
    assert me_again.user.user_id == user.user_id

    jwks = await auth.GetJwks(auth_pb2.GetJwksRequest())
    kid = jwt.get_unverified_header(tokens.access_token)["kid"]
    assert kid in {key.kid for key in jwks.keys}
    for key in jwks.keys:
        assert (key.kty, key.use, key.alg, key.e) == ("RSA", "sig", "RS256", "AQAB")
        assert "=" not in key.n and len(base64.urlsafe_b64decode(key.n + "==")) == 256


async def test_a_refresh_token_works_once_and_a_reuse_ends_the_session(
    auth: auth_pb2_grpc.AuthServiceAsyncStub,
) -> None:
    email = unique_email()
    await register(auth, email)
    tokens = await login(auth, email)
    outcomes = await asyncio.gather(
        *(
            auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token))
            for _ in range(2)
        ),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, auth_pb2.RefreshTokenResponse)]
    losers = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert (len(winners), len(losers)) == (1, 1), outcomes
    assert losers[0].code() is grpc.StatusCode.UNAUTHENTICATED
    assert "already used" in (losers[0].details() or "")
    error = await rpc_error(
        auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=winners[0].refresh_token))
    )
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED, "the family was revoked"
    again = await login(auth, email)
    assert await auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=again.refresh_token)
    ), "a new login starts a new family"


async def test_logout_ends_the_login_and_needs_only_the_refresh_token(
    auth: auth_pb2_grpc.AuthServiceAsyncStub,
) -> None:
    email = unique_email()
    await register(auth, email)
    tokens = await login(auth, email)
    logout = auth_pb2.LogoutRequest(refresh_token=tokens.refresh_token)
    assert await auth.Logout(logout) == auth_pb2.LogoutResponse()
    error = await rpc_error(
        auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token))
    )
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert await auth.Logout(logout) == auth_pb2.LogoutResponse(), "idempotent"
    for wrong in (tokens.access_token, "not.a.jwt", ""):
        error = await rpc_error(auth.Logout(auth_pb2.LogoutRequest(refresh_token=wrong)))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_public_calls_ignore_a_stale_token_sent_along(
    auth: auth_pb2_grpc.AuthServiceAsyncStub,
) -> None:
    email = unique_email()
    await register(auth, email)
    tokens = await login(auth, email)
    # Clients often attach their (by now expired or garbled) access token to every call.
    refreshed = await auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token),
        metadata=bearer("expired.or.garbage"),
    )
    assert refreshed.access_token
    assert await auth.GetJwks(auth_pb2.GetJwksRequest(), metadata=bearer("nonsense"))
    error = await rpc_error(auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest()))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED, "a private call still needs one"


async def test_every_answer_carries_the_request_id_errors_included(
    auth: auth_pb2_grpc.AuthServiceAsyncStub,
) -> None:
    sent = (("x-request-id", "req-42.a:b"),)
    call = auth.Login(auth_pb2.LoginRequest(email=unique_email(), password="wrong"), metadata=sent)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert ("x-request-id", "req-42.a:b") in tuple(raised.value.trailing_metadata() or ())
    hostile = (("x-request-id", '"}{"admin":true ' + "x" * 200),)
    ok = auth.GetJwks(auth_pb2.GetJwksRequest(), metadata=hostile)
    await ok
    ids = [v for k, v in tuple(await ok.trailing_metadata() or ()) if k == "x-request-id"]
    assert len(ids) == 1 and len(ids[0]) == 32, "a malformed id is replaced, not echoed"


async def test_email_is_unique_whatever_its_case(auth: auth_pb2_grpc.AuthServiceAsyncStub) -> None:
    email = unique_email()
    await register(auth, email)
    error = await rpc_error(register(auth, email.upper()))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS
    assert email in (error.details() or "")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "not-an-email"),
        ("password", "short"),
        ("full_name", ""),
        ("phone", "5" * 41),
    ],
)
async def test_invalid_registrations_name_the_field(
    auth: auth_pb2_grpc.AuthServiceAsyncStub, field: str, value: str
) -> None:
    request = auth_pb2.RegisterRequest(
        email=unique_email(), password=PASSWORD, full_name="Ada", phone=""
    )
    setattr(request, field, value)
    error = await rpc_error(auth.Register(request))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in (error.details() or "")
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == [field]


async def test_wrong_password_and_unknown_email_look_the_same(
    auth: auth_pb2_grpc.AuthServiceAsyncStub,
) -> None:
    email = unique_email()
    await register(auth, email)

    async def failed_login(email: str, password: str) -> tuple[str, float]:
        started = time.perf_counter()
        error = await rpc_error(auth.Login(auth_pb2.LoginRequest(email=email, password=password)))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        return error.details() or "", time.perf_counter() - started

    wrong_password = [await failed_login(email, "wrong password") for _ in range(3)]
    unknown_email = [await failed_login(unique_email(), PASSWORD) for _ in range(3)]
    assert {message for message, _ in wrong_password + unknown_email} == {
        "invalid email or password"
    }
    fastest_wrong = min(seconds for _, seconds in wrong_password)
    fastest_unknown = min(seconds for _, seconds in unknown_email)
    assert fastest_unknown > fastest_wrong / 4, (fastest_unknown, fastest_wrong)


async def test_calls_without_a_valid_access_token_are_refused(
    auth: auth_pb2_grpc.AuthServiceAsyncStub,
) -> None:
    email = unique_email()
    await register(auth, email)
    tokens = await login(auth, email)

    me = auth_pb2.GetCurrentUserRequest()
    for metadata in ((), bearer("not.a.jwt"), (("authorization", tokens.access_token),)):
        error = await rpc_error(auth.GetCurrentUser(me, metadata=metadata))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED

    error = await rpc_error(auth.GetCurrentUser(me, metadata=bearer(tokens.refresh_token)))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "access token is required" in (error.details() or "")

    error = await rpc_error(
        auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=tokens.access_token))
    )
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "refresh token is required" in (error.details() or "")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_forged_and_unsigned_tokens_are_refused(
    auth: auth_pb2_grpc.AuthServiceAsyncStub,
) -> None:
    email = unique_email()
    await register(auth, email)
    genuine = await login(auth, email)
    header = jwt.get_unverified_header(genuine.access_token)
    claims = jwt.decode(genuine.access_token, options={"verify_signature": False})
    claims["role"] = "admin"
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    forged_with_real_kid = jwt.encode(claims, impostor, algorithm="RS256", headers=header)
    forged_with_own_kid = jwt.encode(claims, impostor, algorithm="RS256", headers={"kid": "evil"})
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': header['kid']})}.{_b64(claims)}."

    for token, reason in (
        (forged_with_real_kid, "invalid token"),
        (forged_with_own_kid, "unknown key"),
        (unsigned, "algorithm must be RS256"),
    ):
        error = await rpc_error(
            auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=bearer(token))
        )
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert reason in (error.details() or "")


async def test_access_tokens_expire(
    settings: Settings, pool: Pool, auth: auth_pb2_grpc.AuthServiceAsyncStub
) -> None:
    short_lived = dataclasses.replace(settings, access_token_ttl_seconds=1)
    async with grpc_stack(short_lived, pool, [auth_bootstrap.component]) as other:
        short_auth = auth_pb2_grpc.AuthServiceStub(other.channel)
        email = unique_email()
        await register(short_auth, email)
        tokens = await login(short_auth, email)
    assert tokens.expires_in == 1
    request = auth_pb2.GetCurrentUserRequest()
    error = None
    deadline = time.monotonic() + 10
    while error is None and time.monotonic() < deadline:
        try:
            await auth.GetCurrentUser(request, metadata=bearer(tokens.access_token))
        except grpc.aio.AioRpcError as refused:
            error = refused
        else:
            await asyncio.sleep(0.2)
    assert error is not None, "the access token was still accepted after 10 s"
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in (error.details() or "")


async def test_create_admin_command(
    settings: Settings, auth: auth_pb2_grpc.AuthServiceAsyncStub
) -> None:
    email = unique_email()
    env = {
        **os.environ,
        "ORDERMESH_ENV": "test",
        "ORDERMESH_DATABASE_URL": settings.database_url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.auth.create_admin",
        "--email",
        email,
        "--full-name",
        "Root",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(f"{PASSWORD}\n".encode()), 60)
    assert process.returncode == 0, err.decode()
    tokens = await login(auth, email)
    me = await auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(tokens.access_token)
    )
    assert (me.user.user_id, me.user.role) == (out.decode().strip(), auth_pb2.ROLE_ADMIN)
    assert jwt.decode(tokens.access_token, options={"verify_signature": False})["role"] == "admin"

    with pytest.raises(AlreadyExists):
        await create_admin(settings, email=email, password=PASSWORD, full_name="Root")


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture
def operator_cli(
    settings: Settings,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., Awaitable[tuple[int, str, str]]]:
    """`ordermesh ARGS...` against this session's database, as the auth service's role."""

    def test_env(ports: Ports) -> dict[str, str]:
        return {
            "ORDERMESH_ENV": "test",
            "ORDERMESH_DATABASE_URL": settings.database_url,
            "ORDERMESH_AUTH_DATABASE_URL": postgres.dsn("auth", database=database),
        }

    monkeypatch.setattr(devstack_stack, "app_env", test_env)

    async def run(*argv: str) -> tuple[int, str, str]:
        # The command runs its own event loop, as it does from a shell.
        code = await asyncio.to_thread(cli.main, list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


async def test_a_new_tier_or_role_reaches_the_next_token_and_old_tokens_keep_theirs(
    auth: auth_pb2_grpc.AuthServiceAsyncStub,
    operator_cli: Callable[..., Awaitable[tuple[int, str, str]]],
) -> None:
    email = unique_email()
    await register(auth, email)
    before = await login(auth, email)
    assert (claims_of(before.access_token)["tier"], claims_of(before.access_token)["role"]) == (
        "free",
        "user",
    )

    code, out, _ = await operator_cli("users", "set-tier", email.upper(), "premium")
    assert code == 0
    assert f"{email}: tier free -> premium\n" in out
    refreshed = await auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=before.refresh_token)
    )
    assert claims_of(refreshed.access_token)["tier"] == "premium"
    assert claims_of((await login(auth, email)).access_token)["tier"] == "premium"
    # The token issued before still says free, and is still valid, until it expires.
    assert claims_of(before.access_token)["tier"] == "free"
    me = await auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(before.access_token)
    )
    assert me.user.tier == auth_pb2.TIER_PREMIUM

    code, out, _ = await operator_cli("users", "set-role", email, "admin")
    assert (code, out.splitlines()[0]) == (0, f"{email}: role user -> admin")
    after = await login(auth, email)
    assert (claims_of(after.access_token)["tier"], claims_of(after.access_token)["role"]) == (
        "premium",
        "admin",
    )
    assert claims_of(refreshed.access_token)["role"] == "user"

    code, out, _ = await operator_cli("users", "set-role", email, "admin")
    assert (code, out) == (0, f"{email}: role admin -> admin (unchanged)\n")


async def test_users_commands_name_an_unknown_account_and_check_their_values(
    operator_cli: Callable[..., Awaitable[tuple[int, str, str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    nobody = unique_email()
    for argv in (("set-tier", nobody, "standard"), ("set-role", nobody, "system")):
        code, out, err = await operator_cli("users", *argv)
        assert (code, out) == (1, "")
        assert f"no account with email {nobody}" in err

    for argv in (("set-tier", nobody, "gold"), ("set-role", nobody, "root")):
        with pytest.raises(SystemExit) as exited:
            cli.main(["users", *argv])
        assert exited.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class KeyDatabase:
    settings: Settings
    pool: Pool


@pytest.fixture
async def key_database(settings: Settings) -> AsyncIterator[KeyDatabase]:
    """A database of its own, so key bootstrap and rotation start from no keys at all and
    never disturb the keys of the shared database."""
    name = f"auth_keys_{uuid.uuid4().hex[:12]}"
    postgres.psql(f"CREATE DATABASE {name} OWNER {postgres.ROLE}")
    isolated = dataclasses.replace(
        settings,
        database_url=settings.database_url.rsplit("/", 1)[0] + f"/{name}",
        database_pool_min=0,
    )
    try:
        async with await psycopg.AsyncConnection.connect(
            isolated.database_url, autocommit=True
        ) as conn:
            await migrations.apply(
                conn,
                migrations.discover("platform", migrations.PLATFORM_FOLDER)
                + migrations.discover("auth", AUTH_MIGRATIONS),
            )
        pool = await open_pool(isolated, name="tests-auth-keys")
        try:
            yield KeyDatabase(isolated, pool)
        finally:
            await pool.close()
    finally:
        postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def verifier_of(store: PostgresSigningKeyStore, settings: Settings) -> TokenVerifier:
    async def fetch() -> dict[str, Any]:
        keys = await store.published()
        return {"keys": [{"kty": "RSA", "kid": k.kid, "n": k.n, "e": k.e} for k in keys]}

    return TokenVerifier(
        fetch, issuer=settings.jwt_issuer, audience=settings.jwt_audience, min_refetch_interval=0
    )


async def sign(store: PostgresSigningKeyStore, settings: Settings, subject: str) -> str:
    kid, key = await store.signing_key()
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "iat": now,
        "exp": now + 60,
        "typ": "access",
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


async def test_replicas_starting_together_create_one_signing_key(
    key_database: KeyDatabase,
) -> None:
    replicas = [signing_key_store(key_database.settings, key_database.pool) for _ in range(4)]
    found = await asyncio.gather(*(replica.signing_key() for replica in replicas))
    assert len({kid for kid, _ in found}) == 1
    assert len(await replicas[0].all()) == 1


async def test_rotation_publishes_first_then_signs_and_old_tokens_stay_valid(
    key_database: KeyDatabase,
) -> None:
    settings = key_database.settings
    store = signing_key_store(settings, key_database.pool)
    verifier = verifier_of(store, settings)
    before = await sign(store, settings, "before-rotation")
    old_kid = jwt.get_unverified_header(before)["kid"]

    pending = await asyncio.gather(store.pending_or_new(), store.pending_or_new())
    assert pending[0].kid == pending[1].kid != old_kid
    assert {key.kid for key in await store.published()} == {old_kid, pending[0].kid}
    assert (await store.signing_key())[0] == old_kid

    outcome = await rotate(settings, publish_delay=timedelta(0))
    assert outcome == RotationOutcome(activated_kid=pending[0].kid, retired_kids=())
    after = await sign(store, settings, "after-rotation")
    assert jwt.get_unverified_header(after)["kid"] == pending[0].kid
    assert (await verifier.principal(f"Bearer {before}")).user_id == "before-rotation"
    assert (await verifier.principal(f"Bearer {after}")).user_id == "after-rotation"


async def test_private_keys_are_encrypted_at_rest(key_database: KeyDatabase) -> None:
    settings = key_database.settings
    kid, _ = await signing_key_store(settings, key_database.pool).signing_key()
    async with key_database.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT private_key_encrypted FROM auth.signing_keys WHERE kid = %s", (kid,)
        )
        row = await cursor.fetchone()
    assert row is not None
    assert b"PRIVATE KEY" not in bytes(row["private_key_encrypted"])
    other_secret = dataclasses.replace(settings, key_encryption_secret="another secret " * 4)
    with pytest.raises(SigningKeyUnavailable, match="ORDERMESH_KEY_ENCRYPTION_SECRET"):
        await signing_key_store(other_secret, key_database.pool).signing_key()
