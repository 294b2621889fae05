"""A fast yes/no check of a record against a parsed Avro schema, built once per schema.

fastavro's ``validate`` walks the schema dictionaries on every call and, inside a union,
raises and formats an exception for every branch that does not match (the ``null`` of
every optional field that has a value). On an event that is most of the cost of encoding
it. :func:`quick_validator` compiles the schema into nested closures once instead.

It may only err on the strict side: when it answers True, fastavro's
``validate(datum, schema)`` accepts the datum too; when it answers False the caller asks
``validate`` itself, which also says what is wrong. Whatever it does not model (logical
types other than timestamps, tuple notation in unions, records with a ``-type`` hint,
mappings and sequences that are not dicts, lists or tuples) therefore answers False.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeAlias

QuickValidator: TypeAlias = Callable[[Any], bool]

_INT_RANGE = (-(1 << 31), (1 << 31) - 1)
_LONG_RANGE = _LONG_MIN, _LONG_MAX = (-(1 << 63), (1 << 63) - 1)
_TIMESTAMPS = frozenset({"timestamp-millis", "timestamp-micros"})


def quick_validator(parsed_schema: Any) -> QuickValidator:
    """A check equivalent to, or stricter than, fastavro's ``validate`` for this schema.

    ``parsed_schema`` comes from ``fastavro.parse_schema``; named types referred to by
    name are looked up in the ``__named_schemas`` it records.
    """
    named = parsed_schema.get("__named_schemas", {}) if isinstance(parsed_schema, dict) else {}
    return _Compiler(named).compile(parsed_schema)


def _never(datum: Any) -> bool:
    return False


def _is_null(datum: Any) -> bool:
    return datum is None


def _is_boolean(datum: Any) -> bool:
    return isinstance(datum, bool)


def _is_string(datum: Any) -> bool:
    return isinstance(datum, str)


def _is_bytes(datum: Any) -> bool:
    return isinstance(datum, bytes | bytearray)


def _is_number(datum: Any) -> bool:
    return isinstance(datum, int | float) and not isinstance(datum, bool)


def _integer_in(low: int, high: int) -> QuickValidator:
    def check(datum: Any) -> bool:
        return isinstance(datum, int) and not isinstance(datum, bool) and low <= datum <= high

    return check


_is_int = _integer_in(*_INT_RANGE)
_is_long = _integer_in(*_LONG_RANGE)

_PRIMITIVES: Mapping[str, QuickValidator] = {
    "null": _is_null,
    "boolean": _is_boolean,
    "string": _is_string,
    "bytes": _is_bytes,
    "int": _is_int,
    "long": _is_long,
    "float": _is_number,
    "double": _is_number,
}


def _is_timestamp(datum: Any) -> bool:
    # fastavro turns an aware datetime into an integer that always fits a long; a naive
    # one goes through mktime, which can fail, so that case is left to ``validate``.
    if isinstance(datum, datetime):
        return datum.tzinfo is UTC or datum.utcoffset() is not None
    return type(datum) is int and _LONG_MIN <= datum <= _LONG_MAX


class _Compiler:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self._named = named
        self._compiled: dict[str, QuickValidator] = {}

    def compile(self, schema: Any) -> QuickValidator:
        if isinstance(schema, str):
            return _PRIMITIVES.get(schema) or self._reference(schema)
        if isinstance(schema, list):
            return _union([self.compile(branch) for branch in schema])
        if not isinstance(schema, dict):
            return _never
        logical = schema.get("logicalType")
        kind = schema.get("type")
        if logical is not None:
            return _is_timestamp if _is_timestamp_schema(schema) else _never
        if kind in ("record", "error"):
            return self._record(schema)
        if kind == "array":
            return _array(self.compile(schema["items"]))
        if kind == "map":
            return _map(self.compile(schema["values"]))
        if kind == "enum":
            return _enum(tuple(schema["symbols"]))
        if kind == "fixed":
            return _fixed(int(schema["size"]))
        return self.compile(kind) if isinstance(kind, str | list | dict) else _never

    def _reference(self, name: str) -> QuickValidator:
        if name not in self._named:
            return _never

        def check(datum: Any) -> bool:
            valid = self._compiled.get(name)
            if valid is None:
                valid = self._compiled[name] = self.compile(self._named[name])
            return valid(datum)

        return check

    def _record(self, schema: dict[str, Any]) -> QuickValidator:
        # Most fields are strings, integers and timestamps without a default: checking
        # those inline rather than through a function each is most of the speed.
        strings: list[str] = []
        integers: list[tuple[str, int, int]] = []
        timestamps: list[str] = []
        others: list[tuple[str, Any, QuickValidator]] = []
        for field in schema["fields"]:
            name, kind = field["name"], field["type"]
            if "default" in field:
                others.append((name, field["default"], self.compile(kind)))
            elif kind == "string":
                strings.append(name)
            elif kind in ("int", "long"):
                integers.append((name, *(_INT_RANGE if kind == "int" else _LONG_RANGE)))
            elif _is_timestamp_schema(kind):
                timestamps.append(name)
            else:
                others.append((name, None, self.compile(kind)))
        plain_strings, plain_integers = tuple(strings), tuple(integers)
        plain_timestamps, rest = tuple(timestamps), tuple(others)

        def check(datum: Any) -> bool:
            if not isinstance(datum, dict) or "-type" in datum:
                return False
            get = datum.get
            try:
                for name in plain_strings:
                    if not isinstance(get(name), str):
                        return False
                for name, low, high in plain_integers:
                    value = get(name)
                    # ``type() is int`` refuses bool, and int subclasses: validate decides.
                    if type(value) is not int or not low <= value <= high:
                        return False
                for name in plain_timestamps:
                    if not _is_timestamp(get(name)):
                        return False
                for name, default, valid in rest:
                    if not valid(get(name, default)):
                        return False
            except Exception:  # e.g. a tzinfo that fails: let validate say so
                return False
            return True

        # References to a named type, recursive ones included, resolve when a datum is
        # checked, by which time the record they name is compiled.
        self._compiled.setdefault(str(schema["name"]), check)
        return check


def _is_timestamp_schema(schema: Any) -> bool:
    return (
        isinstance(schema, dict)
        and schema.get("type") == "long"
        and schema.get("logicalType") in _TIMESTAMPS
    )


def _union(branches: list[QuickValidator]) -> QuickValidator:
    choices = tuple(branches)

    def check(datum: Any) -> bool:
        if isinstance(datum, tuple):
            return False
        # Plain loops here and below: any() and all() over a generator cost twice as much.
        for valid in choices:  # noqa: SIM110
            if valid(datum):
                return True
        return False

    return check


def _array(item: QuickValidator) -> QuickValidator:
    def check(datum: Any) -> bool:
        if not isinstance(datum, list | tuple):
            return False
        for element in datum:  # noqa: SIM110
            if not item(element):
                return False
        return True

    return check


def _map(value: QuickValidator) -> QuickValidator:
    def check(datum: Any) -> bool:
        if not isinstance(datum, dict):
            return False
        for key, element in datum.items():
            if not isinstance(key, str) or not value(element):
                return False
        return True

    return check


def _enum(symbols: tuple[str, ...]) -> QuickValidator:
    def check(datum: Any) -> bool:
        return datum in symbols

    return check


def _fixed(size: int) -> QuickValidator:
    def check(datum: Any) -> bool:
        return isinstance(datum, bytes) and len(datum) == size

    return check
