"""Validation of webhook registrations: where deliveries may go, which events, how many."""

import ipaddress
import secrets
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

from services.common.errors import FailedPrecondition, InvalidArgument
from services.webhook.domain.model import (
    ALL_EVENTS,
    KNOWN_EVENTS,
    MAX_DESCRIPTION_LENGTH,
    MAX_URL_LENGTH,
    MAX_WEBHOOKS_PER_USER,
    SECRET_PREFIX,
    Target,
)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_target(url: str) -> Target:
    url = url.strip()
    if not url:
        raise InvalidArgument("url is required", field="url")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(f"url must be at most {MAX_URL_LENGTH} characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidArgument(f"url is malformed: {error}", field="url") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise InvalidArgument("url must start with http:// or https://", field="url")
    if not parts.hostname:
        raise InvalidArgument("url must name a host", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("url must not contain credentials", field="url")
    return Target(url=url, host=parts.hostname, port=port or _DEFAULT_PORTS[parts.scheme])


def normalise_events(events: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(event.strip() for event in events))
    if not chosen:
        raise InvalidArgument(
            f'events must name at least one event type, or "{ALL_EVENTS}" for all',
            field="events",
        )
    unknown = [event for event in chosen if event not in KNOWN_EVENTS and event != ALL_EVENTS]
    if unknown:
        raise InvalidArgument(
            f"events contains unknown event types ({', '.join(unknown)}); known:"
            f' {", ".join(KNOWN_EVENTS)}, or "{ALL_EVENTS}" for all',
            field="events",
        )
    return chosen


def validate_description(description: str) -> str:
    description = description.strip()
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidArgument(
            f"description must be at most {MAX_DESCRIPTION_LENGTH} characters",
            field="description",
        )
    return description


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address tunnels to, which must pass the same check."""
    embedded = [address.ipv4_mapped, address.sixtofour, address.teredo and address.teredo[1]]
    if address in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    return [candidate for candidate in embedded if candidate is not None]


def is_public_address(address: Address) -> bool:
    candidates: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        candidates.extend(_embedded_ipv4(address))
    return all(c.is_global and not c.is_multicast for c in candidates)


def ensure_public_target(target: Target, addresses: Sequence[str]) -> None:
    """Refuses a host that resolves to nothing, or to any address that is not public: private,
    loopback, link-local, multicast, reserved or shared ranges, including IPv6 forms that
    tunnel to them."""
    if not addresses:
        raise InvalidArgument(f"url host {target.host!r} does not resolve", field="url")
    refused = sorted(
        {text for text in addresses if not is_public_address(ipaddress.ip_address(text))}
    )
    if refused:
        raise InvalidArgument(
            f"url host {target.host!r} resolves to non-public addresses ({', '.join(refused)});"
            " private, loopback, link-local and multicast targets are refused",
            field="url",
        )


def ensure_capacity(registered: int) -> None:
    if registered >= MAX_WEBHOOKS_PER_USER:
        raise FailedPrecondition(
            f"at most {MAX_WEBHOOKS_PER_USER} webhooks per user; delete one before adding another"
        )


def parse_webhook_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidArgument("webhook_id must be a UUID", field="webhook_id") from None


def new_signing_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)
