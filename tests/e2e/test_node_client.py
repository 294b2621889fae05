"""The Node.js client (examples/node: TypeScript over @grpc/grpc-js, types from gen/ts)
against the public port, run as the README shows it: type-checked with tsc, an order logged
in, placed and watched to SHIPPED over plaintext and TLS, and errors decoded in Node from
`grpc-status-details-bin` (BadRequest, RetryInfo) or plain UNAUTHENTICATED."""

import asyncio
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devstack import tls
from devstack.paths import REPO_ROOT
from devstack.ports import Ports
from tests.e2e.conftest import PASSWORD, STOCKED, User, register_and_login
from tests.e2e.test_tls import _no_proxy
from tests.e2e.test_watch_orders import HAPPY
from tests.e2e.tokens import expired_token

pytestmark = pytest.mark.e2e

EXAMPLE = REPO_ROOT / "examples" / "node"
TSC = REPO_ROOT / "node_modules" / ".bin" / "tsc"
# The README's commands name these ports; the tests add --address only when the stack's differ.
README_PORT, README_TLS_PORT = 8000, 8443
RUN_SECONDS = 120


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def statuses(self) -> list[str]:
        return [line.split()[1] for line in self.stdout.splitlines() if line.startswith("update ")]

    @property
    def probed(self) -> dict[str, Any]:
        last: dict[str, Any] = json.loads(self.stdout.strip().splitlines()[-1])
        return last


@pytest.fixture(scope="session")
def node() -> str:
    found = shutil.which("node")
    if found is None or not (REPO_ROOT / "node_modules" / "tsx").is_dir():
        pytest.fail("the Node.js client needs Node.js and the npm packages: run `make tools`")
    return found


def address(port: int, readme_port: int) -> list[str]:
    return [] if port == readme_port else ["--address", f"localhost:{port}"]


def run(node: str, *args: str) -> Run:
    done = subprocess.run(
        [node, "--import", "tsx", str(EXAMPLE / "main.ts"), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
        env=_no_proxy(),
    )
    return Run(done.returncode, done.stdout, done.stderr)


def probe(node: str, port: int, kind: str, *args: str) -> dict[str, Any]:
    done = run(node, *address(port, README_PORT), "--probe", kind, *args)
    assert done.code == 0, f"{done.stdout}\n{done.stderr}"
    found: dict[str, Any] = done.probed["error"]
    return found


def test_the_example_type_checks() -> None:
    done = subprocess.run(
        [str(TSC), "-p", str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_order_is_placed_and_watched_to_shipped(
    node: str, public_port: int, http: httpx.Client
) -> None:
    user = register_and_login(http)
    done = run(
        node,
        *address(public_port, README_PORT),
        *("--email", user.email, "--password", PASSWORD, "--product", STOCKED),
    )

    assert done.code == 0, f"{done.stdout}\n{done.stderr}"
    assert done.statuses == HAPPY, done.stdout
    assert f"logged in as {user.email}" in done.stdout
    assert re.search(r"^catalog: [1-9]\d* products$", done.stdout, re.MULTILINE), done.stdout
    assert "a retry with it returned the same order" in done.stdout
    assert "carrier=" in done.stdout.splitlines()[-2], "SHIPPED carries its carrier"


def test_over_tls_with_the_development_ca(node: str, http: httpx.Client) -> None:
    ca = tls.CertificateFiles.at(tls.DEFAULT_DIRECTORY).ca_certificate
    tls_port = Ports.from_env().envoy_tls
    user = register_and_login(http)
    done = run(
        node,
        *("--tls", "--ca", str(ca)),
        *address(tls_port, README_TLS_PORT),
        *("--email", user.email, "--password", PASSWORD, "--product", STOCKED),
    )

    assert done.code == 0, f"{done.stdout}\n{done.stderr}"
    assert done.statuses == HAPPY, done.stdout


def test_an_invalid_argument_arrives_with_its_field_violation(
    node: str, public_port: int, user: User
) -> None:
    error = probe(
        node,
        public_port,
        "invalid-argument",
        *("--email", user.email, "--password", PASSWORD, "--product", STOCKED),
    )

    assert error["codeName"] == "INVALID_ARGUMENT", error
    assert "items[0].quantity" in error["message"]
    [bad_request] = [d for d in error["details"] if d["type"] == "google.rpc.BadRequest"]
    [violation] = bad_request["value"]["fieldViolations"]
    assert violation["field"] == "items[0].quantity", error


def test_a_missing_token_is_unauthenticated(node: str, public_port: int) -> None:
    error = probe(node, public_port, "no-token")

    assert error["codeName"] == "UNAUTHENTICATED", error


@pytest.mark.parametrize("kind", ["forged", "expired"])
async def test_a_forged_or_expired_token_is_unauthenticated(
    node: str, public_port: int, user: User, kind: str
) -> None:
    if kind == "expired":
        token = await expired_token(user)
    else:
        header_and_claims, signature = user.access_token.rsplit(".", 1)
        token = f"{header_and_claims}.{signature[::-1]}"

    error = await asyncio.to_thread(probe, node, public_port, "token", "--token", token)

    assert error["codeName"] == "UNAUTHENTICATED", error


def test_the_21st_order_of_a_free_user_is_refused_with_retry_info(
    node: str, public_port: int, http: httpx.Client
) -> None:
    user = register_and_login(http, tier="free")
    done = run(
        node,
        *address(public_port, README_PORT),
        *("--probe", "rate-limit", "--email", user.email, "--password", PASSWORD),
        *("--product", STOCKED),
    )

    assert done.code == 0, f"{done.stdout}\n{done.stderr}"
    assert done.probed["attempts"] == 21, done.stdout
    error = done.probed["error"]
    assert error["codeName"] == "RESOURCE_EXHAUSTED", error
    assert "create_order: 20 per minute" in error["message"]
    [retry] = [d["value"] for d in error["details"] if d["type"] == "google.rpc.RetryInfo"]
    delay = int(retry["retryDelay"]["seconds"])
    assert 1 <= delay <= 60, retry
    assert error["retryAfter"] == str(delay)


def test_a_usage_error_exits_2(node: str) -> None:
    done = run(node, "--email", "ada@example.com")

    assert done.code == 2
    assert "--password" in done.stderr and "usage:" in done.stderr


def test_an_unreachable_edge_is_a_clear_error(node: str) -> None:
    done = run(node, "--address", "127.0.0.1:1", "--email", "a@example.com", "--password", "x")

    assert done.code == 1
    assert done.stderr.startswith("error: UNAVAILABLE (14): "), done.stderr
