"""Avro single-object encoding of ordermesh events, and their CloudEvents envelope.

Wire format of a message value (Avro spec, "Single object encoding")::

    C3 01 | CRC-64-AVRO fingerprint of the writer schema's canonical form (8 bytes, LE) | body

No schema registry is involved: every released version of an event schema is kept in the
repository, ``schemas/<Event>/v1.avsc``, ``v2.avsc`` … (see :func:`load_schema_versions`).
A codec built from that directory writes each event with its newest version and resolves
the fingerprint of any version against the writer schemas it knows, decoding into that
newest version by the Avro schema-resolution rules. Further writer versions can be added
with :meth:`EventCodec.register_writer_schema`.

The envelope travels in Kafka headers (CloudEvents Kafka protocol binding, binary mode).
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from services.platform.messaging.quick_validation import QuickValidator, quick_validator
from services.platform.paths import SCHEMAS_DIR

NAMESPACE = "ordermesh.events.v1"
SCHEMA_DIR = SCHEMAS_DIR
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONTENT_TYPE = "application/avro"
CE_SPEC_VERSION = "1.0"
CE_ID = "ce_id"
CE_TYPE = "ce_type"
CE_SOURCE = "ce_source"
CE_SPECVERSION = "ce_specversion"
CE_TIME = "ce_time"
CE_SUBJECT = "ce_subject"
CONTENT_TYPE_HEADER = "content-type"

_HEADER_SIZE = len(SINGLE_OBJECT_MAGIC) + 8

AvroSchema: TypeAlias = str | list[Any] | dict[str, Any]
KafkaHeaders: TypeAlias = (
    Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]
)


class CodecError(Exception):
    """Base class of every error raised by this module."""


class SchemaError(CodecError):
    """A schema file or registered schema is unusable."""


class IncompatibleSchemaError(SchemaError):
    """A writer schema cannot be resolved into the reader's current version."""

    def __init__(self, event_name: str, problems: Sequence[str]) -> None:
        self.event_name = event_name
        self.problems = tuple(problems)
        super().__init__(f"{event_name}: " + "; ".join(self.problems))


class UnknownEventTypeError(CodecError):
    """The codec has no schema for the requested event name."""


class EventValidationError(CodecError):
    """A record does not match its event schema; ``fields`` names the offending fields."""

    def __init__(self, event_name: str, problems: Sequence[tuple[str, str]]) -> None:
        self.event_name = event_name
        self.fields = tuple(field for field, _ in problems)
        self.problems = tuple(problems)
        details = "; ".join(f"field {field!r}: {problem}" for field, problem in problems)
        super().__init__(f"invalid {event_name} record: {details}")


class DecodeError(CodecError):
    """A message cannot be turned into an event: it is a poison message for this reader."""


class NotSingleObjectError(DecodeError):
    """The bytes do not start with the Avro single-object marker."""


class UnknownSchemaError(DecodeError):
    """The writer fingerprint belongs to no schema this codec knows."""

    def __init__(self, fingerprint: bytes) -> None:
        self.fingerprint = fingerprint
        super().__init__(f"unknown writer schema fingerprint {fingerprint.hex()}")


class MalformedPayloadError(DecodeError):
    """The body does not decode with the writer schema its header names."""


class EnvelopeError(DecodeError):
    """The CloudEvents headers are missing, malformed or contradict the payload."""


def canonical_form(schema: AvroSchema) -> str:
    """The schema's Parsing Canonical Form (Avro spec)."""
    return str(to_parsing_canonical_form(schema))


