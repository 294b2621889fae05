"""The domain error hierarchy. Domains raise these; services/platform/errors.py maps them to
gRPC status codes in one place, and Envoy maps those to HTTP as grpc-gateway does."""


class DomainError(Exception):
    """Base of every error a domain raises on purpose. The message is shown to the caller."""


class InvalidArgument(DomainError):
    """The request itself is wrong (400)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthenticated(DomainError):
    """No valid credentials (401)."""


class PermissionDenied(DomainError):
    """Authenticated, but not allowed (403)."""


class NotFound(DomainError):
    """The resource does not exist, or is not the caller's to see (404)."""


class AlreadyExists(DomainError):
    """A resource with the same identity exists (409)."""


class Conflict(DomainError):
    """A concurrent change or a reused idempotency key with another request (409)."""


class FailedPrecondition(DomainError):
    """The resource is not in a state that allows the operation (400)."""


class Unavailable(DomainError):
    """A dependency is down; retrying later may succeed (503)."""


class ResourceExhausted(DomainError):
    """Too much work is already waiting; the same request may succeed after
    `retry_after_seconds` (429 with Retry-After)."""

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
