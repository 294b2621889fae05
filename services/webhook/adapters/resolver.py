"""Name resolution for webhook targets, with a bound on how long a slow resolver may take.

An optional hosts file (``ORDERMESH_WEBHOOK_HOSTS_FILE``, the hosts(5) format: an address,
then names) is consulted first and re-read whenever it changes: for local use, and for the
tests, which control what a name resolves to between registration and a send."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from pathlib import Path

log = logging.getLogger(__name__)


class DnsResolver:
    def __init__(self, timeout_seconds: float = 5.0, hosts_file: Path | None = None) -> None:
        self._timeout = timeout_seconds
        self._hosts = _HostsFile(hosts_file) if hosts_file is not None else None

    async def resolve(self, host: str, port: int) -> list[str]:
        if self._hosts is not None:
            mapped = self._hosts.lookup(host)
            if mapped:
                return mapped
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, TimeoutError):
            return []
        return sorted({str(info[4][0]).partition("%")[0] for info in infos})


class _HostsFile:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._names: dict[str, list[str]] = {}

    def lookup(self, host: str) -> list[str]:
        self._refresh()
        return list(self._names.get(host.lower().rstrip("."), []))

    def _refresh(self) -> None:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            self._stamp, self._names = None, {}
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        names: dict[str, list[str]] = {}
        for number, line in enumerate(self._path.read_text().splitlines(), 1):
            fields = line.partition("#")[0].split()
            if len(fields) < 2:
                continue
            try:
                address = str(ipaddress.ip_address(fields[0]))
            except ValueError:
                log.warning(
                    "hosts file line ignored", extra={"file": str(self._path), "line": number}
                )
                continue
            for name in fields[1:]:
                names.setdefault(name.lower().rstrip("."), []).append(address)
        self._stamp, self._names = stamp, names
