"""Operators change an account's tier or role (`ordermesh users set-tier|set-role`).

Connects as the auth service's own database role. Access tokens carry the tier and role, and
the edge and the services trust a valid token's claims: a change takes effect at the
account's next token (login or refresh, both read the account afresh), while tokens issued
before keep the old values until they expire.
"""

from collections.abc import Awaitable, Callable

from services.auth import handlers
from services.auth.adapters.users import PostgresUserRepository
from services.auth.domain.commands import ChangeRole, ChangeTier
from services.auth.domain.model import AccessChange
from services.auth.domain.ports import UserRepository
from services.platform.db import open_pool
from services.platform.settings import Settings

AccessCommand = ChangeTier | ChangeRole

_HANDLERS: dict[type, Callable[..., Awaitable[AccessChange]]] = {
    ChangeTier: handlers.change_tier,
    ChangeRole: handlers.change_role,
}


async def change_access(settings: Settings, command: AccessCommand) -> AccessChange:
    pool = await open_pool(settings, name="auth-manage-users", component="auth")
    try:
        users: UserRepository = PostgresUserRepository(pool)
        return await _HANDLERS[type(command)](command, users)
    finally:
        await pool.close()
