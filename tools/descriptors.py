"""Editing the descriptor set Envoy transcodes with: Envoy's transcoder refuses
``response_body`` on anything but ``google.api.HttpBody``, so a copy with those cleared is
generated (tools/gen_rest_fields.py), and the edge config refuses a descriptor that still has
them (devstack/edge.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def strip_response_bodies(fds: Any) -> list[str]:
    """Clear, in a ``FileDescriptorSet``, every ``response_body`` that names a field other
    than a ``google.api.HttpBody``; return the bindings changed (``pkg.Service.Method:field``).

    Envoy's transcoder refuses to load those ("Setting response_body is not supported yet for
    non-HttpBody fields"); the Lua guard unwraps the field from the JSON response instead.
    tools/gen_rest_fields.py uses this to write gen/envoy/ordermesh.binpb.
    """
    from google.api import annotations_pb2

    fields: dict[str, dict[str, str]] = {}
    for file in fds.file:
        for message in file.message_type:
            fields[f".{file.package}.{message.name}"] = {f.name: f.type_name for f in message.field}
    changed: list[str] = []
    for file in fds.file:
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                pending = [method.options.Extensions[annotations_pb2.http]]
                while pending:
                    rule = pending.pop()
                    pending.extend(rule.additional_bindings)
                    target = fields.get(method.output_type, {}).get(rule.response_body)
                    if rule.response_body and target != ".google.api.HttpBody":
                        changed.append(
                            f"{file.package}.{service.name}.{method.name}:{rule.response_body}"
                        )
                        rule.response_body = ""
    return changed


def unsupported_response_bodies(descriptor: Path) -> list[str]:
    """Bindings of the descriptor set at ``descriptor`` that Envoy would refuse to load."""
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(descriptor.read_bytes())
    return strip_response_bodies(fds)
