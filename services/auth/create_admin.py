"""Creates an administrator: `python -m services.auth.create_admin --email E [--password P]`.

There is no public way to become an admin; operators (and tests) use this. Without
--password the password is prompted for, or read from the first line of standard input when
that is not a terminal, so it need not appear in the process list or shell history.
"""

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence

from services.auth import handlers
from services.auth.adapters.users import PostgresUserRepository
from services.auth.bootstrap import password_hasher
from services.auth.domain.commands import RegisterUser
from services.auth.domain.model import User
from services.common.errors import DomainError
from services.common.identity import Role
from services.platform.db import open_pool
from services.platform.settings import Settings


async def create_admin(settings: Settings, *, email: str, password: str, full_name: str) -> User:
    pool = await open_pool(settings, name="auth-create-admin")
    try:
        return await handlers.register_user(
            RegisterUser(email=email, password=password, full_name=full_name, role=Role.ADMIN),
            PostgresUserRepository(pool),
            password_hasher(settings),
        )
    finally:
        await pool.close()


def _read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("password for the new admin: ")
    return sys.stdin.readline().rstrip("\r\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.auth.create_admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--email", required=True)
    parser.add_argument("--password")
    parser.add_argument("--full-name", default="Administrator")
    args = parser.parse_args(argv)
    password = args.password if args.password is not None else _read_password()
    try:
        user = asyncio.run(
            create_admin(
                Settings.from_env(), email=args.email, password=password, full_name=args.full_name
            )
        )
    except DomainError as error:
        parser.exit(1, f"{parser.prog}: {error}\n")
    print(user.user_id)


if __name__ == "__main__":
    main()
