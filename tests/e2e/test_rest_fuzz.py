"""The REST surface, fuzzed: schemathesis runs over the OpenAPI that `make gen` writes from
the protos, through Envoy's public port, as a freshly registered user. Every operation gets
a bounded number of examples in each phase (examples, coverage, fuzzing, stateful); the run
passes only if no answer is a 5xx, every status and body is one the document declares, and
another user's order and webhook are never served nor changed. Settings and the reasons for
them: tests/e2e/schemathesis.toml; hooks: tests/e2e/fuzz_hooks.py.

Alone: `.venv/bin/pytest tests/e2e/test_rest_fuzz.py` with the stack up (`make up`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from devstack import postgres
from devstack.paths import REPO_ROOT
from tests.e2e.conftest import PASSWORD, User, order_body, register_and_login
from tests.e2e.fuzz_hooks import FUZZ_TARGETS_ENV

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCHEMA = REPO_ROOT / "gen" / "openapi" / "ordermesh.swagger.json"
CONFIG = Path(__file__).with_name("schemathesis.toml")
# A literal public address: nothing is ever sent to it, and no name has to resolve.
HOOK_TARGET = "https://93.184.216.34/ordermesh-fuzz"
# Orders the fuzz user may end up with: its own seeded one plus the creates schemathesis
# makes succeed (POST /api/v1/orders is capped at 10 examples per phase in the config).
MAX_FUZZ_ORDERS = 60


def _enterprise_user(http: httpx.Client) -> User:
    """A user of the unlimited tier, so the run never meets a rate limit. The tier is a
    token claim: it is set before the login."""
    email = f"e2e-fuzz-{uuid.uuid4().hex[:12]}@example.com"
    registered = http.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "full_name": "E2E Fuzzer"},
    )
    assert registered.status_code == 200, registered.text
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute("UPDATE auth.users SET tier = 'enterprise' WHERE email = %s", (email,))
    login = http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    tokens = login.json()
    return User(
        registered.json()["user_id"], email, tokens["access_token"], tokens["refresh_token"]
    )


def _order_and_webhook(http: httpx.Client, user: User) -> dict[str, str]:
    order = http.post("/api/v1/orders", json=order_body(), headers=user.headers)
    assert order.status_code == 200, order.text
    webhook = http.post(
        "/api/v1/webhooks",
        json={"url": HOOK_TARGET, "events": ["order.shipped"], "description": "fuzz"},
        headers=user.headers,
    )
    assert webhook.status_code == 200, webhook.text
    return {"order_id": order.json()["order_id"], "webhook_id": webhook.json()["webhook_id"]}


def _artifacts() -> Path:
    run_dir = Path(os.environ.get("ORDERMESH_RUN_DIR", REPO_ROOT / ".run"))
    path = run_dir / "artifacts" / "schemathesis"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_rest_surface_survives_schemathesis(base_url: str, http: httpx.Client) -> None:
    fuzzer = _enterprise_user(http)
    other = register_and_login(http)
    targets = {"own": _order_and_webhook(http, fuzzer), "foreign": _order_and_webhook(http, other)}
    reports = _artifacts()
    output = reports / "output.txt"

    started = time.monotonic()
    with output.open("w") as out:
        finished = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "--config-file",
                str(CONFIG),
                "--no-color",
                "run",
                str(SCHEMA),
                "--url",
                base_url,
                "--header",
                f"Authorization: Bearer {fuzzer.access_token}",
                "--workers",
                "2",
                "--report",
                "junit",
                "--report-dir",
                str(reports),
            ],
            cwd=REPO_ROOT,
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.e2e.fuzz_hooks",
                FUZZ_TARGETS_ENV: json.dumps(targets),
                "NO_PROXY": "*",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    elapsed = time.monotonic() - started
    text = output.read_text()
    print(f"schemathesis ran {elapsed:.0f}s; output in {output}")
    assert finished.returncode == 0, f"schemathesis found problems ({output}):\n{text[-20000:]}"

    # Another user's resources were named in many calls and stayed as they were.
    foreign = targets["foreign"]
    order = http.get(f"/api/v1/orders/{foreign['order_id']}", headers=other.headers)
    assert order.status_code == 200, order.text
    assert order.json()["status"] != "ORDER_STATUS_CANCELLED", order.text
    hooks = http.get("/api/v1/webhooks", headers=other.headers).json()["webhooks"]
    assert [hook["webhook_id"] for hook in hooks] == [foreign["webhook_id"]]
    # The creates stayed bounded.
    listed = http.get("/api/v1/orders", params={"page_size": 1}, headers=fuzzer.headers)
    assert int(listed.json()["total"]) <= MAX_FUZZ_ORDERS, listed.text
