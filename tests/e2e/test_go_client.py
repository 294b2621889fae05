"""The Go client (examples/go, on the generated module gen/go) against the running stack,
through Envoy's public port: it prints every status of a new order once, in order, over
plaintext and over TLS with the development CA; and refusals reach it as the right gRPC
status with their google.rpc details (BadRequest, RetryInfo) decoded in Go."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import tls
from devstack.paths import REPO_ROOT
from devstack.ports import Ports
from tests.e2e.conftest import (
    PASSWORD,
    STOCKED,
    User,
    own_address,
    register_and_login,
)
from tests.e2e.tokens import expired_token

pytestmark = pytest.mark.e2e

EXAMPLE = REPO_ROOT / "examples" / "go"
HAPPY = ["PENDING", "VALIDATED", "PAID", "FULFILLED", "SHIPPED"]


@dataclass(frozen=True)
class GoClient:
    binary: Path
    address: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Runs the client against ``address`` from a loopback address of its own: the
        edge limits logins and anonymous calls per client address."""
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        return subprocess.run(
            [str(self.binary), "-addr", self.address, "-source-addr", own_address(), *args],
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
            env=env,
        )

    def probe(self, *args: str) -> dict[str, Any]:
        """The first refusal of ``-probe`` CreateOrder calls, as the client decoded it."""
        result = self.run("-probe", "-product", STOCKED, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        outcome: dict[str, Any] = json.loads(result.stdout)
        return outcome


@pytest.fixture(scope="session")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/go built with the Go toolchain (modules from Go's own cache, outside the
    clone)."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("the Go toolchain is needed to build examples/go")
    binary = tmp_path_factory.mktemp("go-client") / "ordermesh-go-example"
    built = subprocess.run(
        [go, "build", "-buildvcs=false", "-o", str(binary), "."],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return binary


@pytest.fixture(scope="session")
def go_client(go_binary: Path, public_port: int) -> GoClient:
    return GoClient(go_binary, f"127.0.0.1:{public_port}")


def printed_statuses(stdout: str) -> list[str]:
    return [line.split()[1] for line in stdout.splitlines() if line.startswith("update ")]


def created_order_id(stdout: str) -> str:
    created = [line for line in stdout.splitlines() if line.startswith("order ")]
    assert len(created) == 1, stdout
    return created[0].split()[1]


def assert_walked_to_shipped(
    result: subprocess.CompletedProcess[str], http: httpx.Client, user: User
) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert printed_statuses(result.stdout) == HAPPY, result.stdout
    assert "returned the same order" in result.stdout
    order_id = created_order_id(result.stdout)
    orders = http.get("/api/v1/orders", headers=user.headers).json()["orders"]
    assert [o["order_id"] for o in orders] == [order_id], "the keyed retry made no second order"
    assert orders[0]["status"] == "ORDER_STATUS_SHIPPED"


def test_the_go_client_prints_every_status_of_a_new_order_once_in_order(
    go_client: GoClient, http: httpx.Client, user: User
) -> None:
    result = go_client.run("-email", user.email, "-password", PASSWORD, "-product", STOCKED)
    assert_walked_to_shipped(result, http, user)
    assert f"logged in as {user.email}" in result.stdout
    assert STOCKED in result.stdout, "the catalog is listed"
    assert "shipped: carrier " in result.stdout


def test_the_go_client_over_tls_with_the_development_ca(
    go_binary: Path, http: httpx.Client, user: User
) -> None:
    ca = tls.CertificateFiles.at(tls.DEFAULT_DIRECTORY).ca_certificate
    client = GoClient(go_binary, f"localhost:{Ports.from_env().envoy_tls}")
    result = client.run(
        "-tls", "-ca", str(ca), "-email", user.email, "-password", PASSWORD, "-product", STOCKED
    )
    assert_walked_to_shipped(result, http, user)


def test_a_bad_quantity_is_invalid_argument_naming_the_field(
    go_client: GoClient, user: User
) -> None:
    outcome = go_client.probe("-token", user.access_token, "-quantity", "0")
    refusal = outcome["refusal"]
    assert (outcome["accepted"], refusal["code"]) == (0, "INVALID_ARGUMENT")
    assert "google.rpc.BadRequest" in refusal["detail_types"]
    assert [v["field"] for v in refusal["field_violations"]] == ["items[0].quantity"]
    assert "between 1 and" in refusal["field_violations"][0]["description"]


def test_a_missing_token_is_unauthenticated(go_client: GoClient) -> None:
    outcome = go_client.probe()
    assert (outcome["accepted"], outcome["refusal"]["code"]) == (0, "UNAUTHENTICATED")


def _with_forged_signature(token: str) -> str:
    header, claims, signature = token.split(".")
    forged = bytes(b ^ 0xFF for b in base64.urlsafe_b64decode(signature + "=="))
    return ".".join((header, claims, base64.urlsafe_b64encode(forged).decode().rstrip("=")))


async def test_a_forged_or_expired_token_is_unauthenticated(
    go_client: GoClient, user: User
) -> None:
    for token in (_with_forged_signature(user.access_token), await expired_token(user)):
        outcome = go_client.probe("-token", token)
        assert (outcome["accepted"], outcome["refusal"]["code"]) == (0, "UNAUTHENTICATED")


def test_a_wrong_password_ends_the_walkthrough_with_a_clear_error(
    go_client: GoClient, user: User
) -> None:
    result = go_client.run("-email", user.email, "-password", "not the password")
    assert result.returncode == 1
    assert result.stderr.startswith("error: login: UNAUTHENTICATED: "), result.stderr
    assert result.stdout == ""


def test_the_21st_create_of_a_free_user_is_resource_exhausted_with_retry_info(
    go_client: GoClient, http: httpx.Client
) -> None:
    user = register_and_login(http, tier="free")
    outcome = go_client.probe("-token", user.access_token, "-repeat", "21")
    refusal = outcome["refusal"]
    assert (outcome["accepted"], refusal["code"]) == (20, "RESOURCE_EXHAUSTED")
    assert "create_order: 20 per minute per user (free tier)" in refusal["message"]
    assert "google.rpc.RetryInfo" in refusal["detail_types"]
    assert 0 < refusal["retry_delay_seconds"] <= 60
