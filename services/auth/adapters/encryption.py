"""Encryption at rest for signing keys: Fernet (AES-128-CBC + HMAC-SHA256) under a key
derived with HKDF-SHA256 from ORDERMESH_KEY_ENCRYPTION_SECRET, bound to one purpose."""

import base64

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SIGNING_KEYS_PURPOSE = "ordermesh/auth/signing-keys/v1"


def fernet_for(secret: str, purpose: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        secret.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))
