"""Validation of webhook registrations: where deliveries may go, which events, how many."""

import base64
import ipaddress
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from urllib.parse import quote, urlsplit

from services.common.errors import FailedPrecondition, InvalidArgument
from services.webhook.domain.delivery import DeliveryState
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
# Never public, whatever Python's tables say: the local-use NAT64 prefix and the deprecated
# site-local range.
_NEVER_PUBLIC = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("fec0::/10"))
_RESERVED_V6 = ipaddress.IPv6Network("::/8")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_BRACKETED = re.compile(r"\[[^\]]*\](:[0-9]*)?")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_target(url: str) -> Target:
    """The target a URL names, with the URL normalised as it is stored and called: scheme
    and host in lower case (an international host in its IDNA form), the default port
    dropped, an empty path as "/", no fragment. Anything that is not a plain http(s) URL to
    a host is INVALID_ARGUMENT naming what is wrong."""
    url = url.strip()
    if not url:
        raise InvalidArgument("url is required", field="url")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(f"url must be at most {MAX_URL_LENGTH} characters", field="url")
    if not url.isprintable() and any(0xD800 <= ord(char) <= 0xDFFF for char in url):
        raise InvalidArgument("url must be valid UTF-8", field="url")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise InvalidArgument("url must not contain spaces or control characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidArgument(f"url is malformed: {error}", field="url") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidArgument("url must start with http:// or https://", field="url")
    if not parts.hostname:
        raise InvalidArgument("url must name a host", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("url must not contain credentials", field="url")
    authority = parts.netloc.rpartition("@")[2]
    if authority.startswith("[") and not _BRACKETED.fullmatch(authority):
        raise InvalidArgument("url has text after its bracketed address", field="url")
    host = _normal_host(parts.hostname)
    if port == 0:
        raise InvalidArgument("url port must be between 1 and 65535", field="url")
    port = port or _DEFAULT_PORTS[scheme]
    netloc = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    # Characters outside ASCII are sent percent-encoded (UTF-8), as browsers send them.
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if not path.startswith("/"):
        path = "/" + path
    query = quote(parts.query, safe=_PATH_SAFE + "?")
    target = path + (f"?{query}" if query else "")
    normal = f"{scheme}://{netloc}{target}"
    if len(normal) > MAX_URL_LENGTH:
        raise InvalidArgument(f"url must be at most {MAX_URL_LENGTH} characters", field="url")
    return Target(url=normal, host=host, port=port, scheme=scheme, request_target=target)


def _normal_host(hostname: str) -> str:
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    try:
        # IDNA first: it turns the full stops of other scripts (U+3002, U+FF0E, U+FF61)
        # into ".".
        host = hostname.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError:
        host = ""
    if not host or any(not (c.isalnum() or c in "-.") for c in host):
        raise InvalidArgument(f"url host {hostname!r} is not a valid host name", field="url")
    return host


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
    """IPv4 addresses an IPv6 address tunnels or translates to, which must pass the same
    check: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), 6to4, Teredo and the
    well-known NAT64 prefix (64:ff9b::/96)."""
    embedded = [address.ipv4_mapped, address.sixtofour, address.teredo and address.teredo[1]]
    if address in _NAT64 or int(address) >> 32 == 0:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    return [candidate for candidate in embedded if candidate is not None]


def is_public_address(address: Address) -> bool:
    """Whether ``address`` and every IPv4 address it stands for are global unicast: not
    private, loopback, link-local (cloud metadata: 169.254.169.254, fd00:ec2::254), shared
    (CGNAT), multicast, reserved or documentation ranges, nor the local-use NAT64 prefix."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _NEVER_PUBLIC):
            return False
        translated = address in _MAPPED or address in _NAT64 or int(address) >> 32 == 0
        if address in _RESERVED_V6 and not translated:
            return False  # ::/8 beyond the forms checked below (e.g. ::ffff:0:a.b.c.d)
    candidates: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        candidates.extend(_embedded_ipv4(address))
    return all(c.is_global and not c.is_multicast for c in candidates)


def refused_addresses(
    addresses: Sequence[str], allowed: Callable[[Address], bool] | None = None
) -> list[str]:
    """The addresses that are neither public nor ``allowed`` (the operator's allow-list)."""
    refused = set()
    for text in addresses:
        address = ipaddress.ip_address(text)
        if not is_public_address(address) and not (allowed and allowed(address)):
            refused.add(text)
    return sorted(refused)


def ensure_public_target(
    target: Target, addresses: Sequence[str], allowed: Callable[[Address], bool] | None = None
) -> None:
    """Refuses a host that resolves to nothing, or to any address that is not public (see
    :func:`is_public_address`) and not in the operator's allow-list."""
    if not addresses:
        raise InvalidArgument(f"url host {target.host!r} does not resolve", field="url")
    refused = refused_addresses(addresses, allowed)
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
    """32 random bytes as ``whsec_`` and standard base64: the Standard Webhooks form (its
    libraries decode it into the key), and a string the original verify function uses whole."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def parse_delivery_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidArgument("delivery_id must be a UUID", field="delivery_id") from None


MAX_GRACE_SECONDS = 7 * 24 * 3600


def rotation_grace(seconds: int | None, default: timedelta) -> timedelta:
    if seconds is None:
        return default
    if not 0 <= seconds <= MAX_GRACE_SECONDS:
        raise InvalidArgument(
            f"grace_period_seconds must be between 0 and {MAX_GRACE_SECONDS} (7 days)",
            field="grace_period_seconds",
        )
    return timedelta(seconds=seconds)


DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_TOKEN_PREFIX = "d1:"


def page_size(raw: int) -> int:
    if not 0 <= raw <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE_SIZE}", field="page_size")
    return raw or DEFAULT_PAGE_SIZE


def page_token(position: int | None) -> str:
    if position is None:
        return ""
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{position}".encode()).decode().rstrip("=")


def parse_page_token(token: str) -> int | None:
    """The position a page token continues from; None for the first page."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if text.startswith(_TOKEN_PREFIX) and text[len(_TOKEN_PREFIX) :].isdigit():
            return int(text[len(_TOKEN_PREFIX) :])
    except (ValueError, UnicodeDecodeError):
        pass
    raise InvalidArgument(
        "page_token is not one this API returned; pass a next_page_token or nothing",
        field="page_token",
    )


def parse_delivery_state(raw: str) -> DeliveryState | None:
    try:
        return DeliveryState.parse(raw)
    except ValueError:
        raise InvalidArgument(
            f"state must be one of {', '.join(s.value for s in DeliveryState)}", field="state"
        ) from None