def crc64_avro(data: bytes) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of ``data`` as the 8 little-endian bytes on the wire."""
    return bytes.fromhex(_fastavro_fingerprint(data.decode(), "CRC-64-AVRO"))


def schema_fingerprint(schema: AvroSchema) -> bytes:
    return crc64_avro(canonical_form(schema).encode())


def event_type(event_name: str) -> str:
    """The CloudEvents ``type`` of an event, e.g. ``ordermesh.events.v1.OrderCreated``."""
    return f"{NAMESPACE}.{event_name}"


def event_name_of(ce_type: str) -> str:
    return ce_type.rpartition(".")[2]


@dataclass(frozen=True, slots=True)
class DecodedEvent:
    name: str
    record: dict[str, Any]
    writer_fingerprint: bytes


@dataclass(frozen=True, slots=True)
class EventEnvelope:
    """One event as a consumer sees it: CloudEvents attributes plus payload."""

    event_id: uuid.UUID
    type: str
    source: str
    subject: str | None
    time: datetime
    payload: bytes
    record: Mapping[str, Any]

    @property
    def name(self) -> str:
        return event_name_of(self.type)


def cloudevent_headers(
    *,
    event_id: uuid.UUID,
    event_name: str,
    source: str,
    time: datetime,
    subject: str | None = None,
) -> dict[str, str]:
    """CloudEvents binary-mode attributes as header name → value."""
    if time.tzinfo is None:
        raise ValueError("event time must be timezone-aware")
    headers = {
        CE_ID: str(event_id),
        CE_TYPE: event_type(event_name),
        CE_SOURCE: source,
        CE_SPECVERSION: CE_SPEC_VERSION,
        CE_TIME: time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        CONTENT_TYPE_HEADER: CONTENT_TYPE,
    }
    if subject is not None:
        headers[CE_SUBJECT] = subject
    return headers


def kafka_headers(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers.items()]


def header_map(headers: KafkaHeaders | None) -> dict[str, str]:
    """Kafka headers as a dict (last value wins); undecodable values raise ``EnvelopeError``."""
    if not headers:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    try:
        try:
            # What Kafka hands a consumer, every value bytes, without a test per value; a str
            # or None value has no decode() and sends the headers the general way.
            return {name: value.decode() for name, value in pairs}  # type: ignore[union-attr]
        except AttributeError:
            return {
                name: value if isinstance(value, str) else value.decode()
                for name, value in pairs
                if value is not None
            }
    except UnicodeDecodeError:
        raise EnvelopeError("a header value is not UTF-8") from None


@dataclass(frozen=True, slots=True)
class _Reader:
    name: str
    raw: AvroSchema
    parsed: Any
    fingerprint: bytes
    header: bytes
    quick_check: QuickValidator


@dataclass(frozen=True, slots=True)
class _Writer:
    name: str
    fingerprint: bytes
    parsed: Any
    reader: Any | None
    ce_type: str


class EventCodec:
    """Encodes events with their current schema; decodes any writer version it knows."""

    def __init__(self, schemas: Iterable[AvroSchema]) -> None:
        self._readers: dict[str, _Reader] = {}
        self._writers: dict[bytes, _Writer] = {}
        for schema in schemas:
            name = _record_name(schema)
            if name in self._readers:
                raise SchemaError(f"two schemas define event {name}")
            parsed = _parse(schema)
            fingerprint = schema_fingerprint(schema)
            self._readers[name] = _Reader(
                name,
                schema,
                parsed,
                fingerprint,
                SINGLE_OBJECT_MAGIC + fingerprint,
                quick_validator(parsed),
            )
            self._writers[fingerprint] = _Writer(name, fingerprint, parsed, None, event_type(name))

    @classmethod
    def from_directory(cls, directory: str | Path = SCHEMA_DIR) -> EventCodec:
        """Every released version of every event in ``directory`` (:func:`load_schema_versions`).

        Encodes with each event's newest version and decodes any of its versions into it;
        an older version the newest cannot read is refused here, before any message is.
        """
        versions = load_schema_versions(directory)
        codec = cls(history[-1].schema for history in versions.values())
        for history in versions.values():
            newest = history[-1]
            for older in history[:-1]:
                try:
                    codec.register_writer_schema(older.schema)
                except IncompatibleSchemaError as exc:
                    raise IncompatibleSchemaError(
                        exc.event_name,
                        [
                            f"written with v{older.number}, read as v{newest.number}: {problem}"
                            for problem in exc.problems
                        ],
                    ) from None
        return codec

    def register_writer_schema(self, schema: AvroSchema) -> bytes:
        """Accept messages written with an older (or newer) version of a known event.

        The schema must resolve into the current version under the Avro rules; returns
        its fingerprint.
        """
        name = _record_name(schema)
        reader = self._readers.get(name)
        if reader is None:
            raise UnknownEventTypeError(f"no current schema for event {name}")
        problems = incompatibilities(reader.raw, schema)
        if problems:
            raise IncompatibleSchemaError(name, problems)
        fingerprint = schema_fingerprint(schema)
        if fingerprint != reader.fingerprint:
            self._writers[fingerprint] = _Writer(
                name, fingerprint, _parse(schema), reader.parsed, event_type(name)
            )
        return fingerprint

    @property
    def event_names(self) -> frozenset[str]:
        return frozenset(self._readers)

    def schema(self, event_name: str) -> AvroSchema:
        return self._reader(event_name).raw

    def fingerprint(self, event_name: str) -> bytes:
        return self._reader(event_name).fingerprint

    def encode(self, event_name: str, record: Mapping[str, Any]) -> bytes:
        reader = self._reader(event_name)
        datum = record if isinstance(record, dict) else dict(record)
        # The quick check accepts only what fastavro's validate accepts; what it refuses
        # (or does not model) goes to validate itself, which names the offending fields.
        if not reader.quick_check(datum):
            _refuse_invalid(event_name, datum, reader.parsed)
        buffer = io.BytesIO()
        buffer.write(reader.header)
        try:
            schemaless_writer(buffer, reader.parsed, datum, strict_allow_default=True)
        except (ValueError, TypeError, OverflowError) as exc:
            raise EventValidationError(event_name, [_writer_problem(str(exc))]) from None
        return buffer.getvalue()

    def decode(self, data: bytes) -> DecodedEvent:
        writer, record = self._decode(data)
        return DecodedEvent(writer.name, record, writer.fingerprint)

    def _decode(self, data: bytes) -> tuple[_Writer, dict[str, Any]]:
        """The writer schema and record of a message (``decode`` without its wrapper)."""
        if len(data) < _HEADER_SIZE or data[:2] != SINGLE_OBJECT_MAGIC:
            raise NotSingleObjectError("not an Avro single-object encoded message")
        fingerprint = bytes(data[2:_HEADER_SIZE])
        writer = self._writers.get(fingerprint)
        if writer is None:
            raise UnknownSchemaError(fingerprint)
        buffer = io.BytesIO(data)
        buffer.seek(_HEADER_SIZE)
        try:
            record = schemaless_reader(buffer, writer.parsed, writer.reader)
        except Exception as exc:
            raise MalformedPayloadError(f"{writer.name} body does not decode: {exc!r}") from exc
        if buffer.tell() != len(data):
            raise MalformedPayloadError(
                f"{writer.name} body has {len(data) - buffer.tell()} trailing bytes"
            )
        if not isinstance(record, dict):
            raise MalformedPayloadError(f"{writer.name} body is not a record")
        return writer, record

    def open_envelope(self, headers: KafkaHeaders | None, value: bytes | None) -> EventEnvelope:
        """Decode a Kafka message (binary-mode CloudEvent) into an envelope."""
        return self.envelope_from(header_map(headers), value)

    def envelope_from(self, attributes: Mapping[str, str], value: bytes | None) -> EventEnvelope:
        """Like :meth:`open_envelope`, with the headers already decoded by ``header_map``."""
        if value is None:
            raise EnvelopeError("message has no value")
        writer, record = self._decode(value)
        content_type = attributes.get(CONTENT_TYPE_HEADER, CONTENT_TYPE)
        if content_type != CONTENT_TYPE:
            raise EnvelopeError(f"content-type {content_type!r} is not {CONTENT_TYPE}")
        try:
            event_id = uuid.UUID(attributes[CE_ID])
            source = attributes[CE_SOURCE]
            time = datetime.fromisoformat(attributes[CE_TIME])
        except KeyError as exc:
            raise EnvelopeError(f"missing header {exc.args[0]}") from None
        except ValueError as exc:
            raise EnvelopeError(f"malformed CloudEvents header: {exc}") from None
        declared = attributes.get(CE_TYPE)
        if (
            declared is not None
            and declared != writer.ce_type
            and event_name_of(declared) != writer.name
        ):
            raise EnvelopeError(f"ce_type {declared} but payload is {writer.name}")
        return EventEnvelope(
            event_id=event_id,
            type=writer.ce_type,
            source=source,
            subject=attributes.get(CE_SUBJECT),
            time=time,
            payload=value,
            record=record,
        )

    def _reader(self, event_name: str) -> _Reader:
        try:
            return self._readers[event_name]
        except KeyError:
            raise UnknownEventTypeError(f"no schema for event {event_name!r}") from None


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One released version of an event schema, ``<directory>/<event_name>/v<number>.avsc``."""

    event_name: str
    number: int
    path: Path
    schema: dict[str, Any]


