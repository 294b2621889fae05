"""The one place that maps domain errors to gRPC status codes (and so, through Envoy's
grpc-gateway-style mapping, to HTTP codes), with a google.rpc.Status carrying details."""

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common import errors

# Trailing metadata of a RESOURCE_EXHAUSTED call: whole seconds to wait before retrying. A
# gRPC error is sent trailers-only, so Envoy's transcoder hands it to REST callers as the
# HTTP Retry-After header of the 429.
REQUEST_ID = "x-request-id"
RETRY_AFTER = "retry-after"

Metadata = tuple[tuple[str, str | bytes], ...]

_CODES: tuple[tuple[type[errors.DomainError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Conflict, grpc.StatusCode.ABORTED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DependencyUnavailable, grpc.StatusCode.UNAVAILABLE),
)


@dataclass(frozen=True, slots=True)
class ErrorStatus(grpc.Status):
    """What a call refused with a domain error ends with (for `abort_with_status`)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: Metadata


def status_code_for(error: errors.DomainError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def rich_status(error: errors.DomainError) -> status_pb2.Status:
    code = status_code_for(error)
    status = status_pb2.Status(code=_rpc_code(code), message=str(error))
    if isinstance(error, errors.InvalidArgument) and error.violations:
        _add_detail(
            status,
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=text)
                    for field, text in error.violations
                ]
            ),
        )
    if isinstance(error, errors.ResourceExhausted):
        _add_detail(
            status,
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=error.retry_after_seconds)
            ),
        )
    return status


def error_status(error: errors.DomainError, request_id: str = "") -> ErrorStatus:
    """The rich status (in `grpc-status-details-bin`), the call's `x-request-id` (aborting
    replaces the trailing metadata set before), and `retry-after` when retrying later may
    succeed."""
    status = rpc_status.to_status(rich_status(error))
    metadata: Metadata = tuple(status.trailing_metadata)
    if request_id:
        metadata += ((REQUEST_ID, request_id),)
    if isinstance(error, errors.ResourceExhausted):
        metadata += ((RETRY_AFTER, str(error.retry_after_seconds)),)
    return ErrorStatus(status.code, status.details, metadata)


def _add_detail(status: status_pb2.Status, detail: Message) -> None:
    packed = any_pb2.Any()
    packed.Pack(detail)
    status.details.append(packed)


def _rpc_code(code: grpc.StatusCode) -> int:
    value: int = code.value[0]
    assert code_pb2.Code.Name(value)
    return value
