"""Domain errors become gRPC statuses in one place (services/platform/errors.py)."""

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from services.common import errors
from services.platform.errors import RETRY_AFTER, error_status, rich_status


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.Unauthenticated("who"), grpc.StatusCode.UNAUTHENTICATED),
        (
            errors.ResourceExhausted("busy", retry_after_seconds=2),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        (errors.DependencyUnavailable("down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_domain_error_has_its_code(error: errors.DomainError, code: grpc.StatusCode) -> None:
    status = error_status(error)
    assert (status.code, status.details) == (code, str(error))


def test_resource_exhausted_says_when_to_retry() -> None:
    error = errors.ResourceExhausted("too busy", retry_after_seconds=3)
    rich = rich_status(error)
    retry = error_details_pb2.RetryInfo()
    assert len(rich.details) == 1 and rich.details[0].Unpack(retry)
    assert retry.retry_delay.seconds == 3

    metadata = dict(error_status(error).trailing_metadata)
    assert metadata[RETRY_AFTER] == "3"
    sent = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    assert sent == rich


def test_other_errors_carry_no_retry_after() -> None:
    metadata = dict(error_status(errors.DependencyUnavailable("down")).trailing_metadata)
    assert RETRY_AFTER not in metadata
