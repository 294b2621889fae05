"""The auth domain's rules: registration validation, token claims, key retirement."""

from datetime import UTC, datetime, timedelta

import pytest

from services.auth.domain.commands import RegisterUser
from services.auth.domain.model import SigningKeyInfo, TokenKind, TokenPolicy, User
from services.auth.domain.rules import keys_to_retire, token_claims, validate_registration
from services.common.errors import InvalidArgument
from services.common.identity import Role, Tier

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WEEK = timedelta(days=7)


def registration(**overrides: str) -> RegisterUser:
    fields = {
        "email": "Ada@Example.COM ",
        "password": "s3cret-password",
        "full_name": "Ada Lovelace",
        "phone": "",
        **overrides,
    }
    return RegisterUser(
        email=fields["email"],
        password=fields["password"],
        full_name=fields["full_name"],
        phone=fields["phone"],
    )


def test_registration_normalises_email_and_trims_fields() -> None:
    valid = validate_registration(registration(full_name="  Ada  ", phone=" +44 20 7946 0000 "))
    assert valid.email == "ada@example.com"
    assert valid.full_name == "Ada"
    assert valid.phone == "+44 20 7946 0000"


def test_registration_without_phone_stores_none() -> None:
    assert validate_registration(registration(phone="   ")).phone is None


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"email": ""}, "email", "email is required"),
        ({"email": "not-an-email"}, "email", "valid email"),
        ({"email": "a@b"}, "email", "valid email"),
        ({"email": "a b@example.com"}, "email", "valid email"),
        ({"email": "a@@example.com"}, "email", "valid email"),
        ({"email": "a" * 250 + "@example.com"}, "email", "valid email"),
        ({"password": "short12"}, "password", "at least 8"),
        ({"password": "x" * 257}, "password", "at most 256"),
        ({"full_name": "   "}, "full_name", "full_name is required"),
        ({"full_name": "x" * 201}, "full_name", "at most 200"),
        ({"phone": "1" * 41}, "phone", "at most 40"),
    ],
)
def test_registration_rejects_bad_fields_naming_the_field(
    overrides: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as raised:
        validate_registration(registration(**overrides))
    assert raised.value.field == field
    assert field in str(raised.value)


def test_registration_accepts_the_length_limits() -> None:
    validate_registration(registration(password="x" * 8, full_name="n" * 200, phone="1" * 40))
    validate_registration(registration(password="x" * 256))


def test_token_claims_carry_identity_type_and_lifetime() -> None:
    user = User(
        user_id="u-1",
        email="ada@example.com",
        full_name="Ada",
        phone=None,
        tier=Tier.PREMIUM,
        role=Role.ADMIN,
        created_at=T0,
        password_hash="h",
    )
    policy = TokenPolicy("issuer", "audience", timedelta(minutes=15), WEEK)
    access = token_claims(user, TokenKind.ACCESS, policy, issued_at=T0, token_id="j1")
    refresh = token_claims(user, TokenKind.REFRESH, policy, issued_at=T0, token_id="j2")
    issued = int(T0.timestamp())
    assert access == {
        "iss": "issuer",
        "aud": "audience",
        "sub": "u-1",
        "email": "ada@example.com",
        "tier": "premium",
        "role": "admin",
        "iat": issued,
        "exp": issued + 15 * 60,
        "jti": "j1",
        "typ": "access",
    }
    assert refresh["typ"] == "refresh"
    assert refresh["exp"] == issued + int(WEEK.total_seconds())


def key(kid: str, activated: datetime | None, retired: datetime | None = None) -> SigningKeyInfo:
    return SigningKeyInfo(kid=kid, created_at=T0, activated_at=activated, retired_at=retired)


def test_a_superseded_key_retires_once_its_successor_outlived_every_token() -> None:
    keys = [key("old", T0), key("current", T0 + timedelta(days=1))]
    just_before = T0 + timedelta(days=8) - timedelta(seconds=1)
    assert keys_to_retire(keys, now=just_before, token_lifetime=WEEK) == []
    assert keys_to_retire(keys, now=T0 + timedelta(days=8), token_lifetime=WEEK) == ["old"]


def test_the_signing_key_and_pending_keys_never_retire() -> None:
    keys = [key("current", T0), key("pending", None)]
    assert keys_to_retire(keys, now=T0 + timedelta(days=365), token_lifetime=WEEK) == []


def test_retired_keys_are_not_retired_again() -> None:
    keys = [
        key("gone", T0, retired=T0 + timedelta(days=9)),
        key("old", T0 + timedelta(days=1)),
        key("current", T0 + timedelta(days=2)),
    ]
    assert keys_to_retire(keys, now=T0 + timedelta(days=30), token_lifetime=WEEK) == ["old"]
