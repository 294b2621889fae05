"""Signing secrets encrypted at rest: Fernet under a key derived with HKDF-SHA256 from
ORDERMESH_KEY_ENCRYPTION_SECRET. The dispatcher decrypts a secret to sign a delivery."""

import base64

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PURPOSE = "ordermesh/webhook/signing-secrets/v1"


class SecretCipher:
    def __init__(self, key_encryption_secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PURPOSE.encode()).derive(
            key_encryption_secret.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def decrypt(self, token: bytes) -> str:
        return self._fernet.decrypt(token).decode()
