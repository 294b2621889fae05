"""Renders the Envoy edge config from ``envoy/envoy.yaml.tmpl``.

The template is YAML whose string values ``"${name}"`` are placeholders (see :func:`fill`); it
is loaded, filled and dumped again with PyYAML. The Lua guard (``envoy/rest_guard.lua``
with the generated field table ``gen/envoy/rest_fields.lua`` in front), the docs page and the
OpenAPI document are inlined, so the rendered file needs nothing beside it but the descriptor set.

``python -m devstack.edge --compose`` writes the checked-in ``envoy/envoy.compose.yaml``;
``--check`` fails when that file is stale.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from devstack import tls
from devstack.paths import REPO_ROOT
from ratelimit import config as limits_config
from services.platform.contexts import CONTEXTS
from tools.descriptors import unsupported_response_bodies

ENVOY_DIR: Path = REPO_ROOT / "envoy"
TEMPLATE: Path = ENVOY_DIR / "envoy.yaml.tmpl"
GUARD_LUA: Path = ENVOY_DIR / "rest_guard.lua"
DOCS_HTML: Path = ENVOY_DIR / "docs.html"
COMPOSE_CONFIG: Path = ENVOY_DIR / "envoy.compose.yaml"
REST_FIELDS_LUA: Path = REPO_ROOT / "gen" / "envoy" / "rest_fields.lua"
OPENAPI_JSON: Path = REPO_ROOT / "gen" / "openapi" / "ordermesh.swagger.json"
# The descriptor set Envoy transcodes with: gen/descriptor/ordermesh.binpb with the
# response_body options Envoy cannot load cleared (tools/gen_rest_fields.py writes it).
ENVOY_DESCRIPTOR_NAME = "ordermesh.binpb"
ENVOY_DESCRIPTOR: Path = REPO_ROOT / "gen" / "envoy" / ENVOY_DESCRIPTOR_NAME
# The source descriptor set (imports included) that scripts/gen builds from protos/.
DESCRIPTOR: Path = REPO_ROOT / "gen" / "descriptor" / "ordermesh.binpb"

# Cluster (service short name) -> fully qualified gRPC service.
SERVICES: dict[str, str] = {context.name: context.grpc_service for context in CONTEXTS}

# jwt_authn requirements, as path prefixes (so trailing-slash variants are covered too: the
# Lua guard strips the slash only after jwt_authn has run).
JWT_REQUIRED_PREFIXES: tuple[str, ...] = (
    "/api/v1/orders",
    "/api/v1/webhooks",
    "/api/v1/auth/me",
    "/ordermesh.order.v1.OrderService/",
    "/ordermesh.payment.v1.PaymentService/",
    "/ordermesh.fulfillment.v1.FulfillmentService/",
    "/ordermesh.webhook.v1.WebhookService/",
)
JWT_REQUIRED_PATHS: tuple[str, ...] = ("/ordermesh.auth.v1.AuthService/GetCurrentUser",)

# HTTP status of a reply Envoy makes itself -> google.rpc.Code in its JSON body.
LOCAL_REPLY_CODES: dict[int, int] = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    408: 4,  # DEADLINE_EXCEEDED
    429: 8,  # RESOURCE_EXHAUSTED
    500: 13,  # INTERNAL
    501: 12,  # UNIMPLEMENTED
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}

# A request too large for the edge to read (Envoy's own 413 and 431) is bad input like any
# other request that breaks the contract's bounds: 400 INVALID_ARGUMENT, as grpc-gateway
# answers a body it cannot read.
OVERSIZE_REPLIES: dict[int, str] = {
    413: "the request body is larger than the edge accepts",
    431: "the request line and headers are larger than the edge accepts",
}

TRANSCODER_OFF: dict[str, Any] = {
    "envoy.filters.http.grpc_json_transcoder": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "disabled": True,
    }
}

# Local replies jwt_authn makes with 403 (a token for another audience), for
# local_reply_config: jwt_authn sets no response flag, so match its response code details.
JWT_FORBIDDEN_FILTER: dict[str, Any] = {
    "name": "envoy.access_loggers.extension_filters.cel",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3."
        "ExpressionFilter",
        "expression": "response.code == 403 && response.code_details.startsWith('jwt_authn')",
    },
}

# Local replies of a ratelimit filter that could not reach the rate-limit service (on a route
# that fails closed), for local_reply_config.
RATELIMIT_ERROR_FILTER: dict[str, Any] = {
    "name": "envoy.access_loggers.extension_filters.cel",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3."
        "ExpressionFilter",
        "expression": "response.code_details == 'rate_limiter_error'",
    },
}
RATELIMIT_ERROR_MESSAGE = (
    "rate limiting is unavailable, and this call is refused until it is back; retry shortly"
)

# GET /health is 200 while at least this share of every service cluster's hosts passes the
# active gRPC health checks (one host per service locally: it must be up). With replicas, one
# restarting replica does not take the whole edge out of a load balancer.
MIN_HEALTHY_PERCENT = 50

# The longest deadline a unary gRPC caller may ask for (grpc-timeout); the route timeout
# (30 s) applies to callers that send none.
GRPC_TIMEOUT_MAX = "60s"

# One JSON object per request in Envoy's access log.
ACCESS_LOG_FORMAT: dict[str, str] = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    # The trace Envoy started for the request (empty when it is not traced).
    "trace_id": "%TRACE_ID%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream": "%UPSTREAM_HOST%",
    "user_id": "%REQ(X-ORDERMESH-USER-ID)%",
    "user_agent": "%REQ(USER-AGENT)%",
}
COMPOSE_ACCESS_LOG = "/dev/stdout"

COMPOSE_CLUSTERS: dict[str, tuple[str, int]] = {name: (name, 50051) for name in SERVICES}
COMPOSE_GATEWAY: tuple[str, int] = ("gateway", 8081)
COMPOSE_RATELIMIT: tuple[str, int] = ("ratelimit", 50061)
COMPOSE_DESCRIPTOR = Path("/etc/ordermesh/ordermesh.binpb")
COMPOSE_LISTEN_PORT = 8000
COMPOSE_ADMIN_PORT = 9901
COMPOSE_TLS_PORT = 8443
# compose.yaml's tls-init service writes the certificates into a volume Envoy mounts here.
COMPOSE_TLS_DIR = PurePosixPath("/etc/ordermesh/tls")
# compose.yaml's zipkin service.
COMPOSE_ZIPKIN_URL = "http://zipkin:9411/api/v2/spans"


# --- the template ------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def fill(template: str, values: Mapping[str, object]) -> str:
    """The YAML ``template`` with every string ``"${name}"`` replaced by ``values[name]`` (a
    list item ``"${name}"`` by the items of a list), dumped again as YAML. Every placeholder
    needs a value and every value a placeholder."""
    return dump(filled(template, values))


def filled(template: str, values: Mapping[str, object]) -> Any:
    """The YAML ``template`` loaded, with its placeholders replaced (see :func:`fill`)."""
    used: set[str] = set()

    def value(name: str) -> object:
        if name not in values:
            raise KeyError(f"template placeholder ${{{name}}} has no value")
        used.add(name)
        return values[name]

    def substitute(node: object) -> object:
        if isinstance(node, str) and (match := _PLACEHOLDER.fullmatch(node)):
            return value(match.group(1))
        if isinstance(node, dict):
            return {key: substitute(item) for key, item in node.items()}
        if isinstance(node, list):
            items: list[object] = []
            for item in node:
                match = _PLACEHOLDER.fullmatch(item) if isinstance(item, str) else None
                replacement = value(match.group(1)) if match else None
                if match and isinstance(replacement, list | tuple):
                    items.extend(replacement)
                else:
                    items.append(substitute(item))
            return items
        return node

    filled = substitute(yaml.safe_load(template))
    unused = set(values) - used
    if unused:
        raise KeyError(f"values without a placeholder: {sorted(unused)}")
    return filled


def dump(config: object) -> str:
    """``config`` as YAML; an object that appears twice is written once, with an alias."""
    return yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the Lua guard, the docs page) as literal blocks, so the rendered
    config stays readable."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    if "\n" in text and _block_safe(text):
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", text)


def _block_safe(text: str) -> bool:
    """Whether PyYAML can keep ``text`` as a literal block (no trailing spaces on a line,
    printable characters only)."""
    return all(not line.endswith(" ") for line in text.split("\n")) and all(
        ch in "\n\t" or (ch.isprintable() and ch not in "\u2028\u2029\x85\ufeff") for ch in text
    )


_Dumper.add_representer(str, _text)


# --- the config ---------------------------------------------------------------------------------


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cluster(
    name: str, host: str, port: int, *, http2: bool = True, health_check: bool = True
) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
    }
    if not _is_ip(host):
        cluster["dns_lookup_family"] = "V4_PREFERRED"
        cluster["dns_refresh_rate"] = "5s"
    cluster.update(
        {
            "connect_timeout": "2s",
            "lb_policy": "ROUND_ROBIN",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {"address": host, "port_value": port}
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
            # Long streams (WatchOrders, WebSockets) must not trip the default 1024 limit.
            "circuit_breakers": {
                "thresholds": [
                    {
                        "max_connections": 100000,
                        "max_pending_requests": 10000,
                        "max_requests": 100000,
                        "max_retries": 10,
                    }
                ]
            },
            "upstream_connection_options": {
                "tcp_keepalive": {
                    "keepalive_time": 60,
                    "keepalive_interval": 15,
                    "keepalive_probes": 3,
                }
            },
        }
    )
    protocol: dict[str, Any] = {"http_protocol_options": {}}
    if http2:
        protocol = {
            "http2_protocol_options": {
                "connection_keepalive": {"interval": "30s", "timeout": "20s"},
            }
        }
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"idle_timeout": "3600s"},
            "explicit_http_config": protocol,
        }
    }
    if health_check:
        cluster["health_checks"] = [
            {
                "timeout": "2s",
                "interval": "5s",
                "no_traffic_interval": "5s",
                "unhealthy_interval": "2s",
                "interval_jitter": "0.5s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                # The server-wide status (service ""): every server registers it.
                "grpc_health_check": {},
            }
        ]
    return cluster


def _status_filter(status: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": "EQ",
                "value": {
                    "default_value": status,
                    "runtime_key": f"edge.local_reply.status_{status}",
                },
            }
        }
    }


# What a grpc-web caller reads as grpc-message when the edge answers a call itself (a mapper
# cannot copy the reply's own text into a header).
GRPC_WEB_MESSAGES: dict[int, str] = {
    400: "the request is not valid",
    401: "unauthenticated: a valid bearer token is required",
    403: "permission denied",
    404: "no such method",
    408: "the request took too long",
    429: "rate limit exceeded",
    500: "internal error",
    501: "not implemented",
    502: "the service is unavailable",
    503: "the service is unavailable",
    504: "the service did not answer in time",
}


def _grpc_web_mappers() -> list[dict[str, Any]]:
    """Replies the edge makes itself (a missing token, a rate limit, an unreachable service) to
    a grpc-web call: a grpc-web client reads grpc-status and grpc-message only from an HTTP
    200 (any other status becomes its own "Http response at 400 or 500 level" message), and
    Envoy answers a grpc-web request as plain HTTP. So each becomes a trailers-only 200 whose
    grpc-status is the HTTP status's gRPC code. The rate-limit service sends its own
    grpc-message and details; other replies get a short message for their status."""
    grpc_web = {"header_filter": {"header": {"name": "x-grpc-web", "present_match": True}}}

    def mapper(condition: dict[str, Any], code: int, message: str) -> dict[str, Any]:
        return {
            "filter": {"and_filter": {"filters": [grpc_web, condition]}},
            "status_code": 200,
            "headers_to_add": [
                {
                    "header": {"key": "grpc-status", "value": str(code)},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                },
                {
                    "header": {"key": "grpc-message", "value": message},
                    "append_action": "ADD_IF_ABSENT",
                },
            ],
            "body_format_override": {"text_format": "", "content_type": "application/grpc"},
        }

    mappers = [
        mapper({"extension_filter": JWT_FORBIDDEN_FILTER}, 16, GRPC_WEB_MESSAGES[401]),
        mapper({"extension_filter": RATELIMIT_ERROR_FILTER}, 14, RATELIMIT_ERROR_MESSAGE),
    ]
    mappers += [
        mapper(_status_filter(status), code, GRPC_WEB_MESSAGES[status])
        for status, code in LOCAL_REPLY_CODES.items()
    ]
    return mappers


def _status_mappers() -> list[dict[str, Any]]:
    mappers: list[dict[str, Any]] = [
        {
            "filter": _status_filter(status),
            "status_code": 400,
            "body_format_override": {
                "json_format": {"code": 3, "message": message, "details": []},
                "content_type": "application/json",
            },
        }
        for status, message in OVERSIZE_REPLIES.items()
    ]
    for status, code in LOCAL_REPLY_CODES.items():
        mappers.append(
            {
                "filter": _status_filter(status),
                "body_format_override": {
                    "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []},
                    "content_type": "application/json",
                },
            }
        )
    return mappers


# Rate-limit stages (see the ratelimit filters in the template): stage 0 lets a route's
# calls through while the rate-limit service cannot answer, stage 1 refuses them (503).
FAIL_OPEN_STAGE = 0
FAIL_CLOSED_STAGE = 1
RATELIMIT_DOMAIN = "ordermesh"
# How long Envoy waits for the rate-limit service before its stage's failure mode applies.
RATELIMIT_TIMEOUT = "1s"


def _rate_limits(stage: int) -> list[dict[str, Any]]:
    """The descriptor of every limited call: its gRPC method (the path after transcoding),
    the client's address (the peer's: ``use_remote_address`` with no trusted hops, so a
    client's X-Forwarded-For is never believed) and, with a valid token, the user and tier
    jwt_authn put in headers (client-sent copies are removed before any filter runs)."""
    return [
        {
            "stage": stage,
            "actions": [
                {"request_headers": {"header_name": ":path", "descriptor_key": "method"}},
                {"remote_address": {}},
                {
                    "request_headers": {
                        "header_name": "x-ordermesh-user-id",
                        "descriptor_key": "user",
                        "skip_if_absent": True,
                    }
                },
                {
                    "request_headers": {
                        "header_name": "x-ordermesh-tier",
                        "descriptor_key": "tier",
                        "skip_if_absent": True,
                    }
                },
                # REST calls (the transcoder sets it): their refusal's body is JSON.
                {
                    "request_headers": {
                        "header_name": "x-envoy-original-path",
                        "descriptor_key": "rest_path",
                        "skip_if_absent": True,
                    }
                },
            ],
        }
    ]


def _ratelimit_filter(stage: int) -> dict[str, Any]:
    closed = stage == FAIL_CLOSED_STAGE
    config: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": RATELIMIT_DOMAIN,
        "stage": stage,
        "timeout": RATELIMIT_TIMEOUT,
        "failure_mode_deny": closed,
        # gRPC callers over the limit get RESOURCE_EXHAUSTED (not UNAVAILABLE); the
        # transcoder turns that into 429 for REST callers.
        "rate_limited_as_resource_exhausted": True,
        "rate_limit_service": {
            "grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
            "transport_api_version": "V3",
        },
    }
    if closed:
        config["status_on_error"] = {"code": "ServiceUnavailable"}
    return config


def fail_closed_methods() -> list[str]:
    """The gRPC methods whose limits fail closed, from the limits file (and overrides)."""
    limits = limits_config.load()
    return sorted(
        method for route in limits.routes if route.fail_closed for method in route.methods
    )


# Never rate limited: the public keys Envoy's jwt_authn fetches from this very listener (from
# 127.0.0.1); a client exhausting that address's budget must not stop the edge checking tokens.
UNLIMITED_METHODS: tuple[str, ...] = ("ordermesh.auth.v1.AuthService/GetJwks",)


def _grpc_route(
    name: str, cluster: str, match: dict[str, str], stage: int | None
) -> dict[str, Any]:
    retry = {"retry_on": "connect-failure,refused-stream,reset-before-request", "num_retries": 2}
    route: dict[str, Any] = {
        "cluster": cluster,
        "timeout": "30s",
        # A gRPC caller's own deadline (grpc-timeout) wins over the route timeout,
        # up to this cap: no caller can hold a unary call open for longer.
        "max_stream_duration": {"grpc_timeout_header_max": GRPC_TIMEOUT_MAX},
        "retry_policy": retry,
    }
    if stage is not None:
        route["rate_limits"] = _rate_limits(stage)
    return {"name": name, "match": match, "route": route}


def _grpc_routes() -> list[dict[str, Any]]:
    """One route per method that is never limited and per method whose limits fail closed
    (exact paths, no limits and stage 1), then one per service (prefix, stage 0)."""
    clusters = {service: name for name, service in SERVICES.items()}
    routes = []
    exact: list[tuple[str, int | None]] = [(m, None) for m in UNLIMITED_METHODS]
    exact += [(m, FAIL_CLOSED_STAGE) for m in fail_closed_methods()]
    for method, stage in exact:
        service = method.split("/")[0]
        if service not in clusters:
            raise ValueError(f"ratelimit/limits.yaml: {method} names no ordermesh service")
        routes.append(
            _grpc_route(
                f"grpc-{clusters[service]}-{method.split('/')[1]}",
                clusters[service],
                {"path": f"/{method}"},
                stage,
            )
        )
    routes += [
        _grpc_route(f"grpc-{name}", name, {"prefix": f"/{service}/"}, FAIL_OPEN_STAGE)
        for name, service in SERVICES.items()
    ]
    return routes


# Paths where a token is optional: a valid one still names the caller (for its rate limits),
# an invalid or missing one leaves the call anonymous; the services decide what it may do.
JWT_OPTIONAL_PREFIXES: tuple[str, ...] = ("/api/", "/ordermesh.")


def _jwt_rules() -> list[dict[str, Any]]:
    requires = {"provider_name": "ordermesh"}
    rules: list[dict[str, Any]] = [
        {"match": {"path": path}, "requires": requires} for path in JWT_REQUIRED_PATHS
    ]
    rules += [
        {"match": {"prefix": prefix}, "requires": requires} for prefix in JWT_REQUIRED_PREFIXES
    ]
    optional = {"requires_any": {"requirements": [requires, {"allow_missing_or_failed": {}}]}}
    rules += [
        {"match": {"prefix": prefix}, "requires": optional} for prefix in JWT_OPTIONAL_PREFIXES
    ]
    return rules


def _gateway_routes(gateway: tuple[str, int] | None) -> list[dict[str, Any]]:
    """The bridge's routes: WebSockets under ``/ws/`` (never timed out: the bridge sends
    heartbeats and WebSocket pings), and the live order page (``/`` and ``/static/``)."""
    if gateway is None:
        return []
    return [
        {
            "name": "websocket",
            "match": {"prefix": "/ws/"},
            "route": {
                "cluster": "gateway",
                "timeout": "0s",
                "idle_timeout": "0s",
                "upgrade_configs": [{"upgrade_type": "websocket"}],
            },
            "typed_per_filter_config": TRANSCODER_OFF,
        },
        {
            "name": "page",
            "match": {"path": "/"},
            "route": {"cluster": "gateway", "timeout": "10s"},
            "typed_per_filter_config": TRANSCODER_OFF,
        },
        {
            "name": "page-static",
            "match": {"prefix": "/static/"},
            "route": {"cluster": "gateway", "timeout": "10s"},
            "typed_per_filter_config": TRANSCODER_OFF,
        },
    ]


def lua_code(rest_fields: Path = REST_FIELDS_LUA) -> str:
    """The Lua guard with its generated field table in front."""
    if not rest_fields.is_file():
        raise FileNotFoundError(f"{rest_fields} is missing: run scripts/gen")
    table = rest_fields.read_text().rstrip("\n")
    return (
        f"local REST_FIELDS = (function()\n{table}\nend)()\n\n"
        + GUARD_LUA.read_text().rstrip("\n")
        + "\n"
    )


# --- the TLS listener ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsListener:
    """The edge's TLS port and the files of its certificate (paths as Envoy sees them)."""

    port: int
    certificate_chain: Path | PurePosixPath
    private_key: Path | PurePosixPath

    @classmethod
    def from_files(cls, port: int, files: tls.CertificateFiles) -> TlsListener:
        return cls(port, files.certificate, files.private_key)


