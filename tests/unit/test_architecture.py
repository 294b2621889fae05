"""Dependencies point inward: domain code imports no framework, driver or generated stub."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = (
    "grpc",
    "psycopg",
    "psycopg_pool",
    "confluent_kafka",
    "redis",
    "ordermesh",
    "jwt",
    "argon2",
    "fastavro",
    "google.protobuf",
    "websockets",
    "prometheus_client",
    # The metrics are recorded by the plumbing around the domain, never inside it.
    "services.platform.metrics",
)
PURE = sorted(
    [
        *ROOT.glob("services/*/domain/**/*.py"),
        *ROOT.glob("services/common/**/*.py"),
        ROOT / "ratelimit" / "domain.py",
    ]
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_modules_import_no_io_or_generated_code(path: Path) -> None:
    bad = {
        name
        for name in _imports(path)
        if any(name == f or name.startswith(f"{f}.") or name.endswith("_pb2") for f in FORBIDDEN)
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_there_are_domain_modules_to_check() -> None:
    assert len(PURE) >= 5


def _own(path: Path) -> set[str]:
    """The modules of this project ``path`` imports (services, workers, devstack, tools)."""
    return {
        name
        for name in _imports(path)
        if name.split(".")[0]
        in {"services", "workers", "devstack", "tools", "bench", "gateway", "ratelimit"}
    }


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_modules_import_nothing_from_platform_or_adapters(path: Path) -> None:
    bad = {
        name
        for name in _own(path)
        if name.startswith("services.platform") or ".adapters" in name or name.endswith(".api")
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


MESSAGING = sorted(ROOT.glob("services/platform/messaging/**/*.py"))
CONTEXT_PACKAGES = tuple(
    f"services.{path.name}"
    for path in sorted(ROOT.glob("services/*"))
    if (path / "bootstrap.py").is_file()
)


@pytest.mark.parametrize("path", MESSAGING, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_messaging_package_imports_no_service(path: Path) -> None:
    bad = {
        name
        for name in _own(path)
        if name.startswith(CONTEXT_PACKAGES) or name.split(".")[0] in {"workers", "devstack"}
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


LIBRARY = sorted(
    path
    for folder in ("services", "workers", "gateway", "ratelimit", "devstack", "tools")
    for path in ROOT.glob(f"{folder}/**/*.py")
    if path.name != "__main__.py"
)


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_library_module_imports_an_entrypoint(path: Path) -> None:
    bad = {name for name in _own(path) if name.endswith("__main__")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


GATEWAY = sorted(ROOT.glob("gateway/**/*.py"))
# What the bridge may use of the services: the shared plumbing and vocabulary, never a
# bounded context (it talks to the order service over gRPC, through the generated stubs).
GATEWAY_MAY_IMPORT = ("services.platform", "services.common", "gateway")


@pytest.mark.parametrize("path", GATEWAY, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_gateway_imports_no_bounded_context(path: Path) -> None:
    bad = {name for name in _own(path) if not name.startswith(GATEWAY_MAY_IMPORT)}
    bad |= {name for name in _own(path) if name.startswith("services.platform.messaging")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


RATELIMIT = sorted(ROOT.glob("ratelimit/**/*.py"))
# The rate-limit service stands alone: the platform's plumbing, its own modules and the
# generated stubs of Envoy's API; no bounded context, nothing of the messaging.
RATELIMIT_MAY_IMPORT = ("services.platform", "ratelimit")


@pytest.mark.parametrize("path", RATELIMIT, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_rate_limit_service_imports_no_bounded_context(path: Path) -> None:
    bad = {name for name in _own(path) if not name.startswith(RATELIMIT_MAY_IMPORT)}
    bad |= {name for name in _own(path) if name.startswith("services.platform.messaging")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_nothing_but_its_entrypoint_imports_the_gateway() -> None:
    for path in ROOT.glob("*/**/*.py"):
        top = path.relative_to(ROOT).parts[0]
        if top in ("gateway", "tests", "bench", ".venv", "gen", "node_modules", "build"):
            continue
        assert not {n for n in _own(path) if n.startswith("gateway")}, path


def test_tools_do_not_import_devstack() -> None:
    for path in ROOT.glob("tools/**/*.py"):
        assert not {n for n in _own(path) if n.startswith("devstack")}, path


def test_every_bounded_context_has_a_bootstrap() -> None:
    from services.platform.contexts import CONTEXT_NAMES

    assert {name.removeprefix("services.") for name in CONTEXT_PACKAGES} == set(CONTEXT_NAMES)


def test_the_checks_have_modules_to_check() -> None:
    assert len(GATEWAY) >= 8
    assert len(MESSAGING) >= 10
    assert len(LIBRARY) >= 50


def test_ordermesh_status_loads_no_service() -> None:
    """What `ordermesh status` imports (the CLI, the stack, the messaging inspection) loads
    no bounded context and no composition root."""
    probe = (
        "import json, sys\n"
        "import devstack.cli, devstack.stack\n"
        "import services.platform.messaging.inspect, services.platform.messaging.state\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(done.stdout))
    contexts = {name for name in loaded if name.startswith(CONTEXT_PACKAGES)}
    entrypoints = {name for name in loaded if name.endswith("__main__") and name != "__main__"}
    assert not contexts, sorted(contexts)
    assert not entrypoints, sorted(entrypoints)
