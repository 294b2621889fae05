"""Envoy's tracing in the rendered edge config: the Zipkin tracer on the one HTTP connection
manager (so on the TLS listener too), sending spans to a ``zipkin`` cluster, sampling the
traces it starts at the configured ratio and passing ``traceparent`` upstream. A real Envoy in
front of a real Zipkin: tests/integration/test_edge_tracing.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import edge
from tests.unit.edge_configs import rendered

SPANS_URL = "http://127.0.0.1:16411/api/v2/spans"


def _config(**overrides: Any) -> dict[str, Any]:
    tls_listener = edge.TlsListener(18443, Path("/c/server.pem"), Path("/c/key.pem"))
    return rendered(**{"tls_listener": tls_listener, **overrides})


def _managers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    managers = {}
    for listener in config["static_resources"]["listeners"]:
        [chain] = listener["filter_chains"]
        [manager] = chain["filters"]
        managers[listener["name"]] = manager["typed_config"]
    return managers


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}


def test_without_tracing_envoy_traces_nothing() -> None:
    config = _config()

    assert not [m for m in _managers(config).values() if "tracing" in m]
    assert edge.ZIPKIN_CLUSTER not in _clusters(config)
    assert "node" not in config


def test_every_listener_traces_with_zipkin_passing_traceparent_upstream() -> None:
    config = _config(tracing=edge.Tracing(SPANS_URL, 0.25))
    managers = _managers(config)

    assert set(managers) == {"edge", "edge_tls"}
    tracing = managers["edge"]["tracing"]
    assert managers["edge_tls"]["tracing"] == tracing
    assert tracing["random_sampling"] == {"value": 25.0}
    assert tracing["spawn_upstream_span"] is False
    assert tracing["provider"]["name"] == "envoy.tracers.zipkin"
    zipkin = tracing["provider"]["typed_config"]
    assert zipkin["@type"] == "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
    assert zipkin["trace_context_option"] == "USE_B3_WITH_W3C_PROPAGATION"
    assert zipkin["trace_id_128bit"] is True
    assert zipkin["collector_endpoint_version"] == "HTTP_JSON"
    assert zipkin["collector_service"]["http_uri"] == {
        "uri": SPANS_URL,
        "cluster": "zipkin",
        "timeout": "2s",
    }
    # The tracer names Envoy's spans after the node's cluster.
    assert config["node"]["cluster"] == "envoy"


def test_spans_go_to_a_plain_http_zipkin_cluster_that_is_not_health_checked() -> None:
    cluster = _clusters(_config(tracing=edge.Tracing(SPANS_URL)))["zipkin"]

    assert cluster["type"] == "STATIC"
    [endpoints] = cluster["load_assignment"]["endpoints"]
    [endpoint] = endpoints["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 16411,
    }
    options = cluster["typed_extension_protocol_options"]
    explicit = next(iter(options.values()))["explicit_http_config"]
    assert explicit == {"http_protocol_options": {}}
    # Zipkin down must not make anything else unhealthy: spans are best effort.
    assert "health_checks" not in cluster


@pytest.mark.parametrize(
    ("ratio", "percent"), [("", 100.0), ("1", 100.0), ("0.1", 10.0), ("0", 0.0)]
)
def test_the_sample_ratio_becomes_envoys_percentage(ratio: str, percent: float) -> None:
    tracing = edge.Tracing.from_env(
        {"ORDERMESH_ZIPKIN_URL": SPANS_URL, "ORDERMESH_TRACE_SAMPLE_RATIO": ratio}
    )

    assert tracing is not None
    assert tracing.connection_manager_tracing()["random_sampling"] == {"value": percent}


def test_no_zipkin_url_means_no_tracing() -> None:
    assert edge.Tracing.from_env({"ORDERMESH_ZIPKIN_URL": ""}) is None
    assert edge.Tracing.from_env({}) is None


@pytest.mark.parametrize(
    ("url", "ratio"),
    [
        ("https://127.0.0.1:9411/api/v2/spans", "1"),
        ("127.0.0.1:9411", "1"),
        (SPANS_URL, "1.5"),
        (SPANS_URL, "-0.1"),
        (SPANS_URL, "nan"),
        (SPANS_URL, "half"),
    ],
)
def test_what_envoy_cannot_use_is_refused(url: str, ratio: str) -> None:
    with pytest.raises(ValueError):
        edge.Tracing.from_env({"ORDERMESH_ZIPKIN_URL": url, "ORDERMESH_TRACE_SAMPLE_RATIO": ratio})


def test_the_compose_edge_sends_its_spans_to_the_zipkin_service() -> None:
    config = yaml.safe_load(edge.COMPOSE_CONFIG.read_text())

    tracing = _managers(config)["edge"]["tracing"]
    uri = tracing["provider"]["typed_config"]["collector_service"]["http_uri"]["uri"]
    assert uri == "http://zipkin:9411/api/v2/spans"
    cluster = _clusters(config)["zipkin"]
    assert cluster["type"] == "STRICT_DNS"
    [endpoints] = cluster["load_assignment"]["endpoints"]
    [endpoint] = endpoints["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == ("zipkin", 9411)
