"""Common base for the local fake services: a real HTTP(S) server on loopback with a request log.

A fake subclasses ``FakeServer``, lists its routes (method + regex on the raw, still
percent-encoded path) and answers in the real service's shapes. Tests get:

- a request log of frozen ``RecordedRequest`` records (``requests``, ``requests_to``,
  ``clear_log``), every request recorded on arrival, scripted ones included;
- failure injection consumed before normal handling: ``fail_next`` (scripted status,
  headers, body), ``delay_next`` (stall, then answer normally: read timeouts) and
  ``drop_next`` (close the connection without an answer);
- failure injection after handling, the lost answer: ``drop_after_handling`` (the work is
  done, the connection closes), ``fail_after_handling`` (done, answered with an error) and
  ``delay_after_handling`` (done, answered late: a read timeout);
- ``handler_errors``: exceptions raised by the fake's own handlers (answered as 500), so a
  test can assert the fake itself did not break.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import trustme

LOOPBACK = "127.0.0.1"
# How often serve_forever looks at the shutdown flag: bounds how long stop() takes.
POLL_INTERVAL = 0.05
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_QUIET_ERRORS = (ConnectionError, TimeoutError, ssl.SSLError, OSError)


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive request headers; ``get_all`` keeps repeated ones."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items = tuple(items)
        folded: dict[str, str] = {}
        for name, value in self._items:
            folded.setdefault(name.lower(), value)
        self._folded = folded

    def __getitem__(self, name: str) -> str:
        return self._folded[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._folded

    def __iter__(self) -> Iterator[str]:
        return iter(self._folded)

    def __len__(self) -> int:
        return len(self._folded)

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self._items if key.lower() == name.lower()]

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"


def _freeze_multi(parsed: dict[str, list[str]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({name: tuple(values) for name, values in parsed.items()})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it. Multi-valued maps hold tuples in arrival order."""

    at: float  # time.monotonic() on arrival: measure retry spacing with this
    wall_time: float  # time.time() on arrival
    method: str
    path: str  # raw path without the query string (still percent-encoded)
    target: str  # raw request target: path plus query string
    query: Mapping[str, tuple[str, ...]]
    headers: Headers
    body: bytes
    form: Mapping[str, tuple[str, ...]] | None  # only for form-encoded bodies, blanks kept
    json: Any  # parsed body when the content type is JSON and it parses, else None
    # "fail", "delay" or "drop" when failure injection answered it instead of the service;
    # "drop-after", "fail-after" or "delay-after" when the service acted and its answer was lost
    scripted: str | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    def form_value(self, name: str) -> str | None:
        """The first value of a form field (None when absent or not a form body)."""
        values = (self.form or {}).get(name)
        return values[0] if values else None

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Response:
    """What a route handler answers."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
        merged = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status, json.dumps(payload).encode("utf-8"), merged)


Handler = Callable[[RecordedRequest, re.Match[str]], Response]
RequestFilter = str | Callable[[RecordedRequest], bool] | None


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def route(method: str, pattern: str, handler: Handler) -> Route:
    """A route whose regex must match the whole raw path (query excluded)."""
    return Route(method.upper(), re.compile(pattern), handler)


def request_filter(match: RequestFilter) -> Callable[[RecordedRequest], bool]:
    """``None`` = any request; ``"/path"`` = path prefix; ``"POST /path"`` = method and prefix; or a predicate."""
    if match is None:
        return lambda _request: True
    if callable(match):
        return match
    method, _, prefix = match.partition(" ")
    if prefix and method.upper() in _HTTP_METHODS:
        return lambda request: request.method == method.upper() and request.path.startswith(prefix)
    return lambda request: request.path.startswith(match)


@dataclass
class _Script:
    kind: str  # "fail" | "delay" | "drop", or "drop-after" | "fail-after" | "delay-after"
    remaining: int
    accepts: Callable[[RecordedRequest], bool]
    response: Response | None = None
    seconds: float = 0.0


def parse_request(method: str, target: str, header_items: Iterable[tuple[str, str]], body: bytes) -> RecordedRequest:
    """Build the log record; form and JSON bodies are parsed when their content type says so."""
    split = urlsplit(target)
    headers = Headers(header_items)
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    form = None
    parsed_json = None
    if content_type == FORM_CONTENT_TYPE:
        form = _freeze_multi(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
    elif content_type == "application/json" or content_type.endswith("+json"):
        try:
            parsed_json = json.loads(body) if body else None
        except ValueError:
            parsed_json = None
    return RecordedRequest(
        at=time.monotonic(),
        wall_time=time.time(),
        method=method.upper(),
        path=split.path,
        target=target,
        query=_freeze_multi(parse_qs(split.query, keep_blank_values=True)),
        headers=headers,
        body=body,
        form=form,
        json=parsed_json,
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, so one slow or
        # distrustful client never blocks the accept loop.
        connection = self.fake._track(request)
        try:
            if self.fake.ssl_context is not None:
                try:
                    connection = self.fake.ssl_context.wrap_socket(request, server_side=True)
                except _QUIET_ERRORS:
                    return
                self.fake._track(connection)
            self.RequestHandlerClass(connection, client_address, self)
        finally:
            self.fake._untrack(request)
            self.fake._untrack(connection)
            if connection is not request:
                connection.close()  # socketserver only closes the raw socket it accepted

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts, dropped answers) are routine here, not news.
        pass


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services answer
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        # Bodies come with Content-Length from every client used here (no chunked uploads).
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = parse_request(self.command, self.path, self.headers.items(), body)
        response = self.server.fake._answer(request)
        if response is None:
            self.close_connection = True  # drop: hang up without a status line
            return
        self._write(response)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeServer:
    """A fake service on 127.0.0.1 in a daemon thread; subclasses define ``routes()``."""

    service_name = "fake"

    def __init__(self, *, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self._requested_port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._log: list[RecordedRequest] = []
        self._scripts: list[_Script] = []
        self._connections: set[socket.socket] = set()
        self._routes: list[Route] | None = None
        self._stopping = threading.Event()
        self.handler_errors: list[BaseException] = []

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _Server((LOOPBACK, self._requested_port), _RequestHandler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name=f"{self.service_name}-{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut open connections (stalled answers included) and join the thread."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{self.service_name} is not started")
        return self._httpd.server_address[1]

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def base_url(self) -> str:
        """``scheme://127.0.0.1:PORT`` without a trailing slash."""
        return f"{self.scheme}://{LOOPBACK}:{self.port}"

    def _track(self, connection: socket.socket) -> socket.socket:
        # Headers and body leave in two writes: without TCP_NODELAY each keep-alive answer waits for
        # the client's delayed ACK (about 40 ms).
        with contextlib.suppress(OSError):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._connections.add(connection)
        return connection

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    # --- request log -----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request so far, oldest first."""
        with self._lock:
            return list(self._log)

    def requests_to(self, match: RequestFilter = None) -> list[RecordedRequest]:
        """Logged requests by path prefix, ``"METHOD /prefix"`` or predicate."""
        accepts = request_filter(match)
        return [request for request in self.requests if accepts(request)]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # --- failure injection -----------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        match: RequestFilter = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` instead of handling them.

        ``headers`` default to ``{"Retry-After": "2"}`` for 429 and 503; ``body`` defaults to
        the service's own error body for that status (a dict is sent as JSON).
        """
        if headers is None:
            headers = {"Retry-After": "2"} if status in (429, 503) else {}
        response = self._scripted_response(status, dict(headers), body)
        self._add_script(_Script("fail", n, request_filter(match), response=response))

    def delay_next(self, n: int = 1, seconds: float = 1.0, match: RequestFilter = None) -> None:
        """Stall the next ``n`` matching requests for ``seconds``, then handle them normally."""
        self._add_script(_Script("delay", n, request_filter(match), seconds=seconds))

    def drop_next(self, n: int = 1, match: RequestFilter = None) -> None:
        """Close the connection of the next ``n`` matching requests without answering."""
        self._add_script(_Script("drop", n, request_filter(match)))

    def drop_after_handling(self, n: int = 1, match: RequestFilter = None) -> None:
        """Handle the next ``n`` matching requests, then close the connection without answering:
        the work is done and its answer is lost (a reset after the provider acted)."""
        self._add_script(_Script("drop-after", n, request_filter(match)))

    def fail_after_handling(self, n: int = 1, status: int = 500, match: RequestFilter = None) -> None:
        """Handle the next ``n`` matching requests, then answer ``status`` instead of the result:
        the work is done, the client is told it failed."""
        response = self._scripted_response(status, {}, None)
        self._add_script(_Script("fail-after", n, request_filter(match), response=response))

    def delay_after_handling(self, n: int = 1, seconds: float = 1.0, match: RequestFilter = None) -> None:
        """Handle the next ``n`` matching requests, then stall ``seconds`` before answering: a
        client with a shorter read timeout gives up after the work was done."""
        self._add_script(_Script("delay-after", n, request_filter(match), seconds=seconds))

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def _add_script(self, script: _Script) -> None:
        if script.remaining < 1:
            raise ValueError("n must be at least 1")
        with self._lock:
            self._scripts.append(script)

    def _scripted_response(self, status: int, headers: dict[str, str], body: bytes | str | Mapping | None) -> Response:
        default = self.error_response(status, self.default_error_message(status))
        if body is None:
            return Response(status, default.body, {**default.headers, **headers})
        if isinstance(body, Mapping):
            return Response.json(status, dict(body), {**default.headers, **headers})
        raw = body.encode("utf-8") if isinstance(body, str) else body
        return Response(status, raw, {"Content-Type": default.headers.get("Content-Type", "text/plain"), **headers})

    def _take_script(self, request: RecordedRequest) -> _Script | None:
        with self._lock:
            for script in self._scripts:
                if script.accepts(request):
                    script.remaining -= 1
                    if script.remaining == 0:
                        self._scripts.remove(script)
                    return script
        return None

    # --- answering -------------------------------------------------------------------

    def _answer(self, request: RecordedRequest) -> Response | None:
        script = self._take_script(request)
        if script is not None:
            request = replace(request, scripted=script.kind)
        with self._lock:
            self._log.append(request)
        if script is not None and script.kind == "drop":
            return None
        if script is not None and script.kind == "fail":
            return script.response
        if script is not None and script.kind == "delay" and self._stopping.wait(script.seconds):
            return None  # stopping: do not keep the thread (or the client) hanging
        response = self._route(request)
        if script is None or not script.kind.endswith("-after"):
            return response
        if script.kind == "drop-after":
            return None
        if script.kind == "fail-after":
            return script.response
        self._stopping.wait(script.seconds)  # delay-after: answer late (or never, when stopping)
        return response

    def _route(self, request: RecordedRequest) -> Response:
        path_known = False
        for candidate in self._routes_cached():
            found = candidate.pattern.fullmatch(request.path)
            if found is None:
                continue
            path_known = True
            if candidate.method == request.method:
                try:
                    return candidate.handler(request, found)
                except Exception as error:  # the fake broke: tell the test, answer like a server would
                    with self._lock:
                        self.handler_errors.append(error)
                    return self.error_response(500, f"{self.service_name} fake failed: {error!r}")
        if path_known:
            return self.error_response(405, f"The requested resource does not support http method '{request.method}'.")
        return self.not_found(request)

    def _routes_cached(self) -> list[Route]:
        if self._routes is None:
            self._routes = list(self.routes())
        return self._routes

    # --- hooks for subclasses -----------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        return []

    def error_response(self, status: int, message: str) -> Response:
        """An error in the service's own shape; subclasses override."""
        return Response.json(status, {"error": {"code": str(status), "message": message}})

    def not_found(self, request: RecordedRequest) -> Response:
        return self.error_response(404, f"No resource at {request.path}")

    def default_error_message(self, status: int) -> str:
        return {
            429: "Too Many Requests",
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            504: "Gateway Timeout",
        }.get(status, f"HTTP {status}")


