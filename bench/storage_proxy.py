"""A counting reverse proxy for Azurite's table and queue services.

The app is given a connection string whose endpoints point at the proxy; each request is
forwarded unchanged (method, path, query, headers, body) to Azurite and its answer returned
unchanged, apart from hop-by-hop headers. Shared-key signatures cover the account, path and
selected headers, not the host, so they still verify behind the proxy.

Every request is counted by service, resource (table or queue name), kind and status, so a
benchmark can say how many storage operations one piece of work costs.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LOOPBACK = "127.0.0.1"
# Not forwarded back: they describe the upstream connection, not the answer.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})
_ENTITY = re.compile(r"^(?P<table>[^(]+)\((?P<keys>.*)\)$")
UPSTREAM_TIMEOUT = 30.0

# Kinds, per service.
TABLE_KINDS = ("insert", "upsert", "update", "read", "query", "delete", "batch", "other")
QUEUE_KINDS = ("put", "get", "poll", "delete", "update", "peek", "other")


@dataclass(frozen=True)
class Key:
    """What one request was: ``service`` table/queue, the table or queue, the kind, the answer's status."""

    service: str
    resource: str
    kind: str
    status: int


@dataclass(frozen=True)
class TraceLine:
    at: float  # time.monotonic() when the answer came back
    key: Key
    method: str
    path: str


def classify_table(method: str, path: str, headers: Any, prefix: str) -> tuple[str, str]:
    """(table, kind) of a Table service request; ``prefix`` is cut from table names for display."""
    parts = [unquote(part) for part in path.split("/") if part]
    name = parts[1] if len(parts) > 1 else ""
    if name == "$batch":
        return "", "batch"
    if name.startswith("Tables"):
        return "", "other"  # create, list or delete a table
    found = _ENTITY.match(name)
    table = (found["table"] if found else name).removeprefix(prefix)
    if found and found["keys"]:
        if method == "GET":
            return table, "read"
        if method in ("PUT", "PATCH", "MERGE"):
            # With If-Match the SDK updates a row that must exist; without, it inserts or replaces.
            return table, "update" if headers.get("If-Match") else "upsert"
        if method == "DELETE":
            return table, "delete"
        return table, "other"
    if method == "POST":
        return table, "insert"
    if method == "GET":
        return table, "query"
    return table, "other"


