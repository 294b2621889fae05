"""compose.yaml cannot be run here (no Docker engine), so it is checked structurally: it
parses, every component it starts exists, health checks gate start-up order, the settings
it passes are accepted, and the files it mounts exist."""

import shlex
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import compose_secrets, edge
from services.platform.contexts import CONTEXT_NAMES
from services.platform.db import DATABASE_COMPONENTS, role_name
from services.platform.messaging.registry import WORKERS
from services.platform.settings import MIN_SECRET_LENGTH, Environment, Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_every_component_and_worker_has_a_container(compose: dict[str, Any]) -> None:
    hosted: set[str] = set()
    for service in compose["services"].values():
        command = _command(service)
        if "--components" in command:
            hosted.update(command[command.index("--components") + 1].split(","))
    assert set(CONTEXT_NAMES) | set(WORKERS) <= hosted
    for service in compose["services"].values():
        command = _command(service)
        if command[:3] == ["python", "-m", "services"] and "--components" in command:
            assert set(command[command.index("--components") + 1].split(",")) <= set(CONTEXT_NAMES)


def test_dependencies_exist_and_wait_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                check = services[dependency].get("healthcheck", {})
                assert check and not check.get("disable"), f"{dependency} has no health check"
            else:
                assert condition == "service_completed_successfully", (name, condition)
                assert services[dependency].get("restart") == "no"


def test_long_running_containers_have_health_checks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check["test"], name


def test_only_envoy_publishes_a_port_and_observability_only_on_loopback(
    compose: dict[str, Any],
) -> None:
    published = {name: s["ports"] for name, s in compose["services"].items() if s.get("ports")}
    assert published == {
        "envoy": ["8000:8000", "8443:8443"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["127.0.0.1:3000:3000"],
        "zipkin": ["127.0.0.1:9411:9411"],
    }


def test_prometheus_scrapes_every_ordermesh_container(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "observability/prometheus/prometheus.compose.yml").read_text())
    [job] = config["scrape_configs"]
    [discovery] = job["dns_sd_configs"]
    running_ordermesh = {
        name
        for name, service in compose["services"].items()
        if service.get("image") == "ordermesh:dev"
        and service.get("restart") != "no"
        and "python" in _command(service)
    }
    assert set(discovery["names"]) == running_ordermesh
    assert discovery["port"] == int(compose["x-app"]["environment"]["ORDERMESH_METRICS_PORT"])
    dashboards = ROOT / "observability/grafana/dashboards"
    assert (dashboards / "ordermesh.json").is_file()


def test_every_ordermesh_container_sends_its_spans_to_the_zipkin_service(
    compose: dict[str, Any],
) -> None:
    environment = compose["x-app"]["environment"]
    url = urllib.parse.urlsplit(environment["ORDERMESH_ZIPKIN_URL"])
    zipkin = compose["services"][url.hostname]
    assert zipkin["image"].startswith("openzipkin/zipkin")
    assert url.port == 9411 and url.path == "/api/v2/spans"
    # The settings parse as the processes will read them.
    settings = Settings.from_env(
        {key: str(value) for key, value in environment.items() if key.startswith("ORDERMESH_")}
        | {"ORDERMESH_ENV": "development"}
    )
    assert settings.zipkin_url == environment["ORDERMESH_ZIPKIN_URL"]
    assert settings.trace_sample_ratio == 1.0


def test_envoy_mounts_the_certificates_tls_init_makes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    directory = str(edge.COMPOSE_TLS_DIR)
    init, envoy = services["tls-init"], services["envoy"]
    assert _command(init)[:4] == ["python", "-m", "devstack.tls", directory]
    assert f"tls:{directory}" in init["volumes"]
    assert f"tls:{directory}:ro" in envoy["volumes"]
    assert envoy["depends_on"]["tls-init"] == {"condition": "service_completed_successfully"}
    assert "tls" in compose["volumes"]


@pytest.fixture(scope="module")
def generated_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("secrets")
    compose_secrets.generate(directory)
    return directory


