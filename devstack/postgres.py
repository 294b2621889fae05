"""A private PostgreSQL cluster in ``.run/postgres``, listening on 127.0.0.1.

Connections over TCP need a password (scram-sha-256). The superuser, the owner role that
migrates (``ordermesh``) and one login role per component (``ordermesh_<component>``, see
:data:`services.platform.db.DATABASE_COMPONENTS`) get random passwords generated into
``.run/secrets`` (:mod:`devstack.secrets`); the migrations grant each component's role its
own schema only. The Unix socket lives in ``.run/postgres``, which only the cluster's OS
user can enter."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

from devstack import apt, procs, secrets
from devstack.paths import RUN_DIR, ensure_run_dirs
from devstack.ports import HOST, current
from services.platform.db import DATABASE_COMPONENTS, OWNER_ROLE, role_name

NAME = "postgres"
ROLE = OWNER_ROLE
DATABASE = "ordermesh"
SUPERUSER = "postgres"
OS_USER = "postgres"
PG_ROOT = RUN_DIR / "postgres"
DATA_DIR = PG_ROOT / "data"
_TOOLS = ("initdb", "postgres", "pg_isready", "psql")
_SOCKET_PATH_MAX = 100
_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "log_line_prefix": "%m [%p] ",
}
_HBA = """\
# Written by devstack/postgres.py. The socket directory is reachable by the cluster's OS user
# only; over TCP every role needs its password.
local   all all                trust
host    all all 127.0.0.1/32   scram-sha-256
host    all all ::1/128        scram-sha-256
"""
# What earlier versions of the local stack wrote: upgraded in place on start.
_TRUSTING_HOST_LINE = "host    all all 127.0.0.1/32   trust"


def _bin_dir() -> Path | None:
    candidates = []
    for bin_dir in Path("/usr/lib/postgresql").glob("*/bin"):
        if all((bin_dir / tool).is_file() for tool in _TOOLS):
            try:
                candidates.append((int(bin_dir.parent.name), bin_dir))
            except ValueError:
                continue
    return max(candidates)[1] if candidates else None


def ensure_installed() -> Path:
    """Install Debian's PostgreSQL if needed; return its bin directory."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        apt.install("postgresql")
        bin_dir = _bin_dir()
    if bin_dir is None:
        raise RuntimeError("postgresql installed but no /usr/lib/postgresql/*/bin/initdb found")
    return bin_dir


def _run_as_user() -> str | None:
    return OS_USER if os.geteuid() == 0 else None


