"""TEMPORARY, until the gateway serves gateway/static through Envoy: serves the page's files
on a loopback port and forwards every other request to the public port, so the page's
same-origin REST calls work. It cannot carry the WebSocket: the live parts need the bridge."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from devstack.paths import REPO_ROOT

STATIC = REPO_ROOT / "gateway" / "static"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
HOP_BY_HOP = {"connection", "transfer-encoding", "content-length", "keep-alive", "host"}


@contextmanager
def serve(upstream: str) -> Iterator[str]:
    client = httpx.Client(base_url=upstream, timeout=30, trust_env=False)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _static(self) -> bool:
            name = "index.html" if self.path == "/" else self.path.removeprefix("/static/")
            path = STATIC / name
            if "/" in name or not path.is_file():
                return False
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", TYPES.get(path.suffix, "application/octet-stream"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            answer = client.request(
                self.command, self.path, headers=headers, content=self.rfile.read(length)
            )
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in HOP_BY_HOP | {"content-encoding"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def do_GET(self) -> None:
            if not self._static():
                self._forward()

        do_POST = do_DELETE = do_PATCH = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        client.close()
