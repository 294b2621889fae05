"""The auth adapters that need no database: JWT signing, JWK encoding, hashing, encryption."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import argon2
import jwt
import pytest
from cryptography.fernet import InvalidToken
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from services.auth.adapters.encryption import SIGNING_KEYS_PURPOSE, fernet_for
from services.auth.adapters.hashing import RETRY_AFTER_SECONDS, Argon2PasswordHasher
from services.auth.adapters.keys import jwk_thumbprint, public_key_from_pem
from services.auth.adapters.tokens import JwtTokenIssuer
from services.auth.domain.model import TokenPolicy, User
from services.common.errors import ResourceExhausted, Unauthenticated
from services.common.identity import Role, Tier
from services.platform.tokens import TokenVerifier
from tests.gated_hashing import GatedArgon2

POLICY = TokenPolicy("test-issuer", "test-audience", timedelta(minutes=15), timedelta(days=7))
USER = User(
    user_id="7d1c9a5e-0000-4000-8000-000000000001",
    email="ada@example.com",
    full_name="Ada",
    phone=None,
    tier=Tier.STANDARD,
    role=Role.USER,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    password_hash="unused",
)


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class StaticKey:
    def __init__(self, kid: str, key: rsa.RSAPrivateKey) -> None:
        self._kid = kid
        self._key = key

    async def signing_key(self) -> tuple[str, rsa.RSAPrivateKey]:
        return self._kid, self._key


def jwks_for(kid: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    public = public_key_from_pem(kid, pem)
    return {
        "keys": [
            {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": public.n, "e": public.e}
        ]
    }


def verifier_for(document: dict[str, Any]) -> TokenVerifier:
    async def fetch() -> dict[str, Any]:
        return document

    return TokenVerifier(fetch, issuer=POLICY.issuer, audience=POLICY.audience)


async def test_issued_tokens_verify_against_the_published_key(
    private_key: rsa.RSAPrivateKey,
) -> None:
    pair = await JwtTokenIssuer(StaticKey("k1", private_key), POLICY).issue(USER)
    verifier = verifier_for(jwks_for("k1", private_key))
    principal = await verifier.principal(f"Bearer {pair.access_token}")
    assert (principal.user_id, principal.email, principal.role, principal.tier) == (
        USER.user_id,
        USER.email,
        Role.USER,
        Tier.STANDARD,
    )
    refresh = await verifier.claims(pair.refresh_token, expected_type="refresh")
    assert refresh["exp"] - refresh["iat"] == 7 * 24 * 3600
    assert pair.refresh.token_id == refresh["jti"], "the server stores it under its jti"
    assert (pair.refresh.issued_at.timestamp(), pair.refresh.expires_at.timestamp()) == (
        refresh["iat"],
        refresh["exp"],
    )
    assert pair.expires_in_seconds == 15 * 60
    assert jwt.get_unverified_header(pair.access_token) == {
        "alg": "RS256",
        "kid": "k1",
        "typ": "JWT",
    }


async def test_access_and_refresh_tokens_are_not_interchangeable(
    private_key: rsa.RSAPrivateKey,
) -> None:
    pair = await JwtTokenIssuer(StaticKey("k1", private_key), POLICY).issue(USER)
    verifier = verifier_for(jwks_for("k1", private_key))
    with pytest.raises(Unauthenticated, match="access token is required"):
        await verifier.principal(f"Bearer {pair.refresh_token}")
    with pytest.raises(Unauthenticated, match="refresh token is required"):
        await verifier.claims(pair.access_token, expected_type="refresh")


async def test_every_token_has_its_own_id(private_key: rsa.RSAPrivateKey) -> None:
    issuer = JwtTokenIssuer(StaticKey("k1", private_key), POLICY)
    pairs = [await issuer.issue(USER) for _ in range(3)]
    ids = {
        jwt.decode(token, options={"verify_signature": False})["jti"]
        for pair in pairs
        for token in (pair.access_token, pair.refresh_token)
    }
    assert len(ids) == 6


def test_public_key_encoding_matches_pyjwt(private_key: rsa.RSAPrivateKey) -> None:
    pem = private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    public = public_key_from_pem("k1", pem.decode())
    expected = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
    assert (public.n, public.e) == (expected["n"], expected["e"])
    assert "=" not in public.n


def test_key_ids_are_rfc7638_thumbprints() -> None:
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD"
        "W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vM"
        "QFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    assert jwk_thumbprint(n, "AQAB") == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def argon2_hasher(backend: argon2.PasswordHasher | None = None) -> Argon2PasswordHasher:
    return Argon2PasswordHasher(backend, max_concurrent=2, max_queued=8)


async def test_argon2id_hashes_verify_only_the_right_password() -> None:
    hasher = argon2_hasher()
    hashed = await hasher.hash("correct horse")
    assert hashed.startswith("$argon2id$")
    assert await hasher.verify("correct horse", hashed)
    assert not await hasher.verify("wrong horse", hashed)
    assert not await hasher.verify("correct horse", "not a hash")
    assert not await hasher.verify("correct horse", hasher.dummy_hash)
    assert not hasher.needs_rehash(hashed)


async def test_hashes_made_with_weaker_parameters_need_rehashing() -> None:
    weak = argon2_hasher(argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    hashed = await weak.hash("correct horse")
    assert argon2_hasher().needs_rehash(hashed)
    assert await argon2_hasher().verify("correct horse", hashed)


@pytest.mark.parametrize("max_queued", [0, 3])
async def test_a_full_hash_queue_refuses_new_work_at_once(max_queued: int) -> None:
    backend = GatedArgon2()
    hasher = Argon2PasswordHasher(backend, max_concurrent=1, max_queued=max_queued)
    stored = await hasher.hash("correct horse")
    backend.armed = True
    verifying = asyncio.create_task(hasher.verify("correct horse", stored))
    queued = [asyncio.create_task(hasher.hash(f"queued {n}")) for n in range(max_queued)]
    try:
        # One loop turn runs each task to where it waits: the first in its worker thread,
        # the others on the semaphore.
        await asyncio.sleep(0)
        for refused_call in (hasher.hash("one too many"), hasher.verify("correct horse", stored)):
            with pytest.raises(ResourceExhausted) as refused:
                # Refused at once; the timeout only keeps a broken bound from hanging here.
                await asyncio.wait_for(refused_call, timeout=5)
            assert refused.value.retry_after_seconds == RETRY_AFTER_SECONDS
        assert not verifying.done() and not any(task.done() for task in queued)
    finally:
        backend.released.set()
    assert await verifying is True
    assert all(hashed.startswith("$argon2id$") for hashed in await asyncio.gather(*queued))
    assert await hasher.verify("correct horse", stored), "slots are given back"


def test_hash_queue_bounds_must_make_sense() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        Argon2PasswordHasher(max_concurrent=0, max_queued=1)
    with pytest.raises(ValueError, match="max_queued"):
        Argon2PasswordHasher(max_concurrent=1, max_queued=-1)


def test_encryption_is_bound_to_the_secret_and_the_purpose() -> None:
    sealed = fernet_for("secret-one", SIGNING_KEYS_PURPOSE).encrypt(b"private key")
    assert fernet_for("secret-one", SIGNING_KEYS_PURPOSE).decrypt(sealed) == b"private key"
    with pytest.raises(InvalidToken):
        fernet_for("secret-two", SIGNING_KEYS_PURPOSE).decrypt(sealed)
    with pytest.raises(InvalidToken):
        fernet_for("secret-one", "another/purpose").decrypt(sealed)
