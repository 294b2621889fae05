"""Why the bridge closes a socket: one WebSocket close code per reason, all in the range
RFC 6455 leaves to applications (4000-4999), plus the standard 1001 on shutdown.

A browser cannot read the HTTP status of a refused handshake, so every refusal completes the
handshake first and then closes with its code and a one-line reason. Clients decide what to
do from the code alone:

=====  =====================  ==========================================================
code   name                   what the client should do
=====  =====================  ==========================================================
1001   going away             the bridge is shutting down: reconnect (another replica)
                              with the last cursor
4000   bad request            fix the request (malformed cursor or user id); do not retry
4001   missing token          send a token (header, subprotocol or ``token`` parameter)
4002   invalid token          log in again; do not retry with the same token
4003   token expired          refresh the token, reconnect with the last cursor (also sent
                              mid-session when the feed must be reopened and none of the
                              user's sockets holds a valid token any more)
4004   forbidden              the token's user may not watch this user id (users watch only
                              themselves; admins anyone)
4005   too many sockets       the user already holds the maximum of concurrent sockets
                              (5, across every bridge replica); close one first
4006   slow consumer          the client did not read fast enough and its send queue
                              overflowed; reconnect with the last cursor
4007   upstream unavailable   the order service (or the auth service's key set) could not be
                              reached for longer than the grace period; retry later with
                              backoff and the last cursor
=====  =====================  ==========================================================

Nothing is lost by any of these closes: a client that reconnects with the cursor of the last
message it processed gets everything after it, once.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    GOING_AWAY = 1001
    BAD_REQUEST = 4000
    MISSING_TOKEN = 4001
    INVALID_TOKEN = 4002
    TOKEN_EXPIRED = 4003
    FORBIDDEN = 4004
    TOO_MANY_SOCKETS = 4005
    SLOW_CONSUMER = 4006
    UPSTREAM_UNAVAILABLE = 4007


class Refusal(Exception):
    """A socket is refused or ended for ``code``; the message is the close reason (kept under
    the 123 bytes a close frame allows)."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = short_reason(reason)


MAX_REASON_BYTES = 123


def short_reason(reason: str) -> str:
    """``reason`` cut to fit a close frame, on a character boundary."""
    encoded = reason.encode()
    if len(encoded) <= MAX_REASON_BYTES:
        return reason
    return encoded[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."
