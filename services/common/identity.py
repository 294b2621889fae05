"""Who is calling: the verified claims of a bearer token."""

from dataclasses import dataclass
from enum import StrEnum

from services.common.errors import NotFound, PermissionDenied


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"
    SYSTEM = "system"


class Tier(StrEnum):
    FREE = "free"
    STANDARD = "standard"
    PREMIUM = "premium"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    email: str
    role: Role
    tier: Tier

    @property
    def is_privileged(self) -> bool:
        return self.role in (Role.ADMIN, Role.SYSTEM)

    def require_privileged(self, action: str) -> None:
        if not self.is_privileged:
            raise PermissionDenied(f"only admins may {action}")

    def ensure_owner(self, owner_id: str, what: str) -> None:
        """Hides other users' resources as NOT_FOUND so ids cannot be probed."""
        if owner_id != self.user_id and not self.is_privileged:
            raise NotFound(f"{what} not found")
