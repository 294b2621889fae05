"""Request bounds, read from the contract and enforced before any handler runs.

Every string, bytes, repeated and free-form JSON field of a request message declares its
bounds in the proto (``[(ordermesh.common.v1.limits) = {...}]``, see
``protos/ordermesh/common/v1/limits.proto``). :func:`rules_for` compiles them once per
message type into :class:`RequestRules`, which the platform interceptor applies to every
request, whatever the transport (native gRPC, grpc-web, or REST transcoded by Envoy):

- strings: at most ``max_length`` code points and no NUL character (the protobuf runtime
  already refuses invalid UTF-8 when it parses the request);
- bytes: at most ``max_length`` bytes; repeated fields: at most ``max_items`` elements;
- ``google.protobuf.Struct``/``Value``: at most ``max_json_bytes`` of compact JSON, nested at
  most ``max_depth`` objects/arrays deep, no NUL in keys or strings.

A request type with a field that declares no bound is refused when the rules are compiled,
so a server cannot start with an unbounded contract. The rules also give the largest
encoding a valid request can have (:attr:`RequestRules.max_bytes`), which bounds what a
server must accept from the network.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from ordermesh.common.v1 import limits_pb2

JSON_MESSAGES = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)
# A Struct/Value's protobuf encoding is at most this many times its compact JSON form (the
# worst case is an array of small numbers: "0," is 2 bytes of JSON and 11 of protobuf).
_JSON_TO_PROTO_FACTOR = 8
_JSON_OVERHEAD = 64
# A request with a great many problems is reported with the first few.
MAX_REPORTED = 20

_FIXED_SIZES = {
    FieldDescriptor.TYPE_DOUBLE: 8,
    FieldDescriptor.TYPE_FIXED64: 8,
    FieldDescriptor.TYPE_SFIXED64: 8,
    FieldDescriptor.TYPE_FLOAT: 4,
    FieldDescriptor.TYPE_FIXED32: 4,
    FieldDescriptor.TYPE_SFIXED32: 4,
    FieldDescriptor.TYPE_BOOL: 1,
}
_VARINT_MAX = 10


class UnboundedFieldError(ValueError):
    """A request field declares no bound (or the wrong kind of bound) in the contract."""


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    description: str


Check = Callable[[Message, str, list[Violation]], None]


@dataclass(frozen=True)
class RequestRules:
    """The compiled checks of one request message type."""

    message_name: str
    max_bytes: int
    _checks: tuple[Check, ...] = field(repr=False)

    def violations(self, message: Message) -> list[Violation]:
        found: list[Violation] = []
        for check in self._checks:
            check(message, "", found)
            if len(found) >= MAX_REPORTED:
                break
        return found[:MAX_REPORTED]


@functools.cache
def rules_for(descriptor: Descriptor) -> RequestRules:
    """The rules of the request type ``descriptor`` (compiled once per type)."""
    checks, size = _message_checks(descriptor, (descriptor.full_name,))
    return RequestRules(descriptor.full_name, size, tuple(checks))


def limits_of(field_descriptor: FieldDescriptor) -> limits_pb2.FieldLimits | None:
    options = field_descriptor.GetOptions()
    if not options.HasExtension(limits_pb2.limits):
        return None
    found: limits_pb2.FieldLimits = options.Extensions[limits_pb2.limits]
    return found


def _message_checks(descriptor: Descriptor, seen: tuple[str, ...]) -> tuple[list[Check], int]:
    checks: list[Check] = []
    size = 0
    for fd in descriptor.fields:
        check, field_size = _field_check(fd, seen)
        size += field_size
        if check is not None:
            checks.append(check)
    return checks, size


def _field_check(fd: FieldDescriptor, seen: tuple[str, ...]) -> tuple[Check | None, int]:
    """The check of one field (None when nothing needs checking) and its encoded bound."""
    limits = limits_of(fd)
    where = fd.full_name
    repeated = fd.is_repeated
    items = 1
    if repeated:
        if limits is None or limits.max_items == 0:
            raise UnboundedFieldError(f"{where} is repeated but declares no max_items")
        items = limits.max_items
    tag = _tag_size(fd.number)
    nested = fd.message_type
    element: Callable[[Any, str, list[Violation]], None] | None
    if fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        if limits is None or limits.max_length == 0:
            raise UnboundedFieldError(f"{where} declares no max_length")
        is_text = fd.type == FieldDescriptor.TYPE_STRING
        element = _text_check(limits.max_length) if is_text else _bytes_check(limits.max_length)
        payload = limits.max_length * (4 if is_text else 1)
        element_size = tag + _varint_size(payload) + payload
    elif nested is not None and nested.full_name in JSON_MESSAGES:
        if limits is None or limits.max_json_bytes == 0:
            raise UnboundedFieldError(f"{where} declares no max_json_bytes")
        element = _json_check(nested.full_name, limits.max_json_bytes, limits.max_depth)
        payload = limits.max_json_bytes * _JSON_TO_PROTO_FACTOR + _JSON_OVERHEAD
        element_size = tag + _varint_size(payload) + payload
    elif nested is not None:
        if nested.full_name in seen:
            raise UnboundedFieldError(f"{where} is recursive; its size has no bound")
        nested_checks, payload = _message_checks(nested, (*seen, nested.full_name))
        element = _nested_check(tuple(nested_checks)) if nested_checks else None
        element_size = tag + _varint_size(payload) + payload
    else:
        element = None
        element_size = tag + _FIXED_SIZES.get(fd.type, _VARINT_MAX)
    size = items * element_size
    name = fd.name
    if repeated:
        return _repeated_check(name, items, element), size
    if element is None:
        return None, size
    if nested is not None:
        return _singular_message_check(name, element), size
    return _singular_check(name, element), size


def _singular_check(name: str, element: Callable[[Any, str, list[Violation]], None]) -> Check:
    def check(message: Message, prefix: str, found: list[Violation]) -> None:
        element(getattr(message, name), prefix + name, found)

    return check


def _singular_message_check(
    name: str, element: Callable[[Any, str, list[Violation]], None]
) -> Check:
    def check(message: Message, prefix: str, found: list[Violation]) -> None:
        if message.HasField(name):
            element(getattr(message, name), prefix + name, found)

    return check


def _repeated_check(
    name: str, max_items: int, element: Callable[[Any, str, list[Violation]], None] | None
) -> Check:
    def check(message: Message, prefix: str, found: list[Violation]) -> None:
        values = getattr(message, name)
        path = prefix + name
        if len(values) > max_items:
            found.append(
                Violation(path, f"{path} has {len(values)} items; at most {max_items} are allowed")
            )
            return
        if element is not None:
            for index, value in enumerate(values):
                element(value, f"{path}[{index}]", found)
                if len(found) >= MAX_REPORTED:
                    return

    return check


def _nested_check(checks: tuple[Check, ...]) -> Callable[[Any, str, list[Violation]], None]:
    def check(value: Message, path: str, found: list[Violation]) -> None:
        for nested in checks:
            nested(value, path + ".", found)

    return check


def _text_check(max_length: int) -> Callable[[Any, str, list[Violation]], None]:
    def check(value: str, path: str, found: list[Violation]) -> None:
        if len(value) > max_length:
            found.append(
                Violation(
                    path,
                    f"{path} is {len(value)} characters long; at most {max_length} are allowed",
                )
            )
        elif "\x00" in value:
            found.append(Violation(path, f"{path} contains a NUL character"))

    return check


def _bytes_check(max_length: int) -> Callable[[Any, str, list[Violation]], None]:
    def check(value: bytes, path: str, found: list[Violation]) -> None:
        if len(value) > max_length:
            found.append(
                Violation(path, f"{path} is {len(value)} bytes long; at most {max_length} allowed")
            )

    return check


def _json_check(
    type_name: str, max_json_bytes: int, max_depth: int
) -> Callable[[Any, str, list[Violation]], None]:
    def check(value: Message, path: str, found: list[Violation]) -> None:
        if type_name == "google.protobuf.Value" and value.WhichOneof("kind") is None:
            return  # an unset Value: nothing was sent
        plain = json_format.MessageToDict(value)
        depth = _depth(plain)
        if depth > max_depth:
            found.append(
                Violation(
                    path, f"{path} nests {depth} levels deep; at most {max_depth} are allowed"
                )
            )
            return
        if any("\x00" in text for text in _texts(plain)):
            found.append(Violation(path, f"{path} contains a NUL character"))
            return
        size = len(json.dumps(plain, separators=(",", ":"), ensure_ascii=False).encode())
        if size > max_json_bytes:
            found.append(
                Violation(
                    path, f"{path} is {size} bytes as JSON; at most {max_json_bytes} are allowed"
                )
            )

    return check


def _depth(value: object) -> int:
    """Nesting of objects and arrays: 0 for a scalar, 1 for a flat object or array."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level + 1)
        pending.extend((child, level + 1) for child in children)
    return deepest


def _texts(value: object) -> Iterator[str]:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            yield from item.keys()
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _tag_size(number: int) -> int:
    return _varint_size(number << 3)


def _varint_size(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size