_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")


def load_schema_versions(
    directory: str | Path = SCHEMA_DIR,
) -> dict[str, tuple[SchemaVersion, ...]]:
    """Every released version of every event schema in ``directory``, oldest first.

    One folder per event, named after its record, holds ``v1.avsc``, ``v2.avsc`` … numbered
    from 1 without gaps; the highest number is the version producers write. A released file
    is never edited: a change is a new version. Other files (the manifest of released
    versions) are not schemas.
    """
    root = Path(directory)
    if not root.is_dir():
        raise SchemaError(f"{root} is not a directory")
    stray = sorted(root.glob("*.avsc"))
    if stray:
        raise SchemaError(f"{stray[0]}: each version of a schema is <event>/v<N>.avsc")
    versions = {
        folder.name: _event_versions(folder)
        for folder in sorted(path for path in root.iterdir() if path.is_dir())
    }
    if not versions:
        raise SchemaError(f"no event schemas in {root}")
    return versions


def _event_versions(folder: Path) -> tuple[SchemaVersion, ...]:
    numbered: dict[int, Path] = {}
    for path in folder.glob("*.avsc"):
        match = _VERSION_FILE.fullmatch(path.name)
        if match is None:
            raise SchemaError(f"{path}: a version file is named v<N>.avsc (v1, v2, …)")
        numbered[int(match.group(1))] = path
    if not numbered:
        raise SchemaError(f"{folder}: no v<N>.avsc in it")
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        found = ", ".join(f"v{number}" for number in sorted(numbered))
        raise SchemaError(f"{folder}: versions must run v1, v2, … without gaps; found {found}")
    versions = []
    for number, path in sorted(numbered.items()):
        schema = _load(path)
        if not isinstance(schema, dict):
            raise SchemaError(f"{path}: an event schema must be a record")
        if _record_name(schema) != folder.name:
            raise SchemaError(f"{path} defines {_record_name(schema)}, not {folder.name}")
        versions.append(SchemaVersion(folder.name, number, path, schema))
    return tuple(versions)