def _make_traversable(path: Path) -> None:
    """Give 'other' search permission on ``path`` and its ancestors."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            print(
                f"devstack: chmod o+x {directory} so the {OS_USER} user can reach {PG_ROOT}",
                file=sys.stderr,
            )
            directory.chmod(mode | stat.S_IXOTH)


def _prepare_dirs(user: str | None) -> None:
    ensure_run_dirs()
    PG_ROOT.mkdir(parents=True, exist_ok=True)
    if user is None:
        PG_ROOT.chmod(0o700)
        return
    _make_traversable(RUN_DIR)
    entry = pwd.getpwnam(user)
    for path in (PG_ROOT, *PG_ROOT.rglob("*")):
        info = path.lstat()
        if (info.st_uid, info.st_gid) != (entry.pw_uid, entry.pw_gid):
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    PG_ROOT.chmod(0o700)


def _major_version(bin_dir: Path) -> str:
    return bin_dir.parent.name


def _initdb(bin_dir: Path, user: str | None) -> None:
    version_file = DATA_DIR / "PG_VERSION"
    if version_file.exists():
        found = version_file.read_text().strip()
        if found != _major_version(bin_dir):
            raise RuntimeError(
                f"{DATA_DIR} was created by PostgreSQL {found}, but {bin_dir} is "
                f"{_major_version(bin_dir)}: run `ordermesh down` and delete {PG_ROOT}"
            )
        return
    if DATA_DIR.exists():
        shutil.rmtree(DATA_DIR)
    password_file = PG_ROOT / "initdb-password"
    password_file.write_text(secrets.database_password(SUPERUSER) + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(password_file, entry.pw_uid, entry.pw_gid)
    password_file.chmod(0o600)
    try:
        result = subprocess.run(
            [
                bin_dir / "initdb",
                "-D",
                DATA_DIR,
                "-U",
                SUPERUSER,
                f"--pwfile={password_file}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=PG_ROOT,
            env=_env(user),
            **procs.as_user(user),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}")
    _write_hba(user)


def _write_hba(user: str | None) -> None:
    hba = DATA_DIR / "pg_hba.conf"
    hba.write_text(_HBA)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(hba, entry.pw_uid, entry.pw_gid)


def _require_passwords(user: str | None) -> None:
    """Upgrade a cluster an earlier version created with TCP trust: give the superuser its
    password (trust still lets us in), then require passwords and reload."""
    hba = DATA_DIR / "pg_hba.conf"
    if _TRUSTING_HOST_LINE not in hba.read_text():
        return
    psql(f"ALTER ROLE {SUPERUSER} PASSWORD '{secrets.database_password(SUPERUSER)}'")
    _write_hba(user)
    psql("SELECT pg_reload_conf()")


def _env(user: str | None) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    if user is not None:
        env["HOME"] = str(PG_ROOT)
    return env


def _socket_dir(port: int) -> str:
    if len(f"{PG_ROOT}/.s.PGSQL.{port}.lock") > _SOCKET_PATH_MAX:
        return ""
    return str(PG_ROOT)


def _argv(bin_dir: Path, port: int) -> list[str]:
    settings = {
        **_SETTINGS,
        "listen_addresses": HOST,
        "port": str(port),
        "unix_socket_directories": _socket_dir(port),
    }
    argv = [str(bin_dir / "postgres"), "-D", str(DATA_DIR)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    return argv


def _client_env(user: str = SUPERUSER) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "3"
    env["PGPASSWORD"] = secrets.database_password(user)
    return env


def is_ready(port: int | None = None) -> bool:
    bin_dir = _bin_dir()
    if bin_dir is None:
        return False
    port = current().postgres if port is None else port
    result = subprocess.run(
        [bin_dir / "pg_isready", "-q", "-h", HOST, "-p", str(port), "-U", "postgres", "-t", "2"],
        env=_client_env(),
        check=False,
    )
    return result.returncode == 0


def psql(sql: str, *, database: str = "postgres", user: str = SUPERUSER) -> str:
    """Run ``sql`` with psql over TCP and return its unaligned, tuples-only output."""
    bin_dir = ensure_installed()
    result = subprocess.run(
        [
            bin_dir / "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            HOST,
            "-p",
            str(current().postgres),
            "-U",
            user,
            "-d",
            database,
            "-c",
            sql,
        ],
        env=_client_env(user),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"psql failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _ensure_roles_and_database() -> None:
    """The owner role, one login role per component (each with its generated password,
    set again on every start so a regenerated secret takes effect) and the database."""
    roles = [ROLE, *(role_name(component) for component in DATABASE_COMPONENTS)]
    if not all(re.fullmatch(r"[a-z_][a-z0-9_]*", name) for name in [*roles, DATABASE]):
        raise ValueError("role and database names must be plain identifiers")
    statements = []
    for role in roles:
        password = secrets.database_password(role)
        statements.append(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
            f" CREATE ROLE {role} LOGIN; END IF; END $$;"
            f" ALTER ROLE {role} LOGIN PASSWORD '{password}';"
        )
    psql(" ".join(statements))
    if psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") != "1":
        psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")


def start(timeout: float = 60.0) -> None:
    """Install, initialise and start the cluster; a running cluster is left alone."""
    bin_dir = ensure_installed()
    port = current().postgres
    if not procs.is_running(NAME):
        procs.check_port_free(NAME, port, "ORDERMESH_POSTGRES_PORT")
        user = _run_as_user()
        _prepare_dirs(user)
        _initdb(bin_dir, user)
        procs.start_daemon(NAME, _argv(bin_dir, port), env=_env(user), cwd=PG_ROOT, user=user)
    procs.wait_until(
        lambda: is_ready(port), timeout, f"postgres on {HOST}:{port}", name=NAME, interval=0.2
    )
    _require_passwords(_run_as_user())
    _ensure_roles_and_database()


def stop(timeout: float = 30.0) -> bool:
    """Fast shutdown (SIGINT to the postmaster), then SIGKILL after ``timeout``."""
    return procs.stop(NAME, timeout, sig=signal.SIGINT, leader_only=True)


def dsn(component: str | None = None, *, database: str = DATABASE) -> str:
    """The owner's DSN (migrations, seed, operator tools), or a component's own role's."""
    role = ROLE if component is None else role_name(component)
    password = secrets.database_password(role)
    return f"postgresql://{role}:{password}@{HOST}:{current().postgres}/{database}"
