"""The domain error hierarchy. Domains raise these; services/platform/errors.py maps them to
gRPC status codes in one place, and Envoy maps those to HTTP as grpc-gateway does."""


class DomainError(Exception):
    """Base of every error a domain raises on purpose. The message is shown to the caller."""


class InvalidArgument(DomainError):
    """The request itself is wrong (400). ``field`` names the offending field; a request
    with several problems lists each as ``(field, description)`` in ``violations``."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        violations: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.field = field
        if not violations and field:
            violations = ((field, message),)
        self.violations = violations


class Unauthenticated(DomainError):
    """No valid credentials (401)."""


class TokenExpired(Unauthenticated):
    """The credentials were valid but have expired: the caller should get fresh ones (401)."""


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


class DependencyUnavailable(DomainError):
    """A dependency (a database, the broker, another service) cannot be reached or is
    overloaded right now; retrying later may succeed (503). Adapters raise it at their port,
    so callers tell an outage from a problem with their own input by type: the event
    consumers retry it without limit instead of counting it against the event. ``dependency``
    names what is away, for operators."""

    def __init__(self, message: str, *, dependency: str = "a dependency") -> None:
        super().__init__(message)
        self.dependency = dependency


class ResourceExhausted(DomainError):
    """Too much work is already waiting; the same request may succeed after
    `retry_after_seconds` (429 with Retry-After)."""

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
