"""A small versioned-migration runner.

Each service keeps numbered SQL files (`0001_create_orders.sql`, …) in its `migrations/`
folder and owns one Postgres schema. Applied files are recorded with a checksum in
`public.ordermesh_migrations`; an edited, already-applied file is an error, never re-run.
An advisory lock makes concurrent runners (several replicas starting at once) safe.
"""

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from services.platform.contexts import CONTEXT_NAMES

log = logging.getLogger(__name__)

PLATFORM_FOLDER = Path(__file__).parent / "migrations"
SERVICES_ROOT = Path(__file__).resolve().parents[1]

_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x6F6D_6967  # "omig"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(component: str, folder: Path) -> list[Migration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_lower_snake.sql")
        migrations.append(
            Migration(component, int(match.group(1)), match.group(2), path.read_text())
        )
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: duplicate migration versions")
    return migrations


async def apply(connection: AsyncConnection[Any], migrations: list[Migration]) -> list[Migration]:
    """Applies what is missing, each file in its own transaction. Returns what it applied."""
    applied_now: list[Migration] = []
    await connection.execute(
        "CREATE TABLE IF NOT EXISTS public.ordermesh_migrations ("
        " component text NOT NULL, version integer NOT NULL, name text NOT NULL,"
        " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),"
        " PRIMARY KEY (component, version))"
    )
    await connection.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        cursor = connection.cursor(row_factory=tuple_row)
        await cursor.execute("SELECT component, version, checksum FROM public.ordermesh_migrations")
        done = {(row[0], row[1]): row[2] for row in await cursor.fetchall()}
        for migration in migrations:
            recorded = done.get((migration.component, migration.version))
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationError(
                        f"{migration.component} migration {migration.version:04d}_"
                        f"{migration.name} changed after it was applied; add a new one instead"
                    )
                continue
            async with connection.transaction():
                await connection.execute(migration.sql.encode())
                await connection.execute(
                    "INSERT INTO public.ordermesh_migrations (component, version, name, checksum)"
                    " VALUES (%s, %s, %s, %s)",
                    (migration.component, migration.version, migration.name, migration.checksum),
                )
            log.info(
                "migration applied",
                extra={"migration": f"{migration.component}/{migration.version:04d}"},
            )
            applied_now.append(migration)
    finally:
        await connection.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def all_migrations() -> list[Migration]:
    """The platform's shared definitions first, then each context's own schema."""
    found = discover("platform", PLATFORM_FOLDER)
    for name in CONTEXT_NAMES:
        folder = SERVICES_ROOT / name / "migrations"
        if folder.is_dir():
            found.extend(discover(name, folder))
    return found