def _load(path: Path) -> AvroSchema:
    try:
        loaded: AvroSchema = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SchemaError(f"{path}: {exc}") from exc
    return loaded


def _parse(schema: AvroSchema) -> Any:
    try:
        return parse_schema(schema, named_schemas={})
    except Exception as exc:
        raise SchemaError(f"unparseable schema: {exc}") from exc


def _record_name(schema: AvroSchema) -> str:
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError("an event schema must be a record")
    name = str(schema["name"])
    full = name if "." in name else f"{schema.get('namespace', '')}.{name}"
    namespace, _, short = full.rpartition(".")
    if namespace != NAMESPACE:
        raise SchemaError(f"{full}: event schemas live in namespace {NAMESPACE}")
    return short


def _refuse_invalid(event_name: str, datum: dict[str, Any], parsed: Any) -> None:
    """Raise ``EventValidationError`` if fastavro's ``validate`` refuses ``datum``."""
    try:
        validate(datum, parsed, raise_errors=True)
    except ValidationError as exc:
        problems = [
            (_short_field(e.field), f"got {e.datum!r}, expected {e.schema}") for e in exc.errors
        ]
        raise EventValidationError(event_name, problems) from None


def _short_field(path: str | None) -> str:
    return (path or "").removeprefix(NAMESPACE + ".")


def _writer_problem(message: str) -> tuple[str, str]:
    extra = _EXTRA_FIELDS.search(message) or _MISSING_FIELD.search(message)
    return (extra.group(1) if extra else "", message)


_EXTRA_FIELDS = re.compile(r"more fields than the schema specifies: (.+)$")
_MISSING_FIELD = re.compile(r"^Field (\S+) is specified in the schema but missing")
_PROMOTIONS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"int", "long", "float", "double"}),
    "long": frozenset({"long", "float", "double"}),
    "float": frozenset({"float", "double"}),
    "string": frozenset({"string", "bytes"}),
    "bytes": frozenset({"bytes", "string"}),
}
_NAMED = frozenset({"record", "enum", "fixed", "error"})