def classify_queue(method: str, path: str, query: str) -> tuple[str, str]:
    """(queue, kind) of a Queue service request; an empty GET is classified after the answer."""
    parts = [unquote(part) for part in path.split("/") if part]
    queue = parts[1] if len(parts) > 1 else ""
    if len(parts) == 3 and parts[2] == "messages":
        if method == "POST":
            return queue, "put"
        if method == "GET":
            peek = parse_qs(query).get("peekonly", [""])[0].lower() == "true"
            return queue, "peek" if peek else "get"
        return queue, "other"  # DELETE here clears the queue
    if len(parts) == 4 and parts[2] == "messages":
        if method == "DELETE":
            return queue, "delete"
        if method == "PUT":
            return queue, "update"
    return queue, "other"  # create, delete, metadata, list


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: CountingProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up is routine


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._forward()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_MERGE = do_GET

    def _forward(self) -> None:
        proxy = self.server.proxy
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._answer_error(501, b"chunked request bodies are not forwarded")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, reason, headers, payload = self._exchange(body)
        except (OSError, http.client.HTTPException) as error:
            proxy.upstream_failed()
            self._answer_error(502, f"upstream failed: {error!r}".encode())
            return
        proxy.count(self.command, self.path, self.headers, status, payload)
        kept = [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]
        if self.command == "HEAD":
            kept += [(name, value) for name, value in headers if name.lower() == "content-length"]
            payload = b""
        else:
            kept.append(("Content-Length", str(len(payload))))
        self._write(status, reason, kept, payload)

    def _write(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes) -> None:
        # One write for head and body: two small writes meet delayed ACKs and stall each answer ~40 ms.
        head = [f"{self.protocol_version} {status} {reason}".encode("latin-1", "replace")]
        head += [f"{name}: {value}".encode("latin-1", "replace") for name, value in headers]
        self.wfile.write(b"\r\n".join(head) + b"\r\n\r\n" + payload)

    def _exchange(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        # One upstream connection per client connection, kept alive like the client's own.
        for attempt in (1, 2):
            reused = self._upstream is not None
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(LOOPBACK, self.server.proxy.upstream_port,
                                                            timeout=UPSTREAM_TIMEOUT)
                self._upstream.connect()
                self._upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = self._upstream
            try:
                connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    connection.putheader(name, value)
                connection.endheaders(body or None)
                response = connection.getresponse()
                payload = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop_upstream()
                # Azurite closes idle keep-alive connections: a request on a reused one that
                # is cut at once was not served, so it is sent once more on a new connection.
                if reused and attempt == 1:
                    continue
                raise
            except BaseException:
                self._drop_upstream()
                raise
            if response.will_close:
                self._drop_upstream()
            return response.status, response.reason, response.getheaders(), payload
        raise AssertionError("unreachable")

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def _answer_error(self, status: int, message: bytes) -> None:
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(message)))]
        self._write(status, "Proxy Error", headers, message)

    def finish(self) -> None:
        self._drop_upstream()
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class CountingProxy:
    """Forwards 127.0.0.1:<port> to Azurite's ``service`` ("table" or "queue") port, counting each request."""

    def __init__(self, service: str, upstream_port: int, table_prefix: str = "") -> None:
        if service not in ("table", "queue"):
            raise ValueError("service is 'table' or 'queue'")
        self.service = service
        self.upstream_port = upstream_port
        self.table_prefix = table_prefix
        self.upstream_errors = 0
        self._counts: Counter[Key] = Counter()
        self._messages_received: Counter[str] = Counter()
        self._trace: list[TraceLine] | None = None
        self._last_work = time.monotonic()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> CountingProxy:
        server = _Server((LOOPBACK, 0), _Handler)
        server.proxy = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.service}-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    # --- counting ----------------------------------------------------------------------------

    def count(self, method: str, target: str, headers: Any, status: int, payload: bytes) -> None:
        split = urlsplit(target)
        if self.service == "table":
            resource, kind = classify_table(method, split.path, headers, self.table_prefix)
            received = 0
        else:
            resource, kind = classify_queue(method, split.path, split.query)
            received = payload.count(b"<QueueMessage>") if kind == "get" else 0
            if kind == "get" and received == 0 and status == 200:
                kind = "poll"  # an empty receive: the host looking for work
        key = Key(self.service, resource, kind, status)
        now = time.monotonic()
        with self._lock:
            self._counts[key] += 1
            if received:
                self._messages_received[resource] += received
            if kind != "poll":
                self._last_work = now
                if self._trace is not None:
                    self._trace.append(TraceLine(now, key, method, split.path))

    def upstream_failed(self) -> None:
        with self._lock:
            self.upstream_errors += 1

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._messages_received.clear()
            self.upstream_errors = 0

    def snapshot(self) -> Counter[Key]:
        with self._lock:
            return Counter(self._counts)

    def messages_received(self) -> Counter[str]:
        with self._lock:
            return Counter(self._messages_received)

    def start_trace(self) -> None:
        with self._lock:
            self._trace = []

    def stop_trace(self) -> list[TraceLine]:
        with self._lock:
            trace, self._trace = self._trace or [], None
        return trace

    def idle_for(self) -> float:
        """Seconds since the last request other than an empty poll."""
        with self._lock:
            return time.monotonic() - self._last_work


def total(counts: Counter[Key], service: str | None = None, resource: str | None = None,
          kinds: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> int:
    """The number of counted requests matching every filter given."""
    wanted = None if kinds is None else set(kinds)
    skipped = set(exclude)
    return sum(n for key, n in counts.items()
               if (service is None or key.service == service) and (resource is None or key.resource == resource)
               and (wanted is None or key.kind in wanted) and key.kind not in skipped)


def wait_idle(proxies: Iterable[CountingProxy], quiet: float = 0.5, timeout: float = 10.0) -> None:
    """Wait until no proxy has forwarded anything but empty polls for ``quiet`` seconds."""
    proxies = list(proxies)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if min(proxy.idle_for() for proxy in proxies) >= quiet:
            return
        time.sleep(0.05)
    raise TimeoutError(f"storage traffic did not stop for {quiet} s within {timeout} s")
