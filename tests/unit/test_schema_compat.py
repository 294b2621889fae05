"""Every version of every event schema stays compatible with every other, and released
versions never change.

The versions are the files ``schemas/<Event>/v<N>.avsc`` (``load_schema_versions``), not git
history, so these checks run alike in any clone, shallow or not. Each version must be
backward compatible with every earlier one (its readers read events written with them) and
forward compatible (their readers read events written with it): events of any version may
still sit in a topic or come back in a dead-letter replay, and a process not yet upgraded
may be handed events of the new one.
Compatibility is decided by the Avro resolution rules (``incompatibilities``) and confirmed
by writing a sample with one version and reading it with the other.

``schemas/released.json`` records each released version's wire fingerprint (CRC-64-AVRO, as
an unknown-fingerprint error prints it) and the SHA-256 of its file, so an edited, removed
or unrecorded version file fails here. Entries are only ever added.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from services.platform.messaging.codec import (
    NAMESPACE,
    SCHEMA_DIR,
    SchemaVersion,
    incompatibilities,
    load_schema_versions,
    schema_fingerprint,
)
from services.platform.messaging.registry import TOPIC_BY_EVENT
from tests.unit.test_codec import add_schema_version, schema_file

MANIFEST = "released.json"
VERSIONS = load_schema_versions(SCHEMA_DIR)
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


def compatibility_problems(versions: Sequence[SchemaVersion]) -> list[str]:
    """What stops some version of one event from reading, or being read by, another."""
    problems = []
    for index, later in enumerate(versions):
        for earlier in versions[:index]:
            old, new = f"v{earlier.number}", f"v{later.number}"
            problems += [
                f"{new} cannot read {old} events (backward): {problem}"
                for problem in incompatibilities(later.schema, earlier.schema)
            ]
            problems += [
                f"{old} cannot read {new} events (forward): {problem}"
                for problem in incompatibilities(earlier.schema, later.schema)
            ]
    return problems


def assert_every_version_compatible(versions: Sequence[SchemaVersion]) -> None:
    problems = compatibility_problems(versions)
    assert not problems, f"{versions[0].event_name}: " + "; ".join(problems)
    for index, later in enumerate(versions):
        for earlier in versions[:index]:
            round_trip(earlier.schema, later.schema)
            round_trip(later.schema, earlier.schema)


@pytest.mark.parametrize("name", sorted(VERSIONS))
def test_every_version_is_compatible_with_every_earlier_one(name: str) -> None:
    assert_every_version_compatible(VERSIONS[name])


def test_every_event_on_a_topic_has_its_versions_checked() -> None:
    assert set(VERSIONS) == set(TOPIC_BY_EVENT)


@pytest.mark.parametrize(
    ("change", "direction"),
    [("add required field", "backward"), ("remove required field", "forward")],
)
def test_an_incompatible_version_fails_the_check(
    tmp_path: Path, change: str, direction: str
) -> None:
    old, new, _, _ = CHANGES[change]
    for schema in (old, new):
        add_schema_version(tmp_path, {**schema, "namespace": NAMESPACE})
    versions = load_schema_versions(tmp_path)["Thing"]
    expected = rf"Thing: .*v[12] events \({direction}\): qty: added without a default"
    with pytest.raises(AssertionError, match=expected):
        assert_every_version_compatible(versions)


def test_each_version_is_checked_against_every_earlier_one_not_just_the_last(
    tmp_path: Path,
) -> None:
    # v2 gives qty a default, v3 drops it: each step alone is fine, yet v1's readers,
    # which have no default for qty, cannot read v3's events.
    for schema in (
        record(ID, field("qty", "int")),
        record(ID, field("qty", "int", default=1)),
        record(ID),
    ):
        add_schema_version(tmp_path, {**schema, "namespace": NAMESPACE})
    versions = load_schema_versions(tmp_path)["Thing"]
    assert compatibility_problems(versions[:2]) == []
    assert compatibility_problems(versions[1:]) == []
    with pytest.raises(AssertionError, match=r"v1 cannot read v3 events \(forward\): qty"):
        assert_every_version_compatible(versions)


def release_record(version: SchemaVersion) -> dict[str, str]:
    return {
        "fingerprint": schema_fingerprint(version.schema).hex(),
        "sha256": hashlib.sha256(version.path.read_bytes()).hexdigest(),
    }


def release_problems(directory: Path) -> list[str]:
    """How the version files in ``directory`` differ from its manifest of released versions."""
    released: dict[str, dict[str, dict[str, str]]] = json.loads((directory / MANIFEST).read_text())
    problems = []
    for name, versions in load_schema_versions(directory).items():
        for version in versions:
            key = f"v{version.number}"
            path = f"{name}/{key}.avsc"
            expected = release_record(version)
            recorded = released.get(name, {}).get(key)
            if recorded is None:
                entry = json.dumps({name: {key: expected}})
                problems.append(f"{path} is not recorded as released: add {entry} to {MANIFEST}")
            elif recorded != expected:
                problems.append(
                    f"{path} changed after its release: restore it and add the change as"
                    f" v{len(versions) + 1}.avsc"
                )
    for name, keys in released.items():
        problems += [
            f"{name}/{key}.avsc was released and is gone: its events could no longer be read"
            for key in keys
            if not (directory / name / f"{key}.avsc").is_file()
        ]
    return problems


def test_every_version_is_recorded_as_released_and_unchanged() -> None:
    assert release_problems(SCHEMA_DIR) == []


@pytest.fixture
def released_schemas(tmp_path: Path) -> Path:
    """Two events of one version each, recorded as released."""
    for name in ("OrderDelivered", "OrderShipped"):
        add_schema_version(tmp_path, schema_file(name))
    manifest = {
        name: {f"v{version.number}": release_record(version) for version in versions}
        for name, versions in load_schema_versions(tmp_path).items()
    }
    (tmp_path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    assert release_problems(tmp_path) == []
    return tmp_path


def _edit_released(directory: Path) -> None:
    path = directory / "OrderDelivered" / "v1.avsc"
    schema = json.loads(path.read_text())
    schema["doc"] += " Edited."
    path.write_text(json.dumps(schema, indent=2) + "\n")


def _add_unrecorded(directory: Path) -> None:
    add_schema_version(directory, schema_file("OrderDelivered"))


def _remove_event(directory: Path) -> None:
    shutil.rmtree(directory / "OrderDelivered")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_edit_released, r"OrderDelivered/v1\.avsc changed after its release: .* as v2\.avsc"),
        (_add_unrecorded, r"OrderDelivered/v2\.avsc is not recorded as released: add {.*}"),
        (_remove_event, r"OrderDelivered/v1\.avsc was released and is gone"),
    ],
    ids=["edited", "unrecorded", "removed"],
)
def test_a_released_version_that_changes_fails_the_check(
    released_schemas: Path, mutate: Callable[[Path], None], expected: str
) -> None:
    mutate(released_schemas)
    [problem] = release_problems(released_schemas)
    assert re.search(expected, problem), problem
