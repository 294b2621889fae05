"""The edge's generated REST field table, its Envoy descriptor and the config renderer.

The Lua guard itself runs inside Envoy: tests/integration/test_edge_config.py drives it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pb2

from devstack import edge
from devstack.paths import REPO_ROOT
from tests.unit.edge_configs import rendered
from tools import descriptors

SOURCE_DESCRIPTOR = REPO_ROOT / "gen" / "descriptor" / "ordermesh.binpb"


def _load_generator() -> ModuleType:
    path = REPO_ROOT / "tools" / "gen_rest_fields.py"
    spec = importlib.util.spec_from_file_location("gen_rest_fields", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_rest_fields"] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _fds(path: Path = SOURCE_DESCRIPTOR) -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(path.read_bytes())
    return fds


def _rule(table: Any, method: str, path: str) -> Any:
    segments, _ = gen.parse_template(path)
    matches = [r for r in table.rules if r.method == method and r.segments == segments]
    assert len(matches) == 1, (method, path, matches)
    return matches[0]


@pytest.mark.parametrize(
    ("template", "segments", "verb"),
    [
        ("/api/v1/orders", ("api", "v1", "orders"), None),
        ("/api/v1/orders/{order_id}", ("api", "v1", "orders", "*"), None),
        ("/v1/{name=shelves/*/books/*}", ("v1", "shelves", "*", "books", "*"), None),
        ("/v1/{name=**}", ("v1", "**"), None),
        ("/v1/{name=shelves/*}:publish", ("v1", "shelves", "*"), "publish"),
        ("/.well-known/jwks.json", (".well-known", "jwks.json"), None),
    ],
)
def test_parse_template(template: str, segments: tuple[str, ...], verb: str | None) -> None:
    assert gen.parse_template(template) == (segments, verb)


def test_create_order_fields() -> None:
    table = gen.build_table(_fds())
    rule = _rule(table, "POST", "/api/v1/orders")
    assert rule.body == "ordermesh.order.v1.CreateOrderRequest"
    assert rule.response_body == "order"
    request = table.messages["ordermesh.order.v1.CreateOrderRequest"]
    assert request["items"] == "ordermesh.order.v1.CreateOrderItem"
    assert (
        request["shipping_address"] == request["shippingAddress"] == "ordermesh.common.v1.Address"
    )
    # Struct / Value fields accept any JSON.
    assert request["metadata"] is True
    assert request["total_amount"] is True
    assert table.messages["ordermesh.order.v1.CreateOrderItem"]["unit_price"] is True
    assert set(table.messages["ordermesh.common.v1.Address"]) == {
        "street",
        "city",
        "state",
        "zip",
        "country",
    }
    # Well-known types are not described field by field.
    assert not any(name.startswith("google.") for name in table.messages)


def test_rules_cover_every_rest_binding() -> None:
    table = gen.build_table(_fds())
    assert _rule(table, "GET", "/api/v1/orders").body is None
    assert _rule(table, "PATCH", "/api/v1/orders/{order_id}").body == (
        "ordermesh.order.v1.UpdateOrderStatusRequest"
    )
    assert _rule(table, "POST", "/api/v1/webhooks").body == (
        "ordermesh.webhook.v1.RegisterWebhookRequest"
    )
    assert _rule(table, "GET", "/.well-known/jwks.json").response_body is None
    # More specific templates come first: /orders/{id}/payment before /orders/{id}.
    order = [r.segments for r in table.rules if r.method == "GET"]
    assert order.index(("api", "v1", "orders", "*", "payment")) < order.index(
        ("api", "v1", "orders", "*")
    )


def test_envoy_descriptor_has_no_response_body() -> None:
    assert descriptors.unsupported_response_bodies(SOURCE_DESCRIPTOR), "protos changed?"
    fds = _fds()
    changed = gen.strip_response_bodies(fds)
    assert "ordermesh.order.v1.OrderService.CreateOrder:order" in changed
    assert descriptors.unsupported_response_bodies(edge.ENVOY_DESCRIPTOR) == []


def test_generated_files_are_fresh(tmp_path: Path) -> None:
    lua, descriptor = gen.generate(SOURCE_DESCRIPTOR, tmp_path)
    assert lua.read_text() == edge.REST_FIELDS_LUA.read_text(), "run scripts/gen"
    assert descriptor.read_bytes() == edge.ENVOY_DESCRIPTOR.read_bytes(), "run scripts/gen"


def test_compose_config_is_fresh() -> None:
    assert edge.COMPOSE_CONFIG.read_text() == edge.compose_text(), (
        "run: python -m devstack.edge --compose"
    )


# --- the template filler -----------------------------------------------------------------------


def test_fill_round_trips_through_yaml() -> None:
    template = "\n".join(
        [
            'a: "${number}"',
            'b: {x: "${text}", y: 1}',
            "c:",
            '  d: "${block}"',
            '  e: "${mapping}"',
            "  items:",
            '    - "${items}"',
            "    - last",
            "  none:",
            '    - "${empty}"',
            "    - only",
            "f:",
            '  - g: "${mapping}"',
        ]
    )
    text = 'quote " back\\slash \u00e9 \u2028 \U0001f600 tab\t'
    block = "-- lua\nlocal x = 'y'\n\n  indented\n"
    mapping: dict[str, object] = {
        "@type": "t",
        "list": [1, {"k": True}],
        "empty": {},
        ":path": None,
    }
    items: list[object] = [{"name": "one", "sub": {"z": [1, 2]}}, "two"]
    values: dict[str, object] = {
        "number": 8000,
        "text": text,
        "block": block,
        "mapping": mapping,
        "items": items,
        "empty": [],
    }
    loaded = yaml.safe_load(edge.fill(template, values))
    assert loaded == {
        "a": 8000,
        "b": {"x": text, "y": 1},
        "c": {"d": block, "e": mapping, "items": [*items, "last"], "none": ["only"]},
        "f": [{"g": mapping}],
    }


def test_fill_rejects_unknown_and_unused_placeholders() -> None:
    with pytest.raises(KeyError):
        edge.fill('a: "${missing}"', {})
    with pytest.raises(KeyError):
        edge.fill("a: 1", {"extra": 1})


# --- the rendered config -------------------------------------------------------------------------


def _render(**overrides: Any) -> dict[str, Any]:
    return rendered(**{"gateway": None, "listen_address": "0.0.0.0", **overrides})


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def test_every_api_route_is_rate_limited_but_the_edges_own_key_fetch() -> None:
    routes = _hcm(_render())["route_config"]["virtual_hosts"][0]["routes"]
    by_name = {route["name"]: route for route in routes}
    assert "rate_limits" not in by_name["grpc-auth-GetJwks"]["route"]
    assert [r["stage"] for r in by_name["grpc-auth-Login"]["route"]["rate_limits"]] == [1]
    assert [r["stage"] for r in by_name["grpc-auth-Register"]["route"]["rate_limits"]] == [1]
    for name in edge.SERVICES:
        [limits] = by_name[f"grpc-{name}"]["route"]["rate_limits"]
        assert limits["stage"] == 0
        keys = [a.get("request_headers", {}).get("descriptor_key") for a in limits["actions"]]
        assert keys == ["method", None, "user", "tier", "rest_path"]
        assert limits["actions"][1] == {"remote_address": {}}
    assert by_name["watch-orders"]["route"]["rate_limits"][0]["stage"] == 0
    names = [route["name"] for route in routes]
    assert names.index("grpc-auth-GetJwks") < names.index("grpc-auth")


def test_local_config() -> None:
    config = _render()
    assert config["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 19901,
    }
    clusters = _clusters(config)
    assert set(clusters) == {*edge.SERVICES, "edge_self", "ratelimit"}
    assert {c["type"] for c in clusters.values()} == {"STATIC"}
    for name in edge.SERVICES:
        assert clusters[name]["health_checks"][0]["grpc_health_check"] == {}
        options = clusters[name]["typed_extension_protocol_options"]
        http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "connection_keepalive" in http["explicit_http_config"]["http2_protocol_options"]
    hcm = _hcm(config)
    assert hcm["codec_type"] == "AUTO"
    filters = [f["name"].rsplit(".", 1)[-1] for f in hcm["http_filters"]]
    assert filters == [
        "cors",
        "health_check",
        "grpc_web",
        "jwt_authn",
        "lua",
        "grpc_json_transcoder",
        "ratelimit",
        "fail_closed",
        "router",
    ]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert not [r for r in routes if r["match"].get("prefix") == "/ws/"]
    watch = next(r for r in routes if r["name"] == "watch-orders")
    assert watch["route"]["timeout"] == "0s"
    jwt = hcm["http_filters"][3]["typed_config"]
    uri = jwt["providers"]["ordermesh"]["remote_jwks"]["http_uri"]
    assert uri["uri"] == "http://127.0.0.1:18000/.well-known/jwks.json"
    assert uri["cluster"] == "edge_self"
    required = {r["match"].get("prefix") or r["match"].get("path") for r in jwt["rules"]}
    assert "/api/v1/orders" in required
    assert "/ordermesh.auth.v1.AuthService/GetCurrentUser" in required
    assert not any(p.startswith(("/api/v1/auth/login", "/api/v1/products")) for p in required)
    lua = hcm["http_filters"][4]["typed_config"]["default_source_code"]["inline_string"]
    assert lua.startswith("local REST_FIELDS = (function()")
    assert "function envoy_on_request" in lua


def test_the_edge_bounds_what_a_client_can_hold_open_and_logs_every_request() -> None:
    hcm = _hcm(_render())
    routes = {
        r["name"]: r["route"]
        for r in hcm["route_config"]["virtual_hosts"][0]["routes"]
        if "route" in r
    }
    for name in edge.SERVICES:
        grpc_route = routes[f"grpc-{name}"]
        assert grpc_route["max_stream_duration"] == {"grpc_timeout_header_max": "60s"}
        assert grpc_route["timeout"] == "30s"
    for unauthenticated in ("grpc-health", "reflection-v1", "reflection-v1alpha"):
        assert routes[unauthenticated]["idle_timeout"] == "60s"
    [log] = hcm["access_log"]
    assert log["typed_config"]["log_format"]["json_format"] == edge.ACCESS_LOG_FORMAT
    assert log["typed_config"]["path"] == "/dev/stdout"
    oversize = [m for m in hcm["local_reply_config"]["mappers"] if m.get("status_code") == 400]
    assert {m["body_format_override"]["json_format"]["code"] for m in oversize} == {3}
    assert len(oversize) == len(edge.OVERSIZE_REPLIES)


def test_compose_config() -> None:
    config: dict[str, Any] = yaml.safe_load(edge.compose_text())
    clusters = _clusters(config)
    assert clusters["order"]["type"] == "STRICT_DNS"
    endpoint = clusters["order"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "order",
        "port_value": 50051,
    }
    assert clusters["gateway"]["load_assignment"]["cluster_name"] == "gateway"
    hcm = _hcm(config)
    transcoder = hcm["http_filters"][5]["typed_config"]
    assert transcoder["proto_descriptor"] == "/etc/ordermesh/ordermesh.binpb"
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    ws = next(r for r in routes if r["match"].get("prefix") == "/ws/")
    assert ws["route"]["upgrade_configs"] == [{"upgrade_type": "websocket"}]
    assert ws["route"]["timeout"] == "0s"


def test_render_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing"):
        _render(clusters={"order": ("127.0.0.1", 1)})
    with pytest.raises(ValueError, match="response_body"):
        _render(descriptor=SOURCE_DESCRIPTOR)
    out = edge.render(
        listen_port=18000,
        admin_port=19901,
        clusters=edge.local_clusters("127.0.0.1", 50051),
        descriptor=edge.ENVOY_DESCRIPTOR,
        out=tmp_path / "sub" / "envoy.yaml",
        ratelimit=("127.0.0.1", 50061),
        gateway=("127.0.0.1", 8081),
    )
    assert yaml.safe_load(out.read_text())["static_resources"]["clusters"][-1]["name"] == "gateway"