def incompatibilities(reader: AvroSchema, writer: AvroSchema) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty: it can).

    Implements the Avro specification's schema-resolution rules, including numeric and
    string/bytes promotions, field defaults, enum defaults and unions on either side.
    Backward compatibility of a change is ``incompatibilities(new, old)``; forward
    compatibility is ``incompatibilities(old, new)``.
    """
    checker = _Resolution(_named_types(reader), _named_types(writer))
    checker.check(reader, writer, "")
    return checker.problems


class _Resolution:
    def __init__(self, reader_names: dict[str, Any], writer_names: dict[str, Any]) -> None:
        self.reader_names = reader_names
        self.writer_names = writer_names
        self.problems: list[str] = []
        self._seen: set[tuple[str, str]] = set()

    def check(self, reader: Any, writer: Any, where: str) -> None:
        reader = _deref(reader, self.reader_names)
        writer = _deref(writer, self.writer_names)
        if isinstance(writer, list):
            for branch in writer:
                self.check(reader, branch, where)
            return
        if isinstance(reader, list):
            if not any(self._matches(branch, writer) for branch in reader):
                self.problems.append(f"{where or '<root>'}: no union branch reads {_kind(writer)}")
            return
        self._check_same_kind(reader, writer, where)

    def _matches(self, reader: Any, writer: Any) -> bool:
        nested = _Resolution(self.reader_names, self.writer_names)
        nested.check(reader, writer, "")
        return not nested.problems

    def _check_same_kind(self, reader: Any, writer: Any, where: str) -> None:
        reader_kind, writer_kind = _kind(reader), _kind(writer)
        label = where or "<root>"
        if writer_kind in _PROMOTIONS and reader_kind in _PROMOTIONS[writer_kind]:
            return
        if reader_kind != writer_kind:
            self.problems.append(f"{label}: {writer_kind} cannot be read as {reader_kind}")
            return
        if reader_kind in _NAMED and _short(reader["name"]) != _short(writer["name"]):
            aliases = {_short(a) for a in reader.get("aliases", ())}
            if _short(writer["name"]) not in aliases:
                self.problems.append(f"{label}: {writer['name']} is not {reader['name']}")
                return
        if reader_kind in ("record", "error"):
            self._check_record(reader, writer, where)
        elif reader_kind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                self.problems.append(f"{label}: enum symbols {missing} unknown to the reader")
        elif reader_kind == "fixed" and reader["size"] != writer["size"]:
            self.problems.append(f"{label}: fixed size {writer['size']} is not {reader['size']}")
        elif reader_kind == "array":
            self.check(reader["items"], writer["items"], f"{where}[]")
        elif reader_kind == "map":
            self.check(reader["values"], writer["values"], f"{where}{{}}")

    def _check_record(self, reader: dict[str, Any], writer: dict[str, Any], where: str) -> None:
        key = (json.dumps(reader, sort_keys=True), json.dumps(writer, sort_keys=True))
        if key in self._seen:
            return
        self._seen.add(key)
        written = {field["name"]: field for field in writer["fields"]}
        for field in reader["fields"]:
            path = f"{where}.{field['name']}" if where else field["name"]
            names = [field["name"], *field.get("aliases", ())]
            source = next((written[n] for n in names if n in written), None)
            if source is not None:
                self.check(field["type"], source["type"], path)
            elif "default" not in field:
                self.problems.append(f"{path}: added without a default")


def _kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema["type"]
    return kind if isinstance(kind, str) else _kind(kind)


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _deref(schema: Any, names: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema in names:
        return names[schema]
    if isinstance(schema, dict) and not isinstance(schema["type"], str):
        return _deref(schema["type"], names)
    if isinstance(schema, dict) and schema["type"] not in _NAMED and schema["type"] in names:
        return names[schema["type"]]
    return schema


def _named_types(schema: Any, namespace: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(node: Any, space: str) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch, space)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if kind in _NAMED:
            name = node["name"]
            space = node.get("namespace", space) if "." not in name else name.rpartition(".")[0]
            full = name if "." in name else f"{space}.{name}" if space else name
            found[full] = node
            found[_short(full)] = node
        if isinstance(kind, dict | list):
            walk(kind, space)
        for field in node.get("fields", ()):
            walk(field["type"], space)
        for key in ("items", "values"):
            if key in node:
                walk(node[key], space)

    walk(schema, namespace)
    return found
