"""Memory per idle socket of the WebSocket bridge (``python -m gateway``).

    python bench/gateway_memory.py [--sockets 2000] [--per-user 1] [--batch 100]

Self-contained: it runs a real bridge process against stand-ins it serves itself on
loopback (the auth service's JWKS, and an order service whose ``WatchOrders`` streams send a
bookmark and then only heartbeats), so no stack is needed; with ``ORDERMESH_REDIS_URL``
pointing at a Redis (``make up`` runs one) the socket leases go there, otherwise the bridge
falls back to its per-process limit, which this bench raises out of the way.

It opens ``--sockets`` sockets, ``--per-user`` per watched user (1: every socket has its own
upstream subscription, the worst case; 5: the most a user may hold), in paced batches, waits
until every one is live (its first heartbeat), lets the process settle, and prints the
bridge's resident memory before and after, per socket; then as many again beside them. The
figures are RSS growth, so they include everything a socket costs the process: the
connection, its two tasks, its share of a feed and of the gRPC stream behind it. The first
fill also carries one-off costs (allocator arenas, the high-water mark of a batch of
concurrent handshakes and token verifications); the second is the marginal cost.

:func:`idle_socket_memory` is the reusable part: give it the bridge's pid and a way to open
one live socket, and it returns the figures (bench/realtime.py builds on it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from ordermesh.auth.v1 import auth_pb2
from ordermesh.order.v1 import order_pb2
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import plots

REPO = Path(__file__).resolve().parents[1]
ISSUER, AUDIENCE = "ordermesh-bench", "ordermesh-bench"
KID = "bench-key"
PAGE = 4096


@dataclass(frozen=True)
class MemoryFigures:
    sockets: int
    rss_before: int
    rss_after: int

    @property
    def per_socket(self) -> float:
        return (self.rss_after - self.rss_before) / self.sockets

    def lines(self) -> list[str]:
        return [
            f"sockets            {self.sockets}",
            f"bridge RSS before  {self.rss_before / 2**20:.1f} MiB",
            f"bridge RSS after   {self.rss_after / 2**20:.1f} MiB",
            f"per idle socket    {self.per_socket / 1024:.1f} KiB   (goal: under 20 KB)",
        ]


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def until_live(ws: ClientConnection, within: float = 30.0) -> None:
    """Until the bridge says the socket is live (its first heartbeat)."""
    async with asyncio.timeout(within):
        while json.loads(await ws.recv())["type"] != "heartbeat":
            pass


async def idle_socket_memory(
    pid: int,
    open_socket: Callable[[int], Awaitable[ClientConnection]],
    count: int,
    *,
    batch: int = 100,
    settle_seconds: float = 3.0,
    samples: list[tuple[int, int]] | None = None,
) -> tuple[MemoryFigures, list[ClientConnection]]:
    """Opens ``count`` sockets with ``open_socket(i)`` (which returns once socket ``i`` is
    live), ``batch`` at a time, and measures the bridge's (``pid``) RSS growth. Returns the
    figures and the open sockets (the caller closes them). With ``samples``, appends
    (sockets open, RSS) before, after each batch and after the settle (for --plot)."""
    await asyncio.sleep(settle_seconds)
    before = rss_bytes(pid)
    if samples is not None:
        samples.append((0, before))
    sockets: list[ClientConnection] = []
    for start in range(0, count, batch):
        opened = await asyncio.gather(
            *(open_socket(i) for i in range(start, min(start + batch, count)))
        )
        sockets.extend(opened)
        if samples is not None:
            samples.append((len(sockets), rss_bytes(pid)))
    await asyncio.sleep(settle_seconds)
    after = rss_bytes(pid)
    if samples is not None:
        samples.append((len(sockets), after))
    return MemoryFigures(count, before, after), sockets


# --- the self-contained set-up -------------------------------------------------------------


class _StandIns:
    """The auth service's GetJwks and an idle order service's WatchOrders."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.jwks = auth_pb2.GetJwksResponse(
            keys=[
                auth_pb2.Jwk(
                    kty="RSA", kid=KID, use="sig", alg="RS256", n=public["n"], e=public["e"]
                )
            ]
        )

    async def get_jwks(self, request: Any, context: Any) -> auth_pb2.GetJwksResponse:
        return self.jwks

    async def watch_orders(
        self, request: order_pb2.WatchOrdersRequest, context: Any
    ) -> AsyncIterator[order_pb2.WatchOrdersResponse]:
        # Every stream of a user is at the same (empty) position, as with the order service.
        position = "00000000bench000.0-0"
        while True:
            yield order_pb2.WatchOrdersResponse(heartbeat=True, cursor=position)
            await asyncio.sleep(15)


