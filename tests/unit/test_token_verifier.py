"""The services' JWKS cache (services/platform/tokens.py) on an injected clock: keys expire
with the cache, a failed refetch serves known keys for a bounded grace, and unknown key ids
cannot make it hammer the auth service. Verified access tokens are remembered, boundedly,
and still expire, and still need a key the set accepts."""

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.common.errors import DependencyUnavailable, Unauthenticated
from services.platform.tokens import TokenVerifier

ISSUER, AUDIENCE = "test-issuer", "test-audience"
CACHE, GRACE, REFETCH_INTERVAL = 300.0, 120.0, 5.0
VERIFIED_FOR, VERIFIED_SIZE = 60.0, 3


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {
        kid: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for kid in ("old", "new", "impostor")
    }


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class AuthService:
    """Publishes the JWKS of `published`; while `down`, every fetch fails."""

    keys: dict[str, rsa.RSAPrivateKey]
    published: set[str] = field(default_factory=lambda: {"old"})
    down: bool = False
    fetches: int = 0

    async def jwks(self) -> dict[str, Any]:
        self.fetches += 1
        if self.down:
            raise ConnectionError("auth service unreachable")
        return {
            "keys": [
                {**RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True), "kid": kid}
                for kid in sorted(self.published)
            ]
        }


def token(
    key: rsa.RSAPrivateKey,
    kid: str,
    *,
    lifetime: int = 3600,
    typ: str = "access",
    subject: str = "user-1",
) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + lifetime,
        "typ": typ,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(keys: dict[str, rsa.RSAPrivateKey]) -> AuthService:
    return AuthService(keys)


@pytest.fixture
def wall() -> Clock:
    return Clock(time.time())


