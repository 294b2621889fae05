"""One function per auth command or query, taking its ports as arguments."""

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from services.auth.domain.commands import Login, RefreshTokens, RegisterUser, RotateSigningKey
from services.auth.domain.model import (
    NewUser,
    PublicKey,
    RotationOutcome,
    TokenKind,
    TokenPair,
    User,
)
from services.auth.domain.ports import (
    PasswordHasher,
    SigningKeyStore,
    TokenIssuer,
    TokenVerifier,
    UserRepository,
)
from services.auth.domain.rules import (
    INVALID_CREDENTIALS,
    keys_to_retire,
    normalise_email,
    validate_registration,
)
from services.common.errors import AlreadyExists, ResourceExhausted, Unauthenticated
from services.common.identity import Principal, Tier


async def register_user(
    command: RegisterUser, users: UserRepository, hasher: PasswordHasher
) -> User:
    registration = validate_registration(command)
    created = await users.add(
        NewUser(
            user_id=str(uuid.uuid4()),
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
    command: Login, users: UserRepository, hasher: PasswordHasher, tokens: TokenIssuer
) -> TokenPair:
    user = await users.by_email(normalise_email(command.email))
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
    return await tokens.issue(user)


async def refresh_tokens(
    command: RefreshTokens, verifier: TokenVerifier, users: UserRepository, tokens: TokenIssuer
) -> TokenPair:
    claims = await verifier.claims(command.refresh_token, expected_type=TokenKind.REFRESH)
    user = await users.by_id(str(claims["sub"]))
    if user is None:
        raise Unauthenticated("the token's account no longer exists")
    return await tokens.issue(user)


async def current_user(principal: Principal, users: UserRepository) -> User:
    user = await users.by_id(principal.user_id)
    if user is None:
        raise Unauthenticated("the token's account no longer exists")
    return user


async def published_keys(keys: SigningKeyStore) -> list[PublicKey]:
    return await keys.published()


async def rotate_signing_key(
    command: RotateSigningKey,
    keys: SigningKeyStore,
    clock: Callable[[], datetime],
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