async def _serve_stand_ins(key: rsa.RSAPrivateKey) -> tuple[grpc.aio.Server, int]:
    stand_ins = _StandIns(key)
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 100_000)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "ordermesh.auth.v1.AuthService",
                {
                    "GetJwks": grpc.unary_unary_rpc_method_handler(
                        stand_ins.get_jwks,
                        request_deserializer=auth_pb2.GetJwksRequest.FromString,
                        response_serializer=auth_pb2.GetJwksResponse.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "ordermesh.order.v1.OrderService",
                {
                    "WatchOrders": grpc.unary_stream_rpc_method_handler(
                        stand_ins.watch_orders,
                        request_deserializer=order_pb2.WatchOrdersRequest.FromString,
                        response_serializer=order_pb2.WatchOrdersResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _token(key: rsa.RSAPrivateKey, user_id: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user_id,
        "role": "user",
        "tier": "free",
        "iat": now,
        "exp": now + 3600,
        "typ": "access",
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def bridge_process(upstream_port: int, sockets: int) -> AsyncIterator[tuple[int, int]]:
    """A ``python -m gateway`` process against the stand-ins: (pid, port)."""
    port = _free_port()
    env = {
        **os.environ,
        "ORDERMESH_ENV": "test",
        "ORDERMESH_GATEWAY_PORT": str(port),
        "ORDER_SERVICE_ADDR": f"127.0.0.1:{upstream_port}",
        "AUTH_SERVICE_ADDR": f"127.0.0.1:{upstream_port}",
        "ORDERMESH_JWT_ISSUER": ISSUER,
        "ORDERMESH_JWT_AUDIENCE": AUDIENCE,
        "ORDERMESH_GATEWAY_MAX_SOCKETS_PER_USER": str(sockets),
        "ORDERMESH_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", env=env, cwd=REPO, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if process.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError("the bridge did not start") from None
                await asyncio.sleep(0.2)
                continue
            writer.close()
            await writer.wait_closed()
            break
        yield process.pid, port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


async def main_async(
    count: int,
    per_user: int,
    batch: int,
    curves: dict[str, list[tuple[int, int]]] | None = None,
) -> MemoryFigures:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    upstream, upstream_port = await _serve_stand_ins(key)
    users = [str(uuid.uuid4()) for _ in range(-(-2 * count // per_user))]
    tokens = {user: _token(key, user) for user in users}
    try:
        async with bridge_process(upstream_port, max(per_user, 5)) as (pid, port):

            async def open_socket(index: int) -> ClientConnection:
                user = users[index // per_user]
                ws = await connect(
                    f"ws://127.0.0.1:{port}/ws/orders/{user}",
                    additional_headers={"Authorization": f"Bearer {tokens[user]}"},
                    compression=None,
                    max_queue=4,
                    open_timeout=30,
                )
                await until_live(ws)
                return ws

            first_samples = curves.setdefault("first", []) if curves is not None else None
            first, held = await idle_socket_memory(
                pid, open_socket, count, batch=batch, samples=first_samples
            )
            print(f"the first {count} sockets, from a fresh process (start-up included):")
            print("\n".join(first.lines()))

            async def open_more(index: int) -> ClientConnection:
                return await open_socket(count + index)

            more_samples = curves.setdefault("more", []) if curves is not None else None
            more, sockets = await idle_socket_memory(
                pid, open_more, count, batch=batch, samples=more_samples
            )
            await asyncio.gather(*(ws.close() for ws in [*held, *sockets]))
            print(f"{count} more beside them (what each further idle socket costs):")
            return more
    finally:
        await upstream.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--per-user", type=int, default=1, help="sockets per watched user")
    parser.add_argument("--batch", type=int, default=100)
    plots.add_plot_argument(parser, "gateway_memory")
    args = parser.parse_args()
    print(f"sockets per watched user: {args.per_user}")
    curves: dict[str, list[tuple[int, int]]] | None = {} if args.plot is not None else None
    figures = asyncio.run(main_async(args.sockets, args.per_user, args.batch, curves))
    print("\n".join(figures.lines()))
    if args.plot is not None and curves is not None:
        plot(args.plot, args.sockets, curves)


def plot(directory: Path, count: int, curves: dict[str, list[tuple[int, int]]]) -> None:
    """--plot: the bridge's RSS against the sockets open, for the first ``count`` sockets
    (from a fresh process) and for ``count`` more beside them (sampled after each batch and
    once more after the settle, at the same count)."""
    labels = {
        "first": f"the first {count:,} sockets (fresh process)",
        "more": f"{count:,} more beside them",
    }
    offsets = {"first": 0, "more": count}
    plots.print_written(
        [
            plots.lines(
                directory,
                "bridge-rss-by-sockets",
                "gateway bridge: resident memory against idle WebSockets open",
                {
                    labels[key]: [(n + offsets[key], rss / 2**20) for n, rss in samples]
                    for key, samples in curves.items()
                },
                xlabel="idle WebSockets open",
                ylabel="bridge RSS (MiB)",
            )
        ]
    )


if __name__ == "__main__":
    main()
