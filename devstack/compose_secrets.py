"""Generates the secrets compose.yaml mounts, into ``./secrets`` (ignored by git):

- ``key_encryption_secret``: what the auth and webhook services encrypt their keys with;
- ``postgres-<role>``: a random password for the superuser, the owner role and each
  component's role (compose/postgres/create-roles.sh creates the roles from them);
- ``database-url-<component>`` and ``database-url-owner``: the DSNs the processes read
  through ``ORDERMESH_<COMPONENT>_DATABASE_URL_FILE``.

Existing files are kept, so running it again changes nothing. The directory is private
(0700) on the host; the files are world-readable (0644) because compose bind-mounts them into
containers whose processes run as an unprivileged user. Usage:
``python -m devstack.compose_secrets [DIRECTORY]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from devstack import secrets
from devstack.paths import REPO_ROOT
from services.platform.db import DATABASE_COMPONENTS, OWNER_ROLE, role_name

DEFAULT_DIRECTORY = REPO_ROOT / "secrets"
HOST = "postgres:5432"
DATABASE = "ordermesh"


def generate(directory: Path = DEFAULT_DIRECTORY) -> list[Path]:
    secrets.secret(secrets.KEY_ENCRYPTION_SECRET, nbytes=48, directory=directory)
    secrets.database_password("postgres", directory)
    urls = {"owner": OWNER_ROLE, **{c: role_name(c) for c in DATABASE_COMPONENTS}}
    for name, role in urls.items():
        password = secrets.database_password(role, directory)
        target = directory / f"database-url-{name}"
        if not target.exists():
            target.write_text(f"postgresql://{role}:{password}@{HOST}/{DATABASE}\n")
    written = sorted(directory.iterdir())
    for path in written:
        path.chmod(0o644)
    return written


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else DEFAULT_DIRECTORY
    for path in generate(directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