COMPOSE_TLS = TlsListener(
    COMPOSE_TLS_PORT, COMPOSE_TLS_DIR / tls.SERVER_CERT, COMPOSE_TLS_DIR / tls.SERVER_KEY
)

# TLS 1.3 only; ALPN offers HTTP/2 first (gRPC needs it), then HTTP/1.1.
TLS_PARAMS: dict[str, str] = {"tls_minimum_protocol_version": "TLSv1_3"}
ALPN_PROTOCOLS: tuple[str, ...] = ("h2", "http/1.1")


def _tls_twin(plaintext: dict[str, Any], listener: TlsListener) -> dict[str, Any]:
    """The plaintext listener's twin on the TLS port. Its filter chains hold the very same
    filter list (one HTTP connection manager: the same routes and filters; the YAML dump
    writes it once, with an alias), behind a TLS transport socket."""
    transport_socket = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
            "DownstreamTlsContext",
            "common_tls_context": {
                "tls_params": TLS_PARAMS,
                "alpn_protocols": list(ALPN_PROTOCOLS),
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(listener.certificate_chain)},
                        "private_key": {"filename": str(listener.private_key)},
                    }
                ],
            },
        },
    }
    address = plaintext["address"]["socket_address"]
    return {
        **plaintext,
        "name": f"{plaintext['name']}_tls",
        "address": {"socket_address": {**address, "port_value": listener.port}},
        "filter_chains": [
            {
                "filters": chain["filters"],
                "transport_socket": transport_socket,
            }
            for chain in plaintext["filter_chains"]
        ],
    }