def _mounted(service: dict[str, Any], secrets_dir: Path) -> dict[str, str]:
    """The service's environment, with /run/secrets/<name> pointing at generated files for
    the secrets the service mounts (others stay missing, as in a container)."""
    mounted = set(service.get("secrets", []))
    env = {}
    for key, raw in service.get("environment", {}).items():
        name = str(raw).removeprefix("/run/secrets/")
        env[key] = str(secrets_dir / name) if name in mounted else str(raw)
    return env


def _hosted(service: dict[str, Any]) -> list[str]:
    command = _command(service)
    if "--components" not in command:
        return []
    return command[command.index("--components") + 1].split(",")


def test_application_settings_are_accepted(
    compose: dict[str, Any], generated_secrets: Path
) -> None:
    for name, service in compose["services"].items():
        environment = _mounted(service, generated_secrets)
        if any(key.startswith("ORDERMESH_") for key in environment):
            settings = Settings.from_env(environment)
            assert settings.environment is Environment.PRODUCTION, name
            assert settings.grpc_port == 50051, name


def test_every_process_connects_as_the_roles_of_what_it_hosts(
    compose: dict[str, Any], generated_secrets: Path
) -> None:
    from workers.__main__ import database_components

    checked = 0
    for name, service in compose["services"].items():
        hosted = _hosted(service)
        if not hosted:
            continue
        settings = Settings.from_env(_mounted(service, generated_secrets))
        if _command(service)[:3] == ["python", "-m", "services"]:
            components = hosted
        else:
            components = database_components(hosted, settings)
        for component in components:
            url = settings.database_url_for(component)
            assert f"//{role_name(component)}:" in url, (name, component)
            checked += 1
        if {"auth", "webhook"} & set(hosted):
            assert len(settings.require_key_encryption_secret()) >= MIN_SECRET_LENGTH, name
    assert checked >= len(DATABASE_COMPONENTS)


def test_the_gateway_container_settings_are_accepted(
    compose: dict[str, Any], generated_secrets: Path
) -> None:
    from gateway.settings import GatewaySettings

    service = compose["services"]["gateway"]
    assert _command(service) == ["python", "-m", "gateway"]
    settings = GatewaySettings.from_env(_mounted(service, generated_secrets))
    assert (settings.host, settings.port) == ("0.0.0.0", 8081)
    assert settings.order_service_addr == "order:50051"
    assert settings.platform.redis_url == "redis://redis:6379/0"
    assert {"redis", "auth", "order"} <= set(service["depends_on"])


def test_the_rate_limit_container_settings_are_accepted(
    compose: dict[str, Any], generated_secrets: Path
) -> None:
    from ratelimit.settings import RateLimitSettings

    services = compose["services"]
    service = services["ratelimit"]
    assert _command(service) == ["python", "-m", "ratelimit"]
    settings = RateLimitSettings.from_env(_mounted(service, generated_secrets))
    assert (settings.host, settings.port) == ("0.0.0.0", 50061)
    assert settings.platform.redis_url == "redis://redis:6379/0"
    assert "50061" in service["healthcheck"]["test"][-1]
    addresses = {
        Settings.from_env(_mounted(s, generated_secrets)).ratelimit_service_addr
        for s in services.values()
        if any(key.startswith("ORDERMESH_") for key in _mounted(s, generated_secrets))
    }
    assert addresses == {"ratelimit:50061"}
    assert "ratelimit" in services["auth"]["depends_on"]
    assert "ratelimit" in services["envoy"]["depends_on"]
    assert edge.COMPOSE_RATELIMIT == ("ratelimit", 50061)


def test_the_compose_postgres_creates_every_component_role() -> None:
    script = (ROOT / "compose" / "postgres" / "create-roles.sh").read_text()
    [line] = [line for line in script.splitlines() if line.startswith("for component in ")]
    listed = line.removeprefix("for component in ").removesuffix("; do").split()
    assert tuple(listed) == DATABASE_COMPONENTS


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                mounted = ROOT / source
                assert mounted.is_file() or (mounted.is_dir() and any(mounted.iterdir())), source
