"""The Prometheus config `ordermesh up` generates, and the shape of the rules it loads.
What the rules do is tested by promtool (observability/prometheus/alerts_test.yml, run by
`ordermesh prometheus check`); a real server scrapes in
tests/integration/test_prometheus.py."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import prometheus, stack
from devstack.ports import Ports

PORTS = Ports(envoy_admin=16901, metrics_base=16100, prometheus=16090)


def _rules(path: Path) -> list[dict[str, Any]]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    out = stack.render_prometheus_config(PORTS, tmp_path / "prometheus.yml")
    loaded: dict[str, Any] = yaml.safe_load(out.read_text())
    return loaded


def test_one_job_per_process_labelled_with_it_and_envoy_from_its_admin_port(
    config: dict[str, Any],
) -> None:
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    expected = {name: address for name, address in stack.metrics_targets(PORTS)}
    assert set(jobs) == {*expected, "envoy"}
    for name, address in expected.items():
        assert jobs[name]["metrics_path"] == "/metrics"
        assert jobs[name]["static_configs"] == [{"targets": [address], "labels": {"process": name}}]
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy"]["static_configs"] == [
        {"targets": ["127.0.0.1:16901"], "labels": {"process": "envoy"}}
    ]
    assert config["global"]["scrape_interval"] == "5s"


def test_the_config_loads_the_rule_files_of_the_repository(config: dict[str, Any]) -> None:
    assert config["rule_files"] == [str(path) for path in prometheus.RULE_FILES]
    assert all(Path(path).is_file() for path in config["rule_files"])


def test_every_alert_tells_the_operator_what_to_run_and_is_tested() -> None:
    alerts = [rule for rule in _rules(prometheus.RULES_DIR / "alerts.yml") if "alert" in rule]
    assert len(alerts) >= 7
    tests = yaml.safe_load(prometheus.RULE_TESTS[0].read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
        assert "`ordermesh " in alert["annotations"]["description"], alert["alert"]
        assert alert["alert"] in firing, f"{alert['alert']} is never shown firing"


def test_every_recording_rule_is_tested() -> None:
    records = [rule["record"] for rule in _rules(prometheus.RULES_DIR / "recording.yml")]
    tests = yaml.safe_load(prometheus.RULE_TESTS[0].read_text())["tests"]
    tested = {case["expr"] for test in tests for case in test.get("promql_expr_test", [])}
    assert records and set(records) <= tested