# --- tracing -------------------------------------------------------------------------------------

ZIPKIN_CLUSTER = "zipkin"
# Envoy's name in Zipkin: the tracer names its spans' service after the node's cluster.
TRACING_SERVICE_NAME = "envoy"


@dataclass(frozen=True)
class Tracing:
    """Envoy's Zipkin tracer: the collector's JSON v2 endpoint (``http://host:port/path``) and
    the share of the traces Envoy starts that are recorded (0..1)."""

    collector_url: str
    sample_ratio: float = 1.0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.collector_url)
        if parts.scheme != "http" or not parts.hostname or not parts.path:
            raise ValueError(
                f"the Zipkin collector for Envoy must be an http://host[:port]/path URL, "
                f"not {self.collector_url!r}"
            )
        if not (math.isfinite(self.sample_ratio) and 0.0 <= self.sample_ratio <= 1.0):
            raise ValueError(f"the trace sample ratio must be within 0..1, not {self.sample_ratio}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tracing | None:
        """From ``ORDERMESH_ZIPKIN_URL`` (empty: no tracing) and
        ``ORDERMESH_TRACE_SAMPLE_RATIO`` (default 1), as the ordermesh processes read them."""
        url = env.get("ORDERMESH_ZIPKIN_URL", "").strip()
        if not url:
            return None
        raw_ratio = env.get("ORDERMESH_TRACE_SAMPLE_RATIO", "").strip()
        try:
            ratio = float(raw_ratio) if raw_ratio else 1.0
        except ValueError:
            raise ValueError(
                f"ORDERMESH_TRACE_SAMPLE_RATIO={raw_ratio!r} is not a number"
            ) from None
        return cls(url, ratio)

    @property
    def collector(self) -> tuple[str, int]:
        parts = urllib.parse.urlsplit(self.collector_url)
        assert parts.hostname is not None
        return parts.hostname, parts.port or 80

    def connection_manager_tracing(self) -> dict[str, Any]:
        """The HTTP connection manager's ``tracing``: Envoy starts the trace of a request
        that carries none (``random_sampling`` of them recorded) or continues the caller's
        (B3, else W3C ``traceparent``), records a server span (no second span per upstream
        call: the server span times the request, and the services' own spans time what they
        do) and sends the upstream that span's context as B3 headers and ``traceparent``,
        which the ordermesh processes read. Spans go to Zipkin in the background: a
        collector that does not answer loses them and nothing else."""
        return {
            "random_sampling": {"value": round(self.sample_ratio * 100, 4)},
            "spawn_upstream_span": False,
            "provider": {
                "name": "envoy.tracers.zipkin",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                    "collector_service": {
                        "http_uri": {
                            "uri": self.collector_url,
                            "cluster": ZIPKIN_CLUSTER,
                            "timeout": "2s",
                        }
                    },
                    "collector_endpoint_version": "HTTP_JSON",
                    # W3C trace ids are 128 bits.
                    "trace_id_128bit": True,
                    # Envoy's server span is its own, not one shared with a client's span.
                    "shared_span_context": False,
                    "trace_context_option": "USE_B3_WITH_W3C_PROPAGATION",
                },
            },
        }


