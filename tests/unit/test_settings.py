import os
from pathlib import Path

import pytest

from services.platform.settings import (
    DEV_KEY_ENCRYPTION_SECRET,
    MIN_SECRET_LENGTH,
    Environment,
    Settings,
    SettingsError,
)


def test_defaults_suit_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.grpc_port == 50051
    assert settings.access_token_ttl_seconds == 15 * 60
    assert settings.refresh_token_ttl_seconds == 7 * 24 * 3600
    assert settings.key_encryption_secret is None
    assert (settings.jwks_cache_seconds, settings.jwks_stale_grace_seconds) == (300, 300)
    assert (settings.token_cache_seconds, settings.token_cache_size) == (60, 10_000)
    assert settings.password_hash_concurrency == (os.cpu_count() or 1)
    assert settings.password_hash_queue == 4 * settings.password_hash_concurrency


def test_the_hash_queue_follows_the_hash_concurrency_unless_set() -> None:
    settings = Settings.from_env({"ORDERMESH_PASSWORD_HASH_CONCURRENCY": "3"})
    assert (settings.password_hash_concurrency, settings.password_hash_queue) == (3, 12)
    settings = Settings.from_env({"ORDERMESH_PASSWORD_HASH_QUEUE": "0"})
    assert settings.password_hash_queue == 0


GOOD_SECRET = "k" * MIN_SECRET_LENGTH


def test_the_key_encryption_secret_fails_closed() -> None:
    with pytest.raises(SettingsError, match=r"ORDERMESH_KEY_ENCRYPTION_SECRET .* must be set"):
        Settings.from_env({}).require_key_encryption_secret()
    short = Settings.from_env({"ORDERMESH_KEY_ENCRYPTION_SECRET": "s3cret"})
    with pytest.raises(SettingsError, match="is 6 characters; it must have at least 32"):
        short.require_key_encryption_secret()
    published = Settings.from_env({"ORDERMESH_KEY_ENCRYPTION_SECRET": DEV_KEY_ENCRYPTION_SECRET})
    with pytest.raises(SettingsError, match="published development constant"):
        published.require_key_encryption_secret()
    good = Settings.from_env({"ORDERMESH_KEY_ENCRYPTION_SECRET": GOOD_SECRET})
    assert good.require_key_encryption_secret() == GOOD_SECRET


def test_only_the_explicit_development_flag_allows_the_published_secret() -> None:
    flagged = Settings.from_env({"ORDERMESH_INSECURE_DEV_SECRETS": "true"})
    assert flagged.require_key_encryption_secret() == DEV_KEY_ENCRYPTION_SECRET
    with pytest.raises(SettingsError, match="cannot be used in production"):
        Settings.from_env({"ORDERMESH_ENV": "production", "ORDERMESH_INSECURE_DEV_SECRETS": "1"})
    with pytest.raises(SettingsError, match="must be true or false"):
        Settings.from_env({"ORDERMESH_INSECURE_DEV_SECRETS": "maybe"})


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(GOOD_SECRET + "\n")
    settings = Settings.from_env({"ORDERMESH_KEY_ENCRYPTION_SECRET_FILE": str(secret_file)})
    assert settings.require_key_encryption_secret() == GOOD_SECRET
    with pytest.raises(SettingsError, match=r"ORDERMESH_KEY_ENCRYPTION_SECRET_FILE=.*No such"):
        Settings.from_env({"ORDERMESH_KEY_ENCRYPTION_SECRET_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("")
    with pytest.raises(SettingsError, match="is empty"):
        Settings.from_env({"ORDERMESH_KEY_ENCRYPTION_SECRET_FILE": str(tmp_path / "empty")})


def test_each_component_connects_as_its_own_role(tmp_path: Path) -> None:
    url_file = tmp_path / "payment-url"
    url_file.write_text("postgresql://ordermesh_payment:pw@db/ordermesh")
    settings = Settings.from_env(
        {
            "ORDERMESH_DATABASE_URL": "postgresql://ordermesh:pw@db/ordermesh",
            "ORDERMESH_ORDER_DATABASE_URL": "postgresql://ordermesh_order:pw@db/ordermesh",
            "ORDERMESH_PAYMENT_DATABASE_URL_FILE": str(url_file),
        }
    )
    assert settings.database_url_for("order") == "postgresql://ordermesh_order:pw@db/ordermesh"
    assert settings.database_url_for("payment") == "postgresql://ordermesh_payment:pw@db/ordermesh"
    assert settings.database_url_for("auth") == "postgresql://ordermesh:pw@db/ordermesh"
    production = Settings.from_env(
        {"ORDERMESH_ENV": "production", "ORDERMESH_KEY_ENCRYPTION_SECRET": GOOD_SECRET}
    )
    with pytest.raises(SettingsError, match="ORDERMESH_AUTH_DATABASE_URL must be set"):
        production.database_url_for("auth")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ORDERMESH_GRPC_PORT": "http"}, "ORDERMESH_GRPC_PORT must be an integer"),
        ({"ORDERMESH_GRPC_PORT": "70000"}, "outside"),
        ({"ORDERMESH_ENV": "staging"}, "ORDERMESH_ENV must be one of"),
        ({"ORDERMESH_SHUTDOWN_GRACE_SECONDS": "soon"}, "must be a number"),
        ({"ORDERMESH_JWKS_CACHE_SECONDS": "0"}, "outside"),
        ({"ORDERMESH_PASSWORD_HASH_CONCURRENCY": "0"}, "outside"),
        ({"ORDERMESH_PASSWORD_HASH_QUEUE": "-1"}, "outside"),
        ({"ORDERMESH_ZIPKIN_URL": "zipkin:9411"}, "ORDERMESH_ZIPKIN_URL must be an http"),
        ({"ORDERMESH_ZIPKIN_URL": "ftp://zipkin/api/v2/spans"}, "ORDERMESH_ZIPKIN_URL must be"),
        ({"ORDERMESH_TRACE_SAMPLE_RATIO": "1.5"}, "ORDERMESH_TRACE_SAMPLE_RATIO must be between"),
        ({"ORDERMESH_TRACE_SAMPLE_RATIO": "nan"}, "ORDERMESH_TRACE_SAMPLE_RATIO must be between"),
        ({"ORDERMESH_TRACE_SAMPLE_RATIO": "all"}, "ORDERMESH_TRACE_SAMPLE_RATIO must be a number"),
    ],
)
def test_malformed_settings_fail_fast_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_tracing_is_off_unless_a_zipkin_url_is_set() -> None:
    assert Settings.from_env({}).zipkin_url is None
    traced = Settings.from_env(
        {
            "ORDERMESH_ZIPKIN_URL": "http://127.0.0.1:9411/api/v2/spans",
            "ORDERMESH_TRACE_SAMPLE_RATIO": "0.25",
        }
    )
    assert traced.zipkin_url == "http://127.0.0.1:9411/api/v2/spans"
    assert traced.trace_sample_ratio == 0.25
