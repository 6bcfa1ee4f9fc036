"""An outbound HTTP proxy on loopback, as a customer's network puts one in front of the internet.

Plain HTTP requests come with an absolute URI (``GET http://host:port/path``) and are forwarded
to their host; HTTPS requests open a tunnel with ``CONNECT host:443``, which this proxy records
and refuses (403), as a proxy does for a host it does not allow. ``seen`` lists every request as
``(method, host:port)``.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_CONNECT(self) -> None:
        self.server.owner.record("CONNECT", self.path)
        self.send_response(403, "Forbidden by the proxy")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _forward(self) -> None:
        target = urlsplit(self.path)
        self.server.owner.record(self.command, target.netloc)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP}
        upstream = http.client.HTTPConnection(target.hostname or "", target.port or 80, timeout=10)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path or "/", body=body, headers=headers)
            answer = upstream.getresponse()
            payload = answer.read()
            self.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            upstream.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_MERGE = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: FakeProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner


class FakeProxy:
    def __init__(self) -> None:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._lock = threading.Lock()
        self._seen: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def record(self, method: str, target: str) -> None:
        with self._lock:
            self._seen.append((method, target))

    @property
    def seen(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._seen)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
