"""The Envoy edge config: the rendered local and compose configs pass ``envoy --mode validate``,
and a real Envoy (with no backend behind it) shows the edge's own behaviour: the Lua guard's
JSON checks, JSON error bodies for Envoy's local replies, jwt_authn, /health, /docs, CORS.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from devstack import edge, tls
from devstack.envoy import binary
from tests.integration.envoy_harness import Edge, running_envoy
from tests.ports import reserve_port

pytestmark = pytest.mark.integration


def _validate(config: Path) -> None:
    result = subprocess.run(
        [str(binary()), "--mode", "validate", "-c", str(config), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_local_config_validates(tmp_path: Path) -> None:
    out = edge.render(
        listen_port=reserve_port(),
        admin_port=reserve_port(),
        clusters=edge.local_clusters("127.0.0.1", 50051),
        descriptor=edge.ENVOY_DESCRIPTOR,
        out=tmp_path / "envoy.yaml",
        ratelimit=("127.0.0.1", 50061),
        gateway=("127.0.0.1", 8081),
        tls_listener=edge.TlsListener.from_files(reserve_port(), tls.ensure(tmp_path / "tls")),
        tracing=edge.Tracing("http://127.0.0.1:59411/api/v2/spans", 0.25),
    )
    _validate(out)


def test_compose_config_validates(tmp_path: Path) -> None:
    text = edge.COMPOSE_CONFIG.read_text()
    assert text == edge.compose_text(), "stale: run python -m devstack.edge --compose"
    # The descriptor and the certificates live at container paths in compose; point them at
    # the local copy and at certificates made here.
    assert str(edge.COMPOSE_DESCRIPTOR) in text
    assert str(edge.COMPOSE_TLS_DIR) in text
    certificates = tls.ensure(tmp_path / "tls")
    local = tmp_path / "envoy.compose.yaml"
    local.write_text(
        text.replace(str(edge.COMPOSE_DESCRIPTOR), str(edge.ENVOY_DESCRIPTOR)).replace(
            str(edge.COMPOSE_TLS_DIR), str(certificates.directory)
        )
    )
    _validate(local)


# --- a running Envoy with every backend down ---------------------------------------------------


@pytest.fixture(scope="module")
def envoy_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    dead = edge.local_clusters("127.0.0.1", reserve_port())
    with running_envoy(tmp_path_factory.mktemp("edge"), dead) as running:
        yield running


@pytest.fixture
def client(envoy_edge: Edge) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=envoy_edge.url, timeout=10) as http:
        yield http


def _status_body(response: httpx.Response, code: int) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert body["details"] == [] or isinstance(body["details"], list)
    return body


@pytest.mark.parametrize("path", ["/api/v1/auth/login", "/api/v1/auth/login/"])
def test_unknown_field_is_rejected(client: httpx.Client, path: str) -> None:
    ok = client.post(path, json={"email": "a@b.c", "password": "x"})
    assert ok.status_code == 503  # passed the guard; no backend behind it
    _status_body(ok, 14)
    response = client.post(path, json={"email": "a@b.c", "passwd": "x"})
    assert response.status_code == 400
    assert _status_body(response, 3)["message"] == 'unknown field "passwd"'


def test_unknown_nested_field_message(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/auth/register", json={"email": "a@b.c", "password": "p", "nickname": "x"}
    )
    assert response.status_code == 400
    body = _status_body(response, 3)
    assert body["message"] == 'unknown field "nickname"'
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "field_violations": [{"field": "nickname", "description": "unknown field"}],
        }
    ]
    # camelCase JSON names are accepted like the transcoder accepts them.
    ok = client.post("/api/v1/auth/register", json={"email": "a@b.c", "fullName": "A"})
    assert ok.status_code == 503


@pytest.mark.parametrize(
    "raw",
    [
        '{"refresh_token": "a\\"b\\\\c\\/\\u00e9\\ud83d\\ude00\\n"}',
        '  {"refresh_token" :\t"x" }\r\n',
        '{"refresh_token": "\u00e9\u4e2d"}',
        '{"refreshToken": "x"}',
        "{}",
    ],
)
def test_valid_json_passes_the_guard(client: httpx.Client, raw: str) -> None:
    response = client.post(
        "/api/v1/auth/refresh",
        content=raw.encode(),
        headers={"content-type": "application/json"},
    )
    # Through the guard and the transcoder to the (absent) backend.
    assert response.status_code == 503, response.text
    _status_body(response, 14)


@pytest.mark.parametrize(
    "raw",
    [
        '{"refresh_token": "x",}',
        '{"refresh_token": "x"',
        '{"refresh_token": "x"} trailing',
        "{refresh_token: 1}",
        '{"refresh_token": "a\x01b"}',
        '{"refresh_token": "\\x"}',
        '{"refresh_token": "\\u12"}',
        '{"refresh_token": 01}',
        '{"refresh_token": 1.}',
        '{"refresh_token": -}',
        '{"refresh_token": 1e}',
        '{"refresh_token": tru}',
        '{"refresh_token": [1 2]}',
        "[" * 200 + "]" * 200,
    ],
)
def test_malformed_json_is_a_json_400(client: httpx.Client, raw: str) -> None:
    response = client.post(
        "/api/v1/auth/refresh",
        content=raw.encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    message = _status_body(response, 3)["message"]
    assert message.startswith("malformed JSON body: "), message


@pytest.mark.parametrize("raw", ["", " \r\n"])
@pytest.mark.parametrize("path", ["/api/v1/auth/refresh", "/api/v1/auth/logout/"])
def test_a_missing_body_is_a_json_400(client: httpx.Client, path: str, raw: str) -> None:
    response = client.post(path, content=raw.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert _status_body(response, 3)["message"] == "a JSON object body is required"


def test_transcoder_errors_are_json(client: httpx.Client) -> None:
    # A type error the guard leaves to the transcoder (text/plain from Envoy otherwise).
    response = client.post("/api/v1/auth/login", json={"email": ["not", "a", "string"]})
    assert response.status_code == 400
    _status_body(response, 3)
    response = client.get("/api/v1/products", params={"unknown": "1"})
    assert response.status_code == 400
    _status_body(response, 3)


@pytest.mark.parametrize("path", ["/api/v1/nothing", "/api/v2/orders", "/", "/favicon.ico"])
def test_unknown_path_is_a_json_404(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    _status_body(response, 5)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/api/v1/auth/login", "POST"),
        ("GET", "/api/v1/auth/login/", "POST"),
        ("HEAD", "/api/v1/auth/refresh", "POST"),
        ("PUT", "/api/v1/products", "GET"),
        ("QUERY", "/api/v1/products/p-1", "GET"),
        ("OPTIONS", "/.well-known/jwks.json", "GET"),
    ],
)
def test_unserved_method_on_a_public_rest_path_is_a_json_405(
    client: httpx.Client, method: str, path: str, allow: str
) -> None:
    # (Protected paths authenticate first: tests/e2e/test_bad_input.py covers them.) A QUERY
    # needs a content type: Envoy refuses one without as malformed (400) before any filter.
    response = client.request(method, path, headers={"content-type": "application/json"})
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    if method != "HEAD":
        assert _status_body(response, 12)["message"].startswith(f"method {method} is not allowed")


def test_backend_down_is_a_json_503(client: httpx.Client) -> None:
    response = client.get("/api/v1/products", params={"page": 2})
    assert response.status_code == 503
    _status_body(response, 14)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/orders"),
        ("GET", "/api/v1/orders/"),
        ("POST", "/api/v1/orders"),
        ("GET", "/api/v1/orders/o-1"),
        ("PATCH", "/api/v1/orders/o-1"),
        ("DELETE", "/api/v1/orders/o-1"),
        ("GET", "/api/v1/orders/o-1/payment"),
        ("GET", "/api/v1/webhooks"),
        ("POST", "/api/v1/webhooks/"),
        ("GET", "/api/v1/auth/me"),
        ("GET", "/api/v1/auth/me/"),
    ],
)
def test_jwt_required(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 401
    assert _status_body(response, 16)["message"] == "Jwt is missing"
    forged = client.request(method, path, headers={"authorization": "Bearer a.b"})
    assert forged.status_code == 401
    _status_body(forged, 16)


def test_jwt_not_required(client: httpx.Client) -> None:
    for path in ("/api/v1/products", "/.well-known/jwks.json", "/api/v1/products/p-1"):
        assert client.get(path).status_code == 503, path  # reached the (absent) backend
    for path in ("/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/logout"):
        assert client.post(path, json={}).status_code == 503, path


def test_grpc_jwt_and_unavailable(envoy_edge: Edge) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{envoy_edge.port}") as channel:
        for method in (
            "/ordermesh.order.v1.OrderService/ListOrders",
            "/ordermesh.webhook.v1.WebhookService/ListWebhooks",
            "/ordermesh.auth.v1.AuthService/GetCurrentUser",
        ):
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
            with pytest.raises(grpc.RpcError) as error:
                call(b"", timeout=10)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
            assert error.value.details() == "Jwt is missing"
        call = channel.unary_unary("/ordermesh.inventory.v1.InventoryService/ListProducts")
        with pytest.raises(grpc.RpcError) as error:
            call(b"", timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_reflects_backends(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}


def test_docs(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/docs/openapi.json" in page.text
    assert "swagger-ui" in page.text
    spec = client.get("/docs/openapi.json")
    assert spec.status_code == 200
    assert spec.headers["content-type"] == "application/json"
    assert spec.content == edge.OPENAPI_JSON.read_bytes()
    assert "/api/v1/orders" in spec.json()["paths"]


def test_cors(client: httpx.Client) -> None:
    preflight = client.options(
        "/api/v1/orders/",
        headers={
            "origin": "https://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, idempotency-key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
    allowed = preflight.headers["access-control-allow-headers"]
    for header in ("authorization", "content-type", "idempotency-key"):
        assert header in allowed
    simple = client.get("/api/v1/products", headers={"origin": "https://other.example"})
    assert simple.headers["access-control-allow-origin"] == "https://other.example"
    assert "x-ratelimit-remaining" in simple.headers["access-control-expose-headers"]
