"""Generates the field table the edge's Lua guard (envoy/rest_guard.lua) validates REST bodies with.

Envoy's grpc_json_transcoder silently drops JSON fields it does not know. The guard runs before
it and rejects them instead, so it needs, for every REST route with a body, the fields the
body may carry, recursively through nested messages. This reads the descriptor set (with
imports) that Envoy transcodes with, follows the ``google.api.http`` rules (including
``additional_bindings`` and body selectors other than ``*``) and writes a Lua chunk that
returns::

    {
      rules = {  -- most specific template first
        {method = "POST", segments = {"api", "v1", "orders"}, verb = nil,
         body = "ordermesh.order.v1.CreateOrderRequest",  -- false: no body to check
         response_body = "order", rpc = "ordermesh.order.v1.OrderService.CreateOrder"},
        ...
      },
      messages = {
        ["ordermesh.order.v1.CreateOrderRequest"] = {
          items = "ordermesh.order.v1.CreateOrderItem",  -- a message (repeated or not)
          metadata = true,                                -- anything goes (scalar, Struct, ...)
          ...                                             -- map<_, Msg> fields: {map = "Msg"}
        },
      },
    }

Both the proto field name and its JSON (lowerCamel) name are allowed, as the transcoder
accepts both. Each rule also carries its ``response_body`` (or nil).

It also writes the descriptor set Envoy transcodes with, ``ordermesh.binpb``: the same set
with ``response_body`` cleared wherever it names a field other than ``google.api.HttpBody``,
which Envoy's transcoder refuses to load ("Setting response_body is not supported yet for
non-HttpBody fields"); the guard unwraps that field from the JSON response instead.

Usage: gen_rest_fields.py DESCRIPTOR_SET OUTPUT_DIR   (writes rest_fields.lua, ordermesh.binpb)
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from tools.descriptors import strip_response_bodies

FieldProto = descriptor_pb2.FieldDescriptorProto

# Messages whose JSON form is not an object of their fields: accept any JSON value there
# and leave type checking to the transcoder.
OPAQUE_MESSAGES = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Empty",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.api.HttpBody",
    }
)

_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class Rule:
    method: str
    segments: tuple[str, ...]
    verb: str | None
    body: str | None  # full name of the message the JSON body must match, None: no body
    rpc: str
    response_body: str | None = None  # the response field that is the whole REST response

    @property
    def specificity(self) -> tuple[int, int, int]:
        literals = sum(1 for s in self.segments if s not in ("*", "**"))
        multi = sum(1 for s in self.segments if s == "**")
        return (literals, -multi, len(self.segments))


@dataclass
class Table:
    rules: list[Rule] = field(default_factory=list)
    # message full name -> allowed key -> message full name | True (anything) | ("map", msg)
    messages: dict[str, dict[str, str | bool | tuple[str, str]]] = field(default_factory=dict)


def parse_template(template: str) -> tuple[tuple[str, ...], str | None]:
    """Split an http rule path template into segments ("*" / "**" for variables) and verb."""
    if not template.startswith("/"):
        raise ValueError(f"path template must start with '/': {template!r}")
    verb: str | None = None
    path = template
    # A verb follows the last segment after ':' (outside any variable braces).
    last_slash = path.rfind("/")
    tail = path[last_slash:]
    if ":" in tail and "}" not in tail[tail.rfind(":") :]:
        colon = last_slash + tail.rfind(":")
        path, verb = path[:colon], path[colon + 1 :]

    def expand(match: re.Match[str]) -> str:
        return match.group(2) if match.group(2) else "*"

    expanded = _VARIABLE.sub(expand, path)
    segments = tuple(expanded.strip("/").split("/")) if expanded != "/" else ()
    return segments, verb


class _Index:
    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.services: list[tuple[str, descriptor_pb2.ServiceDescriptorProto]] = []
        for file in fds.file:
            prefix = f".{file.package}" if file.package else ""
            for message in file.message_type:
                self._add_message(prefix, message)
            for service in file.service:
                self.services.append((file.package, service))

    def _add_message(self, prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        self.messages[name] = message
        for nested in message.nested_type:
            self._add_message(name, nested)

    def message(self, type_name: str) -> descriptor_pb2.DescriptorProto:
        try:
            return self.messages[type_name]
        except KeyError:
            raise KeyError(f"message {type_name} is not in the descriptor set") from None


def _bindings(rule: http_pb2.HttpRule) -> list[http_pb2.HttpRule]:
    out = [rule]
    for extra in rule.additional_bindings:
        out.extend(_bindings(extra))
    return out


def _method_and_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ValueError("http rule without a pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return kind.upper(), str(getattr(rule, kind))


def _body_message(index: _Index, request_type: str, selector: str) -> str | None:
    """The message the JSON body must match, or None when it is not a message."""
    if not selector:
        return None
    if selector == "*":
        return request_type
    current_type = request_type
    for part in selector.split("."):
        matches = [f for f in index.message(current_type).field if f.name == part]
        if not matches:
            raise ValueError(f"body selector {selector!r} not found in {request_type}")
        fld = matches[0]
        if fld.type != FieldProto.TYPE_MESSAGE:
            return None  # a scalar body: nothing to check field by field
        if index.message(fld.type_name).options.map_entry:
            return None
        current_type = fld.type_name  # repeated: the guard checks each array element
    return current_type


def _collect(index: _Index, type_name: str, table: Table) -> None:
    """Add ``type_name`` (leading dot) and every message it reaches to ``table``."""
    key = type_name.lstrip(".")
    if key in table.messages or key in OPAQUE_MESSAGES:
        return
    message = index.message(type_name)
    allowed: dict[str, str | bool | tuple[str, str]] = {}
    table.messages[key] = allowed
    pending: list[str] = []
    for fld in message.field:
        kind: str | bool | tuple[str, str] = True
        if fld.type == FieldProto.TYPE_MESSAGE:
            target = index.message(fld.type_name)
            if target.options.map_entry:
                value = next(f for f in target.field if f.number == 2)
                if value.type == FieldProto.TYPE_MESSAGE and (
                    value.type_name.lstrip(".") not in OPAQUE_MESSAGES
                ):
                    kind = ("map", value.type_name.lstrip("."))
                    pending.append(value.type_name)
            elif fld.type_name.lstrip(".") not in OPAQUE_MESSAGES:
                kind = fld.type_name.lstrip(".")
                pending.append(fld.type_name)
        allowed[fld.name] = kind
        if fld.json_name:
            allowed[fld.json_name] = kind
    for name in pending:
        _collect(index, name, table)


def build_table(fds: descriptor_pb2.FileDescriptorSet) -> Table:
    index = _Index(fds)
    table = Table()
    for package, service in index.services:
        for method in service.method:
            if not method.options.HasExtension(annotations_pb2.http):
                continue
            rpc = f"{package}.{service.name}.{method.name}"
            for binding in _bindings(method.options.Extensions[annotations_pb2.http]):
                verb_name, template = _method_and_path(binding)
                segments, verb = parse_template(template)
                body = _body_message(index, method.input_type, binding.body)
                body_name: str | None = None
                if body:
                    body_name = body.lstrip(".")
                    _collect(index, body, table)
                response_body = binding.response_body or None
                table.rules.append(Rule(verb_name, segments, verb, body_name, rpc, response_body))
    table.rules.sort(key=lambda r: r.specificity, reverse=True)
    return table


def _lua_string(value: str) -> str:
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def render_lua(table: Table) -> str:
    lines = [
        "-- Generated by tools/gen_rest_fields.py from gen/descriptor/ordermesh.binpb.",
        "-- Do not edit: run scripts/gen. Read by envoy/rest_guard.lua.",
        "return {",
        "  rules = {",
    ]
    for rule in table.rules:
        segments = ", ".join(_lua_string(s) for s in rule.segments)
        verb = _lua_string(rule.verb) if rule.verb else "nil"
        body = _lua_string(rule.body) if rule.body else "false"
        response = _lua_string(rule.response_body) if rule.response_body else "nil"
        lines.append(
            f"    {{method = {_lua_string(rule.method)}, segments = {{{segments}}}, "
            f"verb = {verb}, body = {body}, response_body = {response}, "
            f"rpc = {_lua_string(rule.rpc)}}},"
        )
    lines += ["  },", "  messages = {"]
    for name in sorted(table.messages):
        lines.append(f"    [{_lua_string(name)}] = {{")
        for key, kind in sorted(table.messages[name].items()):
            if kind is True:
                value = "true"
            elif isinstance(kind, tuple):
                value = f"{{map = {_lua_string(kind[1])}}}"
            else:
                value = _lua_string(str(kind))
            lines.append(f"      [{_lua_string(key)}] = {value},")
        lines.append("    },")
    lines += ["  },", "}", ""]
    return "\n".join(lines)


def generate(descriptor: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write ``rest_fields.lua`` and Envoy's descriptor set ``ordermesh.binpb`` to ``out_dir``."""
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(descriptor.read_bytes())
    out_dir.mkdir(parents=True, exist_ok=True)
    lua = out_dir / "rest_fields.lua"
    lua.write_text(render_lua(build_table(fds)))
    strip_response_bodies(fds)
    envoy_descriptor = out_dir / "ordermesh.binpb"
    envoy_descriptor.write_bytes(fds.SerializeToString(deterministic=True))
    return lua, envoy_descriptor


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} DESCRIPTOR_SET OUTPUT_DIR", file=sys.stderr)
        return 2
    generate(Path(argv[1]), Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
