"""Every event schema stays backward and forward compatible with its last released version.

The baseline is ``$ORDERMESH_SCHEMA_BASELINE`` if set (CI sets it to the last release tag or
the merge base with main), else the newest tag reachable from HEAD, else HEAD itself; so
locally an uncommitted schema edit is checked against what was committed. Schemas the
baseline does not have are new and have nothing to be compatible with.

Compatibility is decided by the Avro resolution rules (``incompatibilities``) and confirmed
by actually writing a sample with one version and reading it with the other.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from workers.codec import incompatibilities

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
_PRIMITIVE_SAMPLES: dict[str, Any] = {
    "null": None,
    "boolean": True,
    "int": 7,
    "long": 7_000_000_000,
    "float": 1.5,
    "double": 2.25,
    "bytes": b"\x00\x01",
    "string": "sample",
}


def _git(*args: str) -> str | None:
    result = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    )
    return result.stdout if result.returncode == 0 else None


def previous_versions(name: str) -> list[dict[str, Any]]:
    """Every earlier committed version of a schema (newest first), and the one at
    ``$ORDERMESH_SCHEMA_BASELINE`` (e.g. a release tag) if set. A schema must stay
    compatible with all of them: events of any version may still sit in a topic."""
    path = f"schemas/{name}.avsc"
    refs = (_git("log", "--format=%H", "--", path) or "").split()
    configured = os.environ.get("ORDERMESH_SCHEMA_BASELINE", "").strip()
    if configured:
        refs.append(configured)
    current = json.loads((SCHEMAS / f"{name}.avsc").read_text())
    versions: list[dict[str, Any]] = []
    for ref in refs:
        text = _git("show", f"{ref}:{path}")
        if text is None:
            continue
        version = json.loads(text)
        if version != current and version not in versions:
            versions.append(version)
    return versions


def sample(schema: Any, names: dict[str, Any] | None = None, namespace: str = "") -> Any:
    """A datum that exercises every field of ``schema`` (non-null union branches first)."""
    names = {} if names is None else names
    if isinstance(schema, str):
        return (
            _PRIMITIVE_SAMPLES[schema]
            if schema in _PRIMITIVE_SAMPLES
            else sample(
                names[schema if schema in names else f"{namespace}.{schema}"], names, namespace
            )
        )
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"] or schema
        return sample(branches[0], names, namespace)
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-micros":
        return datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    if kind in ("record", "enum", "fixed"):
        name = schema["name"]
        namespace = schema.get("namespace", namespace) if "." not in name else namespace
        full = name if "." in name else f"{namespace}.{name}"
        names[full] = schema
    if kind == "record":
        return {f["name"]: sample(f["type"], names, namespace) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][-1]
    if kind == "fixed":
        return b"\x00" * schema["size"]
    if kind == "array":
        return [sample(schema["items"], names, namespace)]
    if kind == "map":
        return {"key": sample(schema["values"], names, namespace)}
    return sample(kind, names, namespace)


def round_trip(writer: dict[str, Any], reader: dict[str, Any]) -> Any:
    buffer = io.BytesIO()
    parsed_writer = parse_schema(writer, named_schemas={})
    schemaless_writer(buffer, parsed_writer, sample(writer))
    buffer.seek(0)
    return schemaless_reader(buffer, parsed_writer, parse_schema(reader, named_schemas={}))


def record(*fields: dict[str, Any], name: str = "Thing") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "ordermesh.test", "fields": list(fields)}


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


ID = field("id", "string")
COLOUR = {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}
COLOUR_PLUS = {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}

# (old, new, backward compatible?, forward compatible?)
CHANGES: dict[str, tuple[dict[str, Any], dict[str, Any], bool, bool]] = {
    "add optional field": (
        record(ID),
        record(ID, field("note", ["null", "string"], default=None)),
        True,
        True,
    ),
    "add required field": (record(ID), record(ID, field("qty", "int")), False, True),
    "remove required field": (record(ID, field("qty", "int")), record(ID), True, False),
    "remove defaulted field": (record(ID, field("qty", "int", default=1)), record(ID), True, True),
    "widen int to long": (record(field("n", "int")), record(field("n", "long")), True, False),
    "string to bytes": (record(field("s", "string")), record(field("s", "bytes")), True, True),
    "long to string": (record(field("n", "long")), record(field("n", "string")), False, False),
    "make field nullable": (
        record(ID),
        record(field("id", ["null", "string"], default=None)),
        True,
        False,
    ),
    "add enum symbol": (
        record(field("c", COLOUR)),
        record(field("c", COLOUR_PLUS)),
        True,
        False,
    ),
    "add enum symbol, readers default": (
        record(field("c", {**COLOUR, "default": "RED"})),
        record(field("c", {**COLOUR_PLUS, "default": "RED"})),
        True,
        True,
    ),
    "rename record": (record(ID), record(ID, name="Other"), False, False),
    "nested record gains optional field": (
        record(field("line", record(ID, name="Line"))),
        record(
            field(
                "line",
                record(ID, field("sku", ["null", "string"], default=None), name="Line"),
            )
        ),
        True,
        True,
    ),
    "array items widen": (
        record(field("xs", {"type": "array", "items": "int"})),
        record(field("xs", {"type": "array", "items": "double"})),
        True,
        False,
    ),
    "union gains branch": (
        record(field("v", ["null", "int"], default=None)),
        record(field("v", ["null", "int", "string"], default=None)),
        True,
        False,
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_resolution_rules(change: str) -> None:
    old, new, backward, forward = CHANGES[change]
    assert (not incompatibilities(new, old)) is backward
    assert (not incompatibilities(old, new)) is forward


# The rules reject these because some values would not resolve (a null, a new branch);
# the generated sample happens to be one that does.
SAMPLE_RESOLVES_ANYWAY = {("make field nullable", "forward"), ("union gains branch", "forward")}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_resolution_rules_agree_with_fastavro(change: str) -> None:
    old, new, backward, forward = CHANGES[change]
    for direction, writer, reader, compatible in (
        ("backward", old, new, backward),
        ("forward", new, old, forward),
    ):
        if compatible or (change, direction) in SAMPLE_RESOLVES_ANYWAY:
            round_trip(writer, reader)
        else:
            with pytest.raises(SchemaResolutionError):
                round_trip(writer, reader)


def test_problems_name_the_field() -> None:
    old, new, _, _ = CHANGES["nested record gains optional field"]
    broken = copy.deepcopy(new)
    del broken["fields"][0]["type"]["fields"][1]["default"]
    assert incompatibilities(broken, old) == ["line.sku: added without a default"]


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.avsc")), ids=lambda p: p.stem)
def test_schema_is_compatible_with_every_earlier_version(path: Path) -> None:
    current = json.loads(path.read_text())
    earlier = previous_versions(path.stem)
    if not earlier:
        pytest.skip(f"{path.stem} has no earlier committed version")
    for previous in earlier:
        assert incompatibilities(current, previous) == [], "new readers cannot read old events"
        assert incompatibilities(previous, current) == [], "old readers cannot read new events"
        round_trip(previous, current)
        round_trip(current, previous)
