"""The HTTP POST of a delivery, made so the address checked is the address called.

Each send resolves the host afresh, refuses it if any address it resolves to is not public
(or allow-listed), then opens the TCP connection to one of those checked addresses itself;
TLS still verifies the certificate against the host name (SNI). One request per connection
(``Connection: close``), HTTP/1.1 spoken with h11, redirects never followed (a 3xx is an
answer like any other), and at most ``body_limit`` bytes of the response read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import Callable

import h11

from services.webhook.domain.model import Target
from services.webhook.domain.ports import DeliveryError, HostResolver, Response
from services.webhook.domain.rules import Address, refused_addresses

USER_AGENT = "ordermesh-webhooks/1"
READ_CHUNK = 4096


class CheckedPoster:
    def __init__(
        self,
        resolver: HostResolver,
        *,
        allowed: Callable[[Address], bool],
        connect_timeout: float,
        total_timeout: float,
        body_limit: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._resolver = resolver
        self._allowed = allowed
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._body_limit = body_limit
        self._ssl = ssl_context or ssl.create_default_context()

    async def post(self, target: Target, headers: dict[str, str], body: bytes) -> Response:
        deadline = asyncio.get_running_loop().time() + self._total_timeout
        try:
            async with asyncio.timeout_at(deadline):
                addresses = await self._checked_addresses(target)
                reader, writer = await self._connect(target, addresses)
        except TimeoutError:
            raise DeliveryError(
                f"timed out after {self._total_timeout:g} s before a connection"
            ) from None
        try:
            return await self._exchange(target, headers, body, (reader, writer), deadline)
        finally:
            # The request said "Connection: close" and the answer is read: drop the
            # connection at once (a TLS close would wait for the peer's close_notify).
            writer.transport.abort()

    async def _checked_addresses(self, target: Target) -> list[str]:
        addresses = await self._resolver.resolve(target.host, target.port)
        if not addresses:
            raise DeliveryError(f"host {target.host!r} does not resolve")
        refused = refused_addresses(addresses, self._allowed)
        if refused:
            raise DeliveryError(
                f"refused: host {target.host!r} resolves to non-public addresses"
                f" ({', '.join(refused)})",
                refused=True,
            )
        return addresses

    async def _connect(
        self, target: Target, addresses: list[str]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        tls = target.scheme == "https"
        problems = []
        for address in addresses:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    return await asyncio.open_connection(
                        address,
                        target.port,
                        ssl=self._ssl if tls else None,
                        server_hostname=target.host if tls else None,
                    )
            except TimeoutError:
                problems.append(f"{address}: connect timed out after {self._connect_timeout:g} s")
            except (OSError, ssl.SSLError) as error:
                problems.append(f"{address}: {error.strerror or error}")
        raise DeliveryError("could not connect: " + "; ".join(problems))

    async def _exchange(
        self,
        target: Target,
        headers: dict[str, str],
        body: bytes,
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        deadline: float,
    ) -> Response:
        reader, writer = streams
        connection = h11.Connection(our_role=h11.CLIENT)
        host = f"[{target.host}]" if _is_ipv6(target.host) else target.host
        if target.port != (443 if target.scheme == "https" else 80):
            host += f":{target.port}"
        request = h11.Request(
            method="POST",
            target=target.request_target,
            headers=[
                ("Host", host),
                ("User-Agent", USER_AGENT),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
                *headers.items(),
            ],
        )
        try:
            async with asyncio.timeout_at(deadline):
                writer.write(connection.send(request) or b"")
                writer.write(connection.send(h11.Data(data=body)) or b"")
                writer.write(connection.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                response = await self._head(connection, reader)
            return await self._body(connection, reader, response, deadline)
        except TimeoutError:
            raise DeliveryError(
                f"timed out after {self._total_timeout:g} s without a complete response"
            ) from None
        except h11.ProtocolError as error:
            raise DeliveryError(f"malformed HTTP response: {error}") from None
        except (OSError, ssl.SSLError) as error:
            raise DeliveryError(f"connection failed: {error.strerror or error}") from None

    async def _head(self, connection: h11.Connection, reader: asyncio.StreamReader) -> h11.Response:
        """The status line and headers (interim 1xx answers skipped)."""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(READ_CHUNK))
            elif isinstance(event, h11.Response):
                return event
            elif isinstance(event, h11.ConnectionClosed):
                raise DeliveryError("the connection closed before a response")

    async def _body(
        self,
        connection: h11.Connection,
        reader: asyncio.StreamReader,
        head: h11.Response,
        deadline: float,
    ) -> Response:
        """The answer with the start of its body: reading stops at ``body_limit`` bytes, at
        the end of the body, or at the deadline (the status decides the outcome; the body is
        only shown in the log)."""
        received = bytearray()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while len(received) < self._body_limit:
                    event = connection.next_event()
                    if event is h11.NEED_DATA:
                        connection.receive_data(await reader.read(READ_CHUNK))
                    elif isinstance(event, h11.Data):
                        received += event.data
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
        return Response(
            status=head.status_code,
            headers={
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in head.headers
            },
            body_start=bytes(received[: self._body_limit]),
        )


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False
