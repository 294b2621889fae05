"""Who may open ``/ws/orders/{user_id}``: the request's parts, its token, and the decision.

The access token (the auth service's RS256 JWT, verified against its JWKS by the same
:class:`~services.platform.tokens.TokenVerifier` the services use) is taken from the first of:

1. the ``Authorization: Bearer <jwt>`` header (clients that can set headers);
2. the ``Sec-WebSocket-Protocol`` header, for browsers, which cannot set headers: offer the
   two subprotocols ``["bearer", "<jwt>"]`` (the bridge selects ``bearer``), or the single
   ``bearer.<jwt>`` (the bridge selects it, echoing it back, as browsers require that the
   selected subprotocol be one they offered). Prefer the first: it keeps the token out of
   the response;
3. the ``token`` query parameter (last resort: URLs end up in logs).

Only the token's own user, or an admin (or a system principal), may watch ``user_id``.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import jwt

from gateway.closecodes import CloseCode, Refusal
from services.common.errors import DependencyUnavailable, TokenExpired, Unauthenticated
from services.common.identity import Principal
from services.platform.tokens import TokenVerifier

ROUTE_PREFIX = "/ws/orders/"
BEARER = "bearer"
BEARER_PREFIX = "bearer."
# The contract's bounds (protos/ordermesh/order/v1/order.proto, WatchOrdersRequest).
MAX_USER_ID = 64
MAX_CURSOR = 128


@dataclass(frozen=True, slots=True)
class SocketRequest:
    """What a socket asks for: whose orders, from where, with which token."""

    user_id: str
    cursor: str
    token: str | None


@dataclass(frozen=True, slots=True)
class Grant:
    """A verified token allowed to watch ``user_id``, and until when (wall clock)."""

    principal: Principal
    token: str
    expires_at: float

    def valid(self, now: float | None = None, margin: float = 5.0) -> bool:
        return (time.time() if now is None else now) + margin < self.expires_at


def watched_user(path: str) -> str | None:
    """The ``user_id`` of ``/ws/orders/{user_id}`` (percent-decoded), None for other paths."""
    route = urlsplit(path).path
    if not route.startswith(ROUTE_PREFIX):
        return None
    rest = route.removeprefix(ROUTE_PREFIX)
    if "/" in rest.rstrip("/"):
        return None
    return unquote(rest.rstrip("/"))


def token_from_subprotocols(offered: Sequence[str]) -> str | None:
    for index, protocol in enumerate(offered):
        if protocol.lower() == BEARER and index + 1 < len(offered):
            return offered[index + 1]
        if protocol.lower().startswith(BEARER_PREFIX) and len(protocol) > len(BEARER_PREFIX):
            return protocol[len(BEARER_PREFIX) :]
    return None


def select_subprotocol(offered: Sequence[str]) -> str | None:
    """The subprotocol to echo for a token offered in ``Sec-WebSocket-Protocol``."""
    for protocol in offered:
        if protocol.lower() == BEARER or protocol.lower().startswith(BEARER_PREFIX):
            return protocol
    return None


def parse_request(
    path: str, authorization: str | None, offered_subprotocols: Sequence[str]
) -> SocketRequest:
    """The socket's request; :class:`Refusal` (bad request) for a malformed one."""
    user_id = watched_user(path)
    if user_id is None:
        raise Refusal(CloseCode.BAD_REQUEST, "the path must be /ws/orders/{user_id}")
    if not user_id or len(user_id) > MAX_USER_ID or not _printable(user_id):
        raise Refusal(CloseCode.BAD_REQUEST, f"user id must be 1-{MAX_USER_ID} characters")
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    cursor = (query.get("cursor") or [""])[-1]
    if len(cursor) > MAX_CURSOR or not _printable(cursor):
        raise Refusal(CloseCode.BAD_REQUEST, f"cursor must be at most {MAX_CURSOR} characters")
    token: str | None = None
    if authorization and authorization.strip():
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != BEARER or not value.strip():
            raise Refusal(CloseCode.INVALID_TOKEN, "authorization must be 'Bearer <token>'")
        token = value.strip()
    token = token or token_from_subprotocols(offered_subprotocols)
    token = token or (query.get("token") or [""])[-1].strip() or None
    return SocketRequest(user_id=user_id, cursor=cursor, token=token)


def _printable(text: str) -> bool:
    return all(unicodedata.category(ch)[0] != "C" for ch in text)


async def authorize(verifier: TokenVerifier, request: SocketRequest) -> Grant:
    """The grant for ``request``, or :class:`Refusal` with the code of what is wrong."""
    if request.token is None:
        raise Refusal(
            CloseCode.MISSING_TOKEN,
            "missing token: send 'Authorization: Bearer', subprotocols ['bearer', <token>]"
            " or ?token=",
        )
    try:
        principal = await verifier.principal(f"Bearer {request.token}")
    except TokenExpired:
        raise Refusal(CloseCode.TOKEN_EXPIRED, "token expired: refresh it and reconnect") from None
    except Unauthenticated as error:
        raise Refusal(CloseCode.INVALID_TOKEN, str(error)) from None
    except DependencyUnavailable:
        raise Refusal(
            CloseCode.UPSTREAM_UNAVAILABLE, "cannot verify tokens right now; retry later"
        ) from None
    if principal.user_id != request.user_id and not principal.is_privileged:
        raise Refusal(CloseCode.FORBIDDEN, "a token may watch only its own user's orders")
    return Grant(principal=principal, token=request.token, expires_at=expires_at(request.token))


def expires_at(token: str) -> float:
    """The ``exp`` of a token the verifier has already accepted."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return float(claims["exp"])
