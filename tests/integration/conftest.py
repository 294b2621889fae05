"""Real servers for integration tests: Postgres, Redis and Kafka from devstack. A server
that is already running (`make up`, or `make test`, which starts the stack first) is reused;
one this session had to start is stopped again at the end.

The tests' rows live in a database of their own, created and migrated once per session by
one fixture and dropped at the end: nothing they commit is ever published by the running
stack's relay or acted on by its workers, and no module depends on another having migrated.
"""

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from types import ModuleType

import psycopg
import pytest

from devstack import kafka, postgres, redis, secrets
from services.platform import migrations
from services.platform.db import Pool, open_pool
from services.platform.migrations import all_migrations
from services.platform.resources import Resources
from services.platform.settings import Settings
from tests.integration.envoy_harness import running_ratelimit
from tests.integration.webhook_harness import WebhookContext, open_webhook_resources


def _ensure_running(component: ModuleType) -> bool:
    ready = component.ping if component is redis else component.is_ready
    if ready():
        return False
    component.ensure_installed()
    component.start()
    return True


@pytest.fixture(scope="session")
def servers() -> Iterator[None]:
    started = [c for c in (postgres, redis, kafka) if _ensure_running(c)]
    yield
    for component in reversed(started):
        component.stop()


@pytest.fixture(scope="session")
def database(servers: None) -> Iterator[str]:
    """The session's own database (owned by the owner role), dropped at the end."""
    name = f"ordermesh_it_{uuid.uuid4().hex[:10]}"
    postgres.psql(f"CREATE DATABASE {name} OWNER {postgres.ROLE}")
    yield name
    postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def ratelimit_port(servers: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The real rate-limit service (the auth service asks it about logins), with limits out
    of the tests' reach; tests of the limits themselves start their own."""
    with running_ratelimit(tmp_path_factory.mktemp("ratelimit")) as port:
        yield port


@pytest.fixture(scope="session")
def settings(database: str, ratelimit_port: int) -> Settings:
    return Settings.from_env(
        {
            "RATELIMIT_SERVICE_ADDR": f"127.0.0.1:{ratelimit_port}",
            "ORDERMESH_ENV": "test",
            "ORDERMESH_DATABASE_URL": postgres.dsn(database=database),
            # The running stack's secret: its signing keys are encrypted with it.
            "ORDERMESH_KEY_ENCRYPTION_SECRET_FILE": str(secrets.key_encryption_secret_file()),
            "ORDERMESH_REDIS_URL": redis.url(),
            "ORDERMESH_KAFKA_BOOTSTRAP": kafka.bootstrap(),
            "ORDERMESH_GRPC_PORT": "0",
        }
    )


@pytest.fixture(scope="session")
async def migrated(settings: Settings) -> None:
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        await migrations.apply(conn, all_migrations())


@pytest.fixture(scope="session")
async def pool(settings: Settings, migrated: None) -> AsyncIterator[Pool]:
    opened = await open_pool(settings, name="tests")
    yield opened
    await opened.close()


@pytest.fixture
async def one_connection(settings: Settings, migrated: None) -> AsyncIterator[Pool]:
    """A pool of exactly one connection: every checkout gets the same one, so a test can
    watch it (its backend, its protocol trace)."""
    single = dataclasses.replace(settings, database_pool_min=1, database_pool_max=1)
    opened = await open_pool(single, name="one-connection")
    yield opened
    await opened.close()


@pytest.fixture(scope="session")
async def webhook_resources(
    settings: Settings, database: str, migrated: None
) -> AsyncIterator[Resources]:
    """What the workers hand the webhook sender: its pool (and LISTEN connection) connected
    as the webhook role."""
    async with open_webhook_resources(settings, database) as built:
        yield built


@pytest.fixture
async def webhooks(webhook_resources: Resources) -> AsyncIterator[WebhookContext]:
    """One test's webhooks, deleted with their deliveries when the test is done."""
    context = WebhookContext(webhook_resources)
    yield context
    await context.close()