def render_text(
    *,
    listen_port: int,
    admin_port: int,
    clusters: Mapping[str, tuple[str, int]],
    descriptor: Path,
    ratelimit: tuple[str, int],
    gateway: tuple[str, int] | None = None,
    listen_address: str = "0.0.0.0",
    access_log: Path | str = COMPOSE_ACCESS_LOG,
    openapi: Path = OPENAPI_JSON,
    rest_fields: Path = REST_FIELDS_LUA,
    tls_listener: TlsListener | None = None,
    tracing: Tracing | None = None,
) -> str:
    if descriptor.is_file() and (bad := unsupported_response_bodies(descriptor)):
        raise ValueError(
            f"{descriptor}: Envoy cannot load response_body on {', '.join(bad)}; "
            f"use {ENVOY_DESCRIPTOR} (scripts/gen writes it)"
        )
    missing = sorted(set(SERVICES) - set(clusters))
    unknown = sorted(set(clusters) - set(SERVICES))
    if missing or unknown:
        raise ValueError(f"clusters: missing {missing}, unknown {unknown}")
    # jwt_authn fetches the JWKS from this very listener.
    self_host = "127.0.0.1" if listen_address in ("0.0.0.0", "::", "127.0.0.1") else listen_address
    all_clusters = [_cluster(name, *clusters[name]) for name in SERVICES]
    all_clusters.append(
        _cluster("edge_self", self_host, listen_port, http2=False, health_check=False)
    )
    all_clusters.append(_cluster("ratelimit", *ratelimit))
    if gateway is not None:
        all_clusters.append(_cluster("gateway", *gateway, http2=False, health_check=False))
    if tracing is not None:
        all_clusters.append(
            _cluster(ZIPKIN_CLUSTER, *tracing.collector, http2=False, health_check=False)
        )
    uri_host = f"[{self_host}]" if ":" in self_host else self_host
    values: dict[str, object] = {
        "admin_port": admin_port,
        "listen_address": listen_address,
        "listen_port": listen_port,
        "access_log_path": str(access_log),
        "access_log_format": ACCESS_LOG_FORMAT,
        "status_mappers": _status_mappers(),
        "grpc_web_mappers": _grpc_web_mappers(),
        "gateway_routes": _gateway_routes(gateway),
        "docs_html": DOCS_HTML.read_text(),
        "openapi_json": openapi.read_text(),
        "transcoder_off": TRANSCODER_OFF,
        "jwt_forbidden": JWT_FORBIDDEN_FILTER,
        "ratelimit_error": RATELIMIT_ERROR_FILTER,
        "ratelimit_error_message": RATELIMIT_ERROR_MESSAGE,
        "grpc_routes": _grpc_routes(),
        "rate_limits_open": _rate_limits(FAIL_OPEN_STAGE),
        "ratelimit_fail_open": _ratelimit_filter(FAIL_OPEN_STAGE),
        "ratelimit_fail_closed": _ratelimit_filter(FAIL_CLOSED_STAGE),
        # At least half of each service's hosts (with one host per service: that host).
        "min_healthy": {name: {"value": MIN_HEALTHY_PERCENT} for name in SERVICES},
        "jwks_uri": f"http://{uri_host}:{listen_port}/.well-known/jwks.json",
        "jwt_rules": _jwt_rules(),
        "lua_code": lua_code(rest_fields),
        "descriptor": str(descriptor),
        "services": list(SERVICES.values()),
        "clusters": all_clusters,
    }
    config = filled(TEMPLATE.read_text(), values)
    if tracing is not None:
        config = {"node": {"id": TRACING_SERVICE_NAME, "cluster": TRACING_SERVICE_NAME}, **config}
        [manager] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
        manager["typed_config"]["tracing"] = tracing.connection_manager_tracing()
    if tls_listener is not None:
        listeners = config["static_resources"]["listeners"]
        listeners.append(_tls_twin(listeners[0], tls_listener))
    return dump(config)


