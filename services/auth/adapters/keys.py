"""Token signing keys in `auth.signing_keys`: RSA-2048, the private half encrypted at rest.

Writes that create or activate keys hold one transaction-scoped advisory lock, so replicas
starting together create a single first key, and concurrent rotations share one pending key.
"""

import asyncio
import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.auth.domain.model import PublicKey, SigningKeyInfo
from services.platform.db import Connection, Pool

KEY_SIZE = 2048
PUBLIC_EXPONENT = 65537

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('auth.signing_keys', 0))"
_INFO = "kid, created_at, activated_at, retired_at"
_ACTIVE = (
    "SELECT kid, private_key_encrypted FROM auth.signing_keys"
    " WHERE activated_at IS NOT NULL AND retired_at IS NULL"
    " ORDER BY activated_at DESC, kid DESC LIMIT 1"
)
_PENDING = (
    f"SELECT {_INFO} FROM auth.signing_keys WHERE activated_at IS NULL AND retired_at IS NULL"
)


class SigningKeyUnavailable(RuntimeError):
    """A stored key cannot be used, typically because the encryption secret changed."""


@dataclass(frozen=True, slots=True)
class _NewKey:
    kid: str
    public_key_pem: str
    private_key_encrypted: bytes


def _base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _base64url_uint(value: int) -> str:
    return _base64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _jwk_numbers(key: rsa.RSAPublicKey) -> tuple[str, str]:
    numbers = key.public_numbers()
    return _base64url_uint(numbers.n), _base64url_uint(numbers.e)


def public_key_from_pem(kid: str, pem: str) -> PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise SigningKeyUnavailable(f"signing key {kid} is not an RSA key")
    n, e = _jwk_numbers(key)
    return PublicKey(kid=kid, n=n, e=e)


def jwk_thumbprint(n: str, e: str) -> str:
    """RFC 7638: the key id is a hash of the key itself, so it never collides by accident."""
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"), sort_keys=True)
    return _base64url(hashlib.sha256(canonical.encode()).digest())


def _info(row: dict[str, Any]) -> SigningKeyInfo:
    return SigningKeyInfo(
        kid=row["kid"],
        created_at=row["created_at"],
        activated_at=row["activated_at"],
        retired_at=row["retired_at"],
    )


async def _rows(conn: Connection, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cursor = await conn.execute(query, params)
    return await cursor.fetchall()


class PostgresSigningKeyStore:
    def __init__(self, pool: Pool, cipher: Fernet) -> None:
        self._pool = pool
        self._cipher = cipher
        self._private_keys: dict[str, rsa.RSAPrivateKey] = {}

    async def signing_key(self) -> tuple[str, rsa.RSAPrivateKey]:
        kid, encrypted = await self._active() or await self._create_first()
        key = self._private_keys.get(kid)
        if key is None:
            key = self._private_keys[kid] = self._decrypt(kid, encrypted)
        return kid, key

    async def published(self) -> list[PublicKey]:
        if await self._active() is None:
            await self._create_first()
        async with self._pool.connection() as conn:
            rows = await _rows(
                conn,
                "SELECT kid, public_key_pem FROM auth.signing_keys WHERE retired_at IS NULL"
                " ORDER BY created_at, kid",
            )
        return [public_key_from_pem(row["kid"], row["public_key_pem"]) for row in rows]

    async def pending_or_new(self) -> SigningKeyInfo:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_LOCK)
            rows = await _rows(conn, _PENDING)
            if not rows:
                key = await asyncio.to_thread(self._generate)
                rows = await _rows(
                    conn,
                    "INSERT INTO auth.signing_keys (kid, public_key_pem, private_key_encrypted)"
                    f" VALUES (%s, %s, %s) RETURNING {_INFO}",
                    (key.kid, key.public_key_pem, key.private_key_encrypted),
                )
        return _info(rows[0])

    async def activate(self, kid: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE auth.signing_keys SET activated_at = now()"
                " WHERE kid = %s AND activated_at IS NULL AND retired_at IS NULL",
                (kid,),
            )

    async def all(self) -> list[SigningKeyInfo]:
        async with self._pool.connection() as conn:
            rows = await _rows(conn, f"SELECT {_INFO} FROM auth.signing_keys ORDER BY created_at")
        return [_info(row) for row in rows]

    async def retire(self, kids: Sequence[str]) -> None:
        if not kids:
            return
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE auth.signing_keys SET retired_at = now()"
                " WHERE kid = ANY(%s) AND retired_at IS NULL",
                (list(kids),),
            )
        for kid in kids:
            self._private_keys.pop(kid, None)

    async def _active(self) -> tuple[str, bytes] | None:
        async with self._pool.connection() as conn:
            rows = await _rows(conn, _ACTIVE)
        return (rows[0]["kid"], rows[0]["private_key_encrypted"]) if rows else None

    async def _create_first(self) -> tuple[str, bytes]:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_LOCK)
            rows = await _rows(conn, _ACTIVE)
            if rows:
                return rows[0]["kid"], rows[0]["private_key_encrypted"]
            key = await asyncio.to_thread(self._generate)
            await conn.execute(
                "INSERT INTO auth.signing_keys"
                " (kid, public_key_pem, private_key_encrypted, activated_at)"
                " VALUES (%s, %s, %s, now())",
                (key.kid, key.public_key_pem, key.private_key_encrypted),
            )
            return key.kid, key.private_key_encrypted

    def _generate(self) -> _NewKey:
        private_key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_SIZE)
        public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        private_pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return _NewKey(
            kid=jwk_thumbprint(*_jwk_numbers(private_key.public_key())),
            public_key_pem=public_pem.decode(),
            private_key_encrypted=self._cipher.encrypt(private_pem),
        )

    def _decrypt(self, kid: str, encrypted: bytes) -> rsa.RSAPrivateKey:
        try:
            pem = self._cipher.decrypt(encrypted)
        except InvalidToken:
            raise SigningKeyUnavailable(
                f"cannot decrypt signing key {kid}: ORDERMESH_KEY_ENCRYPTION_SECRET is not the"
                " secret it was encrypted with"
            ) from None
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SigningKeyUnavailable(f"signing key {kid} is not an RSA key")
        return key
