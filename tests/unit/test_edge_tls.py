"""The edge's TLS listener in the rendered Envoy config: the plaintext listener's twin on the
TLS port, sharing its one HTTP connection manager, behind TLS 1.3 with ALPN h2/http1.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from devstack import edge, tls
from tests.unit.edge_configs import rendered


def _listeners(**overrides: Any) -> dict[str, dict[str, Any]]:
    config = rendered(**overrides)
    return {listener["name"]: listener for listener in config["static_resources"]["listeners"]}


def _tls_context(listener: dict[str, Any]) -> dict[str, Any]:
    [chain] = listener["filter_chains"]
    socket = chain["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    context: dict[str, Any] = socket["typed_config"]
    assert context["@type"].endswith("DownstreamTlsContext")
    return context


def test_without_a_tls_listener_there_is_only_the_plaintext_one() -> None:
    assert list(_listeners()) == ["edge"]


def test_the_tls_listener_shares_the_plaintext_filters_and_requires_tls13() -> None:
    listener = edge.TlsListener(18443, Path("/certs/server.pem"), Path("/certs/server-key.pem"))
    listeners = _listeners(tls_listener=listener)
    assert list(listeners) == ["edge", "edge_tls"]
    plain, secure = listeners["edge"], listeners["edge_tls"]
    assert secure["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 18443}}
    assert "transport_socket" not in plain["filter_chains"][0]
    # One HTTP connection manager: the YAML holds it once and the TLS listener aliases it.
    assert secure["filter_chains"][0]["filters"] is plain["filter_chains"][0]["filters"]
    common = _tls_context(secure)["common_tls_context"]
    assert common["tls_params"] == {"tls_minimum_protocol_version": "TLSv1_3"}
    assert common["alpn_protocols"] == ["h2", "http/1.1"]
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"filename": "/certs/server.pem"},
            "private_key": {"filename": "/certs/server-key.pem"},
        }
    ]


def test_the_listener_takes_the_files_ensure_writes(tmp_path: Path) -> None:
    files = tls.ensure(tmp_path)
    listener = edge.TlsListener.from_files(18443, files)
    assert (listener.certificate_chain, listener.private_key) == (
        files.certificate,
        files.private_key,
    )


def test_the_compose_config_has_the_tls_listener_on_8443() -> None:
    config = yaml.safe_load(edge.COMPOSE_CONFIG.read_text())
    listeners = {item["name"]: item for item in config["static_resources"]["listeners"]}
    secure = listeners["edge_tls"]
    assert secure["address"]["socket_address"]["port_value"] == 8443
    [certificate] = _tls_context(secure)["common_tls_context"]["tls_certificates"]
    assert certificate == {
        "certificate_chain": {"filename": f"{edge.COMPOSE_TLS_DIR}/{tls.SERVER_CERT}"},
        "private_key": {"filename": f"{edge.COMPOSE_TLS_DIR}/{tls.SERVER_KEY}"},
    }