class TlsFakeServer(FakeServer):
    """A fake behind HTTPS with a certificate for 127.0.0.1 and localhost from a test CA.

    Pass the same ``trustme.CA`` to several fakes so one CA file serves them all. The CA
    certificate is written to ``ca_pem_path`` on start and deleted on stop; hand that path
    to clients (``connection_verify=`` for azure-core, ``verify=`` per request for requests).
    """

    def __init__(self, *, ca: trustme.CA | None = None, port: int = 0) -> None:
        self.ca = ca if ca is not None else trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(LOOPBACK, "localhost").configure_cert(context)
        super().__init__(port=port, ssl_context=context)
        self._ca_pem_path: Path | None = None

    @property
    def ca_pem_path(self) -> str:
        if self._ca_pem_path is None:
            raise RuntimeError(f"{self.service_name} is not started: no CA file yet")
        return str(self._ca_pem_path)

    def start(self) -> Self:
        if self._ca_pem_path is None:
            handle, name = tempfile.mkstemp(prefix=f"{self.service_name}-ca-", suffix=".pem")
            with os.fdopen(handle, "wb") as pem:
                pem.write(self.ca.cert_pem.bytes())
            self._ca_pem_path = Path(name)
        return super().start()

    def stop(self) -> None:
        super().stop()
        if self._ca_pem_path is not None:
            self._ca_pem_path.unlink(missing_ok=True)
            self._ca_pem_path = None