@pytest.fixture
def verifier(auth: AuthService, clock: Clock, wall: Clock) -> TokenVerifier:
    return TokenVerifier(
        auth.jwks,
        issuer=ISSUER,
        audience=AUDIENCE,
        cache_seconds=CACHE,
        stale_grace_seconds=GRACE,
        min_refetch_interval=REFETCH_INTERVAL,
        verified_cache_seconds=VERIFIED_FOR,
        verified_cache_size=VERIFIED_SIZE,
        clock=clock,
        wall_clock=wall,
    )


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The tokens the verifier checked a signature of, in order."""
    checked: list[str] = []
    decode = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        checked.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    yield checked


async def accepted(verifier: TokenVerifier, signed: str) -> bool:
    return (await verifier.principal(f"Bearer {signed}")).user_id == "user-1"


async def test_a_key_no_longer_published_is_refused_once_the_cache_expires(
    keys: dict[str, rsa.RSAPrivateKey], auth: AuthService, clock: Clock, verifier: TokenVerifier
) -> None:
    old = token(keys["old"], "old")
    assert await accepted(verifier, old)
    auth.published = {"new"}
    clock.now += CACHE - 1
    assert await accepted(verifier, old), "still cached"
    assert auth.fetches == 1
    clock.now += 1
    with pytest.raises(Unauthenticated, match="unknown key"):
        await verifier.principal(f"Bearer {old}")
    assert auth.fetches == 2
    assert await accepted(verifier, token(keys["new"], "new"))
    assert auth.fetches == 2


async def test_the_key_set_is_fetched_once_per_cache_period(
    keys: dict[str, rsa.RSAPrivateKey], auth: AuthService, clock: Clock, verifier: TokenVerifier
) -> None:
    old = token(keys["old"], "old")
    for _ in range(3):
        for _ in range(20):
            assert await accepted(verifier, old)
            clock.now += CACHE / 20
    assert auth.fetches == 3


async def test_a_failed_refetch_serves_known_keys_for_the_grace_then_fails_closed(
    keys: dict[str, rsa.RSAPrivateKey], auth: AuthService, clock: Clock, verifier: TokenVerifier
) -> None:
    old = token(keys["old"], "old")
    assert await accepted(verifier, old)
    fetched_at = clock.now
    auth.down = True

    clock.now = fetched_at + CACHE
    assert await accepted(verifier, old), "a blip does not fail calls"
    assert auth.fetches == 2
    clock.now += REFETCH_INTERVAL - 1
    assert await accepted(verifier, old)
    assert auth.fetches == 2, "failed refetches are rate-limited too"
    clock.now += 1
    assert await accepted(verifier, old)
    assert auth.fetches == 3

    clock.now = fetched_at + CACHE + GRACE - 1
    assert await accepted(verifier, old)
    clock.now = fetched_at + CACHE + GRACE
    with pytest.raises(DependencyUnavailable):
        await verifier.principal(f"Bearer {old}")

    auth.down = False
    auth.published = {"new"}
    clock.now += REFETCH_INTERVAL
    with pytest.raises(Unauthenticated, match="unknown key"):
        await verifier.principal(f"Bearer {old}")
    assert await accepted(verifier, token(keys["new"], "new"))


async def test_forged_key_ids_refetch_at_most_once_per_interval(
    keys: dict[str, rsa.RSAPrivateKey], auth: AuthService, clock: Clock, verifier: TokenVerifier
) -> None:
    assert await accepted(verifier, token(keys["old"], "old"))
    clock.now += REFETCH_INTERVAL
    for n in range(50):
        with pytest.raises(Unauthenticated, match="unknown key"):
            await verifier.principal(f"Bearer {token(keys['impostor'], f'forged-{n}')}")
    assert auth.fetches == 2


async def test_a_new_key_is_picked_up_before_the_cache_expires(
    keys: dict[str, rsa.RSAPrivateKey], auth: AuthService, clock: Clock, verifier: TokenVerifier
) -> None:
    assert await accepted(verifier, token(keys["old"], "old"))
    auth.published = {"old", "new"}
    clock.now += REFETCH_INTERVAL
    assert await accepted(verifier, token(keys["new"], "new"))
    assert await accepted(verifier, token(keys["old"], "old"))
    assert auth.fetches == 2


async def test_an_unknown_key_while_the_auth_service_is_down_is_unavailable(
    keys: dict[str, rsa.RSAPrivateKey], auth: AuthService, clock: Clock, verifier: TokenVerifier
) -> None:
    auth.down = True
    with pytest.raises(DependencyUnavailable):
        await verifier.principal(f"Bearer {token(keys['old'], 'old')}")
    auth.down = False
    with pytest.raises(DependencyUnavailable):
        await verifier.principal(f"Bearer {token(keys['old'], 'old')}")
    assert auth.fetches == 1, "no retry before the refetch interval, even with no keys"
    clock.now += REFETCH_INTERVAL
    assert await accepted(verifier, token(keys["old"], "old"))
    auth.down = True
    clock.now += REFETCH_INTERVAL
    with pytest.raises(DependencyUnavailable):
        await verifier.principal(f"Bearer {token(keys['new'], 'new')}")


async def test_a_verified_token_is_reused_without_checking_its_signature_again(
    keys: dict[str, rsa.RSAPrivateKey], verifier: TokenVerifier, signature_checks: list[str]
) -> None:
    signed = token(keys["old"], "old")
    for _ in range(5):
        assert await accepted(verifier, signed)
    assert signature_checks == [signed]
    assert verifier.remembered_tokens == 1


async def test_a_remembered_token_is_refused_once_it_expires(
    keys: dict[str, rsa.RSAPrivateKey], verifier: TokenVerifier, wall: Clock
) -> None:
    signed = token(keys["old"], "old", lifetime=30)
    assert await accepted(verifier, signed)
    wall.now += 29
    assert await accepted(verifier, signed)
    wall.now += 1
    with pytest.raises(Unauthenticated, match="expired"):
        await verifier.principal(f"Bearer {signed}")
    assert verifier.remembered_tokens == 0


async def test_a_token_is_verified_again_after_the_reuse_period(
    keys: dict[str, rsa.RSAPrivateKey],
    clock: Clock,
    verifier: TokenVerifier,
    signature_checks: list[str],
) -> None:
    signed = token(keys["old"], "old")
    assert await accepted(verifier, signed)
    clock.now += VERIFIED_FOR - 1
    assert await accepted(verifier, signed)
    assert len(signature_checks) == 1
    clock.now += 1
    assert await accepted(verifier, signed)
    assert len(signature_checks) == 2


async def test_a_remembered_token_whose_key_is_retired_is_refused(
    keys: dict[str, rsa.RSAPrivateKey],
    auth: AuthService,
    clock: Clock,
    verifier: TokenVerifier,
    signature_checks: list[str],
) -> None:
    """Retiring a key (the way to revoke what it signed) takes effect for remembered tokens
    exactly as for new ones: when the key set is refetched."""
    old = token(keys["old"], "old")
    assert await accepted(verifier, old)
    auth.published = {"new"}
    clock.now += REFETCH_INTERVAL
    assert await accepted(verifier, old), "the key set is not refetched before its cache ends"
    clock.now = 1000.0 + CACHE
    with pytest.raises(Unauthenticated, match="unknown key"):
        await verifier.principal(f"Bearer {old}")
    with pytest.raises(Unauthenticated, match="unknown key"):
        await verifier.principal(f"Bearer {old}")
    assert signature_checks == [old]


async def test_a_remembered_token_fails_closed_when_the_key_set_is_unavailable(
    keys: dict[str, rsa.RSAPrivateKey], auth: AuthService, clock: Clock, verifier: TokenVerifier
) -> None:
    signed = token(keys["old"], "old")
    assert await accepted(verifier, signed)
    auth.down = True
    clock.now = 1000.0 + CACHE + GRACE
    with pytest.raises(DependencyUnavailable):
        await verifier.principal(f"Bearer {signed}")


async def test_a_refetched_key_set_makes_remembered_tokens_verified_afresh(
    keys: dict[str, rsa.RSAPrivateKey],
    clock: Clock,
    verifier: TokenVerifier,
    signature_checks: list[str],
) -> None:
    signed = token(keys["old"], "old")
    assert await accepted(verifier, signed)
    clock.now = 1000.0 + CACHE
    assert await accepted(verifier, signed)
    assert signature_checks == [signed, signed]


async def test_the_remembered_tokens_are_bounded_oldest_first(
    keys: dict[str, rsa.RSAPrivateKey], verifier: TokenVerifier, signature_checks: list[str]
) -> None:
    signed = [token(keys["old"], "old", subject="user-1", lifetime=3600 + n) for n in range(5)]
    for each in signed:
        assert await accepted(verifier, each)
    assert verifier.remembered_tokens == VERIFIED_SIZE
    assert await accepted(verifier, signed[-1])
    assert await accepted(verifier, signed[0]), "forgotten, so verified again"
    assert signature_checks == [*signed, signed[0]]
    assert verifier.remembered_tokens == VERIFIED_SIZE


async def test_refused_tokens_and_refresh_tokens_are_never_remembered(
    keys: dict[str, rsa.RSAPrivateKey], verifier: TokenVerifier, signature_checks: list[str]
) -> None:
    refresh = token(keys["old"], "old", typ="refresh")
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="access token is required"):
            await verifier.principal(f"Bearer {refresh}")
        assert (await verifier.claims(refresh, expected_type="refresh"))["typ"] == "refresh"
    forged = token(keys["impostor"], "old")
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="invalid token"):
            await verifier.principal(f"Bearer {forged}")
    assert signature_checks == [refresh, refresh, refresh, refresh, forged, forged]
    assert verifier.remembered_tokens == 0


async def test_no_token_is_remembered_with_a_reuse_period_of_zero(
    keys: dict[str, rsa.RSAPrivateKey], auth: AuthService, signature_checks: list[str]
) -> None:
    verifier = TokenVerifier(auth.jwks, issuer=ISSUER, audience=AUDIENCE, verified_cache_seconds=0)
    signed = token(keys["old"], "old")
    assert await accepted(verifier, signed)
    assert await accepted(verifier, signed)
    assert signature_checks == [signed, signed]
    assert verifier.remembered_tokens == 0
