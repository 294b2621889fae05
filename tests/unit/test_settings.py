import os

import pytest

from services.platform.settings import (
    DEV_KEY_ENCRYPTION_SECRET,
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
    assert settings.key_encryption_secret == DEV_KEY_ENCRYPTION_SECRET
    assert (settings.jwks_cache_seconds, settings.jwks_stale_grace_seconds) == (300, 300)
    assert settings.password_hash_concurrency == (os.cpu_count() or 1)
    assert settings.password_hash_queue == 4 * settings.password_hash_concurrency


def test_the_hash_queue_follows_the_hash_concurrency_unless_set() -> None:
    settings = Settings.from_env({"ORDERMESH_PASSWORD_HASH_CONCURRENCY": "3"})
    assert (settings.password_hash_concurrency, settings.password_hash_queue) == (3, 12)
    settings = Settings.from_env({"ORDERMESH_PASSWORD_HASH_QUEUE": "0"})
    assert settings.password_hash_queue == 0


def test_production_refuses_default_secrets() -> None:
    with pytest.raises(SettingsError, match="must be set in production"):
        Settings.from_env({"ORDERMESH_ENV": "production"})
    with pytest.raises(SettingsError, match="development default"):
        Settings.from_env(
            {
                "ORDERMESH_ENV": "production",
                "ORDERMESH_KEY_ENCRYPTION_SECRET": DEV_KEY_ENCRYPTION_SECRET,
            }
        )
    settings = Settings.from_env(
        {"ORDERMESH_ENV": "production", "ORDERMESH_KEY_ENCRYPTION_SECRET": "s3cret-from-vault"}
    )
    assert settings.environment is Environment.PRODUCTION


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
    ],
)
def test_malformed_settings_fail_fast_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
