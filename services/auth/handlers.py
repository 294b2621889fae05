"""One function per auth command or query, taking its ports as arguments."""

import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from services.auth.domain.commands import (
    ChangeRole,
    ChangeTier,
    Login,
    Logout,
    RefreshTokens,
    RegisterUser,
    RotateSigningKey,
)
from services.auth.domain.model import (
    AccessChange,
    NewUser,
    PublicKey,
    RefreshTokenRecord,
    RotationOutcome,
    TokenKind,
    TokenPair,
    User,
)
from services.auth.domain.ports import (
    LoginThrottle,
    PasswordHasher,
    RefreshTokenStore,
    SigningKeyStore,
    TokenIssuer,
    TokenVerifier,
    UserRepository,
)
from services.auth.domain.rules import (
    INVALID_CREDENTIALS,
    REFRESH_TOKEN_REUSED,
    UNKNOWN_REFRESH_TOKEN,
    keys_to_retire,
    normalise_email,
    refresh_token_id,
    validate_registration,
)
from services.common.clock import new_id
from services.common.errors import AlreadyExists, NotFound, ResourceExhausted, Unauthenticated
from services.common.identity import Principal, Tier

log = logging.getLogger("ordermesh.auth")

Clock = Callable[[], datetime]


async def register_user(
    command: RegisterUser, users: UserRepository, hasher: PasswordHasher
) -> User:
    registration = validate_registration(command)
    created = await users.add(
        NewUser(
            user_id=new_id(),
            email=registration.email,
            full_name=registration.full_name,
            phone=registration.phone,
            tier=Tier.FREE,
            role=command.role,
            password_hash=await hasher.hash(command.password),
        )
    )
    if created is None:
        raise AlreadyExists(f"an account with email {registration.email} already exists")
    return created


async def login(
    command: Login,
    users: UserRepository,
    hasher: PasswordHasher,
    tokens: TokenIssuer,
    *,
    refresh_store: RefreshTokenStore,
    new_id: Callable[[], str],
    throttle: LoginThrottle,
) -> TokenPair:
    """Checks the password and starts a new token family. Attempts are counted per account
    first, so a password cannot be guessed faster than the throttle allows from any number of
    addresses (and a refused attempt costs no hash)."""
    email = normalise_email(command.email)
    await throttle.admit(email)
    user = await users.by_email(email)
    # An unknown email costs the same hash verification as a wrong password, so neither the
    # answer nor its timing tells which accounts exist.
    stored_hash = user.password_hash if user is not None else hasher.dummy_hash
    matches = await hasher.verify(command.password, stored_hash)
    if user is None or not matches:
        raise Unauthenticated(INVALID_CREDENTIALS)
    if hasher.needs_rehash(user.password_hash):
        # The upgrade can wait for the next login; a busy hasher must not fail this one.
        with contextlib.suppress(ResourceExhausted):
            await users.set_password_hash(user.user_id, await hasher.hash(command.password))
    pair = await tokens.issue(user)
    await refresh_store.start_family(pair.refresh, family_id=new_id(), user_id=user.user_id)
    return pair


async def refresh_tokens(
    command: RefreshTokens,
    verifier: TokenVerifier,
    users: UserRepository,
    tokens: TokenIssuer,
    *,
    refresh_store: RefreshTokenStore,
    clock: Clock,
) -> TokenPair:
    """Spends the refresh token for a new pair whose refresh token joins the same family. A
    token that exists but cannot be spent was used (or revoked) before: whoever holds a copy
    must not keep a session, so the whole family is revoked."""
    claims = await verifier.claims(command.refresh_token, expected_type=TokenKind.REFRESH)
    token_id = refresh_token_id(claims)
    user = await users.by_id(str(claims["sub"]))
    if user is None:
        raise Unauthenticated("the token's account no longer exists")
    pair = await tokens.issue(user)
    if await refresh_store.spend(token_id, pair.refresh, at=clock()) is None:
        reused = await _revoke_family_of(token_id, refresh_store, clock)
        if reused.revoked_at is None:
            log.warning(
                "refresh token reused; its family is revoked",
                extra={"user_id": reused.user_id, "family_id": reused.family_id},
            )
        raise Unauthenticated(REFRESH_TOKEN_REUSED)
    return pair


async def logout(
    command: Logout, verifier: TokenVerifier, refresh_store: RefreshTokenStore, clock: Clock
) -> None:
    """Revokes the family of a valid refresh token, spent or not; again is fine."""
    claims = await verifier.claims(command.refresh_token, expected_type=TokenKind.REFRESH)
    await _revoke_family_of(refresh_token_id(claims), refresh_store, clock)


async def _revoke_family_of(
    token_id: str, refresh_store: RefreshTokenStore, clock: Clock
) -> RefreshTokenRecord:
    """Revokes the family of a token the server issued; the token as it was before."""
    known = await refresh_store.find(token_id)
    if known is None:
        raise Unauthenticated(UNKNOWN_REFRESH_TOKEN)
    await refresh_store.revoke_family(known.family_id, at=clock())
    return known


async def current_user(principal: Principal, users: UserRepository) -> User:
    user = await users.by_id(principal.user_id)
    if user is None:
        raise Unauthenticated("the token's account no longer exists")
    return user


async def change_tier(command: ChangeTier, users: UserRepository) -> AccessChange:
    """Tokens carry the tier: it takes effect at the account's next login or refresh, both of
    which read the account afresh; tokens issued before keep the old one until they expire."""
    email = normalise_email(command.email)
    before = await users.set_tier(email, command.tier)
    if before is None:
        raise NotFound(f"no account with email {email}")
    return AccessChange(email=email, attribute="tier", before=before, after=command.tier)


async def change_role(command: ChangeRole, users: UserRepository) -> AccessChange:
    """Like a tier, a role takes effect at the account's next token."""
    email = normalise_email(command.email)
    before = await users.set_role(email, command.role)
    if before is None:
        raise NotFound(f"no account with email {email}")
    return AccessChange(email=email, attribute="role", before=before, after=command.role)


async def published_keys(keys: SigningKeyStore) -> list[PublicKey]:
    return await keys.published()


async def rotate_signing_key(
    command: RotateSigningKey,
    keys: SigningKeyStore,
    clock: Clock,
    sleep: Callable[[float], Awaitable[None]],
) -> RotationOutcome:
    pending = await keys.pending_or_new()
    unpublished_for = command.publish_delay - (clock() - pending.created_at)
    if unpublished_for.total_seconds() > 0:
        await sleep(unpublished_for.total_seconds())
    await keys.activate(pending.kid)
    retired = keys_to_retire(await keys.all(), now=clock(), token_lifetime=command.token_lifetime)
    await keys.retire(retired)
    return RotationOutcome(activated_kid=pending.kid, retired_kids=tuple(retired))
