"""Tokens the edge must refuse, made the way the auth service makes real ones."""

from datetime import UTC, datetime, timedelta

from devstack.ports import Ports
from devstack.stack import app_env
from services.auth.adapters.tokens import JwtTokenIssuer
from services.auth.bootstrap import signing_key_store, token_policy
from services.auth.domain.model import User as AuthUser
from services.common.identity import Role, Tier
from services.platform.db import open_pool
from services.platform.settings import Settings
from tests.e2e.conftest import User


async def expired_token(user: User) -> str:
    """An access token of ``user`` signed by the stack's own auth key, expired an hour ago."""
    settings = Settings.from_env(app_env(Ports.from_env()))
    pool = await open_pool(settings, name="e2e-expired-token", component="auth")
    try:
        issuer = JwtTokenIssuer(
            signing_key_store(settings, pool),
            token_policy(settings),
            clock=lambda: datetime.now(UTC) - timedelta(hours=1),
        )
        account = AuthUser(
            user_id=user.user_id,
            email=user.email,
            full_name="E2E Tester",
            phone=None,
            tier=Tier.FREE,
            role=Role.USER,
            created_at=datetime.now(UTC),
            password_hash="",
        )
        return (await issuer.issue(account)).access_token
    finally:
        await pool.close()
