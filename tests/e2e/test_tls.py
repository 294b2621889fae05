"""The edge over TLS 1.3 (ORDERMESH_ENVOY_TLS_PORT, 8443 by default): the same routes as the
plaintext port, with HTTP/2 and gRPC, trusted through the development CA that `ordermesh up`
writes to .run/tls/ca.pem. curl and grpcurl are driven as the README shows them."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ordermesh.common.v1 import common_pb2
from ordermesh.order.v1 import order_pb2, order_pb2_grpc
from websockets.asyncio.client import connect

from devstack import gotools, tls
from devstack.ports import Ports
from services.platform.contexts import PUBLIC_SERVICE_NAMES
from tests.e2e.conftest import STOCKED, User, order_body

pytestmark = pytest.mark.e2e

# curl's exit codes: the TLS handshake failed; the peer's certificate did not verify.
CURL_SSL_CONNECT_ERROR = 35
CURL_PEER_FAILED_VERIFICATION = 60


@pytest.fixture(scope="session")
def tls_port() -> int:
    return Ports.from_env().envoy_tls


@pytest.fixture(scope="session")
def ca_file() -> Path:
    path = tls.CertificateFiles.at(tls.DEFAULT_DIRECTORY).ca_certificate
    if not path.is_file():
        pytest.fail(f"{path} is missing: `ordermesh up` writes it")
    return path


@pytest.fixture(scope="session")
def grpcurl() -> str:
    return gotools.executable(gotools.GRPCURL)


def _no_proxy() -> dict[str, str]:
    """The environment without proxy settings: the tests talk to loopback only."""
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env=_no_proxy()
    )


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return run("curl", "--silent", "--show-error", "--max-time", "10", *args)


def _handshake(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return context.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


# --- curl: REST and /health --------------------------------------------------------------------


def test_health_over_tls_with_the_ca(ca_file: Path, tls_port: int) -> None:
    result = curl(
        "--cacert",
        str(ca_file),
        "--write-out",
        "\n%{http_code}",
        f"https://localhost:{tls_port}/health",
    )
    assert result.returncode == 0, result.stderr
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "200"
    assert json.loads(body) == {"status": "ok"}


def test_rest_over_tls_creates_and_reads_an_order(ca_file: Path, tls_port: int, user: User) -> None:
    base = f"https://localhost:{tls_port}"
    auth = f"Authorization: Bearer {user.access_token}"
    created = curl(
        "--cacert",
        str(ca_file),
        "--fail-with-body",
        "-H",
        auth,
        "-H",
        "Content-Type: application/json",
        "-H",
        f"Idempotency-Key: tls-{uuid.uuid4().hex}",
        "--data",
        json.dumps(order_body()),
        f"{base}/api/v1/orders",
    )
    assert created.returncode == 0, created.stdout + created.stderr
    order_id = json.loads(created.stdout)["order_id"]
    read = curl(
        "--cacert", str(ca_file), "--fail-with-body", "-H", auth, f"{base}/api/v1/orders/{order_id}"
    )
    assert read.returncode == 0, read.stdout + read.stderr
    order = json.loads(read.stdout)
    assert (order["order_id"], order["user_id"]) == (order_id, user.user_id)


def test_curl_negotiates_http2(ca_file: Path, tls_port: int) -> None:
    result = curl(
        "--cacert",
        str(ca_file),
        "--http2",
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_version} %{http_code}",
        f"https://localhost:{tls_port}/health",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2 200"


def test_an_httpx_client_trusting_the_ca_gets_the_docs(ca_file: Path, tls_port: int) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    with httpx.Client(verify=context, trust_env=False, timeout=10) as client:
        response = client.get(f"https://localhost:{tls_port}/docs/openapi.json")
    assert response.status_code == 200
    assert "/api/v1/orders" in response.json()["paths"]


async def test_a_websocket_over_tls(ca_file: Path, tls_port: int, user: User) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    async with connect(
        f"wss://localhost:{tls_port}/ws/orders/{user.user_id}",
        ssl=context,
        additional_headers={"Authorization": f"Bearer {user.access_token}"},
        open_timeout=10,
    ) as ws:
        await ws.send("ping")
        async with asyncio.timeout(30):
            while json.loads(await ws.recv())["type"] != "pong":
                pass


# --- gRPC --------------------------------------------------------------------------------------


def test_grpcurl_lists_the_services_over_tls(grpcurl: str, ca_file: Path, tls_port: int) -> None:
    result = run(grpcurl, "-cacert", str(ca_file), f"localhost:{tls_port}", "list")
    assert result.returncode == 0, result.stderr
    assert set(PUBLIC_SERVICE_NAMES) | {"grpc.health.v1.Health"} <= set(result.stdout.split())


def test_grpcurl_calls_a_method_over_tls(
    grpcurl: str, ca_file: Path, tls_port: int, user: User
) -> None:
    result = run(
        grpcurl,
        "-cacert",
        str(ca_file),
        "-H",
        f"authorization: Bearer {user.access_token}",
        "-d",
        json.dumps({"page_size": 5}),
        f"localhost:{tls_port}",
        "ordermesh.order.v1.OrderService/ListOrders",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pageSize"] == 5


@pytest.fixture(scope="session")
def grpc_credentials(ca_file: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())


@pytest.fixture
async def tls_channel(
    grpc_credentials: grpc.ChannelCredentials, tls_port: int
) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.secure_channel(f"localhost:{tls_port}", grpc_credentials) as opened:
        yield opened


async def test_a_python_grpc_client_trusting_the_ca(
    tls_channel: grpc.aio.Channel, user: User
) -> None:
    health = await health_pb2_grpc.HealthStub(tls_channel).Check(
        health_pb2.HealthCheckRequest(service="ordermesh.order.v1.OrderService")
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    orders = order_pb2_grpc.OrderServiceStub(tls_channel)
    created = await orders.CreateOrder(
        order_pb2.CreateOrderRequest(
            items=[order_pb2.CreateOrderItem(product_id=STOCKED, quantity=1)],
            shipping_address=common_pb2.Address(
                street="1 Main St", city="Springfield", state="IL", zip="62701", country="US"
            ),
            payment_method="tok_visa",
            idempotency_key=f"tls-{uuid.uuid4().hex}",
        ),
        metadata=user.grpc_metadata,
    )
    read = await orders.GetOrder(
        order_pb2.GetOrderRequest(order_id=created.order.order_id), metadata=user.grpc_metadata
    )
    assert read.order.user_id == user.user_id


def test_grpc_web_over_tls(ca_file: Path, tls_port: int) -> None:
    message = health_pb2.HealthCheckRequest(service="ordermesh.order.v1.OrderService")
    payload = message.SerializeToString()
    frame = b"\x00" + len(payload).to_bytes(4, "big") + payload
    context = ssl.create_default_context(cafile=ca_file)
    with httpx.Client(verify=context, trust_env=False, timeout=10) as client:
        response = client.post(
            f"https://localhost:{tls_port}/grpc.health.v1.Health/Check",
            content=frame,
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        )
    assert response.status_code == 200
    body = response.content
    frames: dict[int, bytes] = {}
    while body:
        length = int.from_bytes(body[1:5], "big")
        frames[body[0]] = body[5 : 5 + length]
        body = body[5 + length :]
    reply = health_pb2.HealthCheckResponse.FromString(frames[0x00])
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert b"grpc-status:0" in frames[0x80].replace(b" ", b"")


# --- what is refused ---------------------------------------------------------------------------


def test_curl_limited_to_tls12_is_refused(ca_file: Path, tls_port: int) -> None:
    result = curl(
        "--cacert",
        str(ca_file),
        "--tls-max",
        "1.2",
        "--output",
        "/dev/null",
        f"https://localhost:{tls_port}/health",
    )
    assert result.returncode == CURL_SSL_CONNECT_ERROR, (result.returncode, result.stderr)
    assert "protocol version" in result.stderr


def test_a_python_tls12_client_fails_the_handshake(ca_file: Path, tls_port: int) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        _handshake(tls_port, context).close()


def test_the_certificate_verifies_against_the_ca_only(ca_file: Path, tls_port: int) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with _handshake(tls_port, context) as connection:
        assert connection.version() == "TLSv1.3"
        assert connection.selected_alpn_protocol() == "h2"
        certificate = connection.getpeercert()
    assert certificate is not None
    names = certificate["subjectAltName"]
    assert {("DNS", "localhost"), ("IP Address", "127.0.0.1")} <= set(names)

    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls_port, ssl.create_default_context()).close()
    result = curl("--output", "/dev/null", f"https://localhost:{tls_port}/health")
    assert result.returncode == CURL_PEER_FAILED_VERIFICATION, (result.returncode, result.stderr)
