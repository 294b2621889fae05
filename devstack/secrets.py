"""Secrets of the local stack: generated at random on first use into ``.run/secrets`` (mode
0700, files 0600, ignored by git) and read back afterwards. Nothing in the repository is a
usable secret; deleting the run dir (``make clean``) forgets them with the data they guard.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from devstack.paths import RUN_DIR

SECRETS_DIR = RUN_DIR / "secrets"
KEY_ENCRYPTION_SECRET = "key_encryption_secret"


def path(name: str, directory: Path = SECRETS_DIR) -> Path:
    return directory / name


def secret(name: str, *, nbytes: int = 32, directory: Path = SECRETS_DIR) -> str:
    """The secret ``name``, created (URL-safe, ``nbytes`` random bytes) if it does not exist.
    Creation is atomic, so concurrent first uses agree on one value."""
    target = path(name, directory)
    with contextlib.suppress(FileNotFoundError):
        return target.read_text().strip()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    value = secrets.token_urlsafe(nbytes)
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return target.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    return value


def key_encryption_secret_file() -> Path:
    """The file holding the key-encryption secret the auth service encrypts signing keys
    with (created if missing); passed as ``ORDERMESH_KEY_ENCRYPTION_SECRET_FILE``."""
    secret(KEY_ENCRYPTION_SECRET, nbytes=48)
    return path(KEY_ENCRYPTION_SECRET)


def database_password(role: str, directory: Path = SECRETS_DIR) -> str:
    return secret(f"postgres-{role}", directory=directory)
