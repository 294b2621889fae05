"""Dependencies point inward: domain code imports no framework, driver or generated stub."""

import ast
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
)
PURE = sorted([*ROOT.glob("services/*/domain/**/*.py"), *ROOT.glob("services/common/**/*.py")])


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