def render(
    *,
    listen_port: int,
    admin_port: int,
    clusters: Mapping[str, tuple[str, int]],
    descriptor: Path,
    out: Path,
    ratelimit: tuple[str, int],
    gateway: tuple[str, int] | None = None,
    listen_address: str = "0.0.0.0",
    access_log: Path | str = COMPOSE_ACCESS_LOG,
    tls_listener: TlsListener | None = None,
    tracing: Tracing | None = None,
) -> Path:
    """Write a concrete Envoy config to ``out`` and return ``out``.

    ``clusters`` maps each service short name (auth, order, inventory, payment, fulfillment,
    webhook) to the host and port of the gRPC server hosting it; a hostname becomes a
    STRICT_DNS cluster. ``ratelimit`` is the rate-limit service. ``gateway`` is the
    WebSocket bridge (``/ws/`` is routed only if given).
    ``descriptor`` is the descriptor set Envoy transcodes with: gen/envoy/ordermesh.binpb
    (see :func:`tools.descriptors.strip_response_bodies`). A path that does not exist here
    (a container path)
    is used as given: mount gen/envoy/ordermesh.binpb there. ``tls_listener`` adds the TLS
    twin of the plaintext listener (the same HTTP connection manager behind TLS 1.3).
    ``tracing`` makes Envoy trace every request (see :meth:`Tracing.connection_manager_tracing`).
    """
    text = render_text(
        listen_port=listen_port,
        admin_port=admin_port,
        clusters=clusters,
        descriptor=descriptor,
        ratelimit=ratelimit,
        gateway=gateway,
        listen_address=listen_address,
        access_log=access_log,
        tls_listener=tls_listener,
        tracing=tracing,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def local_clusters(host: str, port: int) -> dict[str, tuple[str, int]]:
    """Every service at one address: the local stack hosts them all in one process."""
    return {name: (host, port) for name in SERVICES}


GENERATED_HEADER = (
    "# Generated from envoy/envoy.yaml.tmpl by `python -m devstack.edge --compose`: edit the\n"
    "# template (and devstack/edge.py), not this file.\n"
)


def compose_text() -> str:
    return GENERATED_HEADER + render_text(
        listen_port=COMPOSE_LISTEN_PORT,
        admin_port=COMPOSE_ADMIN_PORT,
        clusters=COMPOSE_CLUSTERS,
        descriptor=COMPOSE_DESCRIPTOR,
        ratelimit=COMPOSE_RATELIMIT,
        gateway=COMPOSE_GATEWAY,
        tls_listener=COMPOSE_TLS,
        tracing=Tracing(COMPOSE_ZIPKIN_URL),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.edge", description=__doc__)
    parser.add_argument("--compose", action="store_true", help=f"write {COMPOSE_CONFIG}")
    parser.add_argument(
        "--check", action="store_true", help=f"fail if {COMPOSE_CONFIG} is not up to date"
    )
    args = parser.parse_args(argv)
    if args.check:
        if not COMPOSE_CONFIG.is_file() or COMPOSE_CONFIG.read_text() != compose_text():
            print(
                f"{COMPOSE_CONFIG} is stale: run python -m devstack.edge --compose", file=sys.stderr
            )
            return 1
        return 0
    if args.compose:
        COMPOSE_CONFIG.write_text(compose_text())
        print(COMPOSE_CONFIG)
        return 0
    parser.print_usage(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "SERVICES",
    "TlsListener",
    "Tracing",
    "local_clusters",
    "main",
    "render",
    "render_text",
]
