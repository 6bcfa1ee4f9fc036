"""HTTP triggers on a stdlib ThreadingHTTPServer: routes, auth levels and answers as the host gives them."""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

import azure.functions as func

from devhost.cpu import hosting_cpu

if TYPE_CHECKING:
    from devhost.functions import AccessKeys, HostedFunction

log = logging.getLogger("devhost.http")

# The Functions host refuses request bodies above 100 MB (maxRequestBodySize).
MAX_REQUEST_BODY = 100 * 1024 * 1024
KEY_HEADER = "x-functions-key"
KEY_QUERY_PARAMETER = "code"
FAILURE_BODY = b"Internal Server Error: the function failed; see the devhost log"
# devhost's own CPU so far (master key), outside the route prefix as the host's own admin API is.
HOSTING_CPU_PATH = "/admin/devhost/cpu"

# Segment ranks for route precedence, as ASP.NET orders them: literal text beats a
# segment that mixes text and parameters, which beats a parameter, then an optional one,
# then a catch-all.
_LITERAL, _COMPLEX, _PARAMETER, _OPTIONAL, _CATCH_ALL = range(5)
_PARAMETER_TOKEN = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class RouteParameter:
    name: str
    optional: bool
    catch_all: bool


def parse_parameter(token: str) -> RouteParameter:
    """``name``, ``name?``, ``name:int``, ``name:int?``, ``name=default``, ``*rest`` (constraints ignored)."""
    catch_all = token.startswith("*")
    token = token.lstrip("*")
    optional = token.endswith("?") or "=" in token
    name = re.split(r"[:?=]", token, maxsplit=1)[0]
    return RouteParameter(name=name, optional=optional, catch_all=catch_all)


@dataclass(frozen=True)
class CompiledRoute:
    pattern: re.Pattern[str]
    parameter_names: tuple[str, ...]
    precedence: tuple[int, ...]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if found is None:
            return None
        values = {}
        for index, name in enumerate(self.parameter_names):
            value = found.group(f"p{index}")
            if value is not None:
                values[name] = unquote(value)
        return values


def compile_route(prefix: str, template: str) -> CompiledRoute:
    """A regular expression for ``<prefix>/<template>``; parameter values are captured per name."""
    names: list[str] = []
    precedence: list[int] = []
    parts = ["^"]
    for segment in [s for s in prefix.strip("/").split("/") if s]:
        parts.append("/" + re.escape(segment))
    for segment in [s for s in template.strip("/").split("/") if s]:
        regex, rank = _segment_regex(segment, names)
        parts.append(regex)
        precedence.append(rank)
    parts.append("/?$")
    return CompiledRoute(re.compile("".join(parts), re.IGNORECASE), tuple(names), tuple(precedence))


def _segment_regex(segment: str, names: list[str]) -> tuple[str, int]:
    whole = _PARAMETER_TOKEN.fullmatch(segment)
    if whole:
        parameter = parse_parameter(whole.group(1))
        group = f"p{len(names)}"
        names.append(parameter.name)
        if parameter.catch_all:
            return f"(?:/(?P<{group}>.*))?", _CATCH_ALL
        if parameter.optional:
            return f"(?:/(?P<{group}>[^/]+))?", _OPTIONAL
        return f"/(?P<{group}>[^/]+)", _PARAMETER
    regex = []
    position = 0
    for token in _PARAMETER_TOKEN.finditer(segment):
        regex.append(re.escape(segment[position:token.start()]))
        regex.append(f"(?P<p{len(names)}>[^/]+?)")
        names.append(parse_parameter(token.group(1)).name)
        position = token.end()
    regex.append(re.escape(segment[position:]))
    return "/" + "".join(regex), _COMPLEX if position else _LITERAL


@dataclass(frozen=True)
class Route:
    function: HostedFunction
    template: str
    compiled: CompiledRoute
    methods: frozenset[str] | None  # None: every method
    auth_level: str

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods


class RouteTable:
    """Every HTTP function's route under the route prefix, most specific first."""

    def __init__(self, prefix: str, functions: list[HostedFunction]) -> None:
        self.prefix = prefix.strip("/")
        routes = [self._route(function) for function in functions]
        self.routes = sorted(routes, key=lambda route: route.compiled.precedence)

    def _route(self, function: HostedFunction) -> Route:
        template = str(function.binding.get("route") or function.name)
        methods = function.binding.get("methods")
        return Route(
            function=function,
            template=template,
            compiled=compile_route(self.prefix, template),
            methods=frozenset(str(m).upper() for m in methods) if methods else None,
            # The worker fills in the app's http_auth_level; "function" is the host's own default.
            auth_level=str(function.binding.get("authLevel") or "function").lower(),
        )

    def find(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        """The route for a request and its parameters; None when no route takes this method."""
        for route in self.routes:
            values = route.compiled.match(path)
            if values is not None and route.allows(method):
                return route, values
        return None, {}

    def describe(self, function: HostedFunction, base_url: str) -> str:
        route = next(r for r in self.routes if r.function is function)
        methods = ",".join(sorted(route.methods)) if route.methods else "all methods"
        path = "/".join(part for part in (self.prefix, route.template.strip("/")) if part)
        return f"[{methods}] {base_url}/{path} ({route.auth_level})"


def key_accepted(route: Route, key: str | None, keys: AccessKeys) -> bool:
    """Anonymous needs no key; function takes the function or master key; admin only the master key."""
    if route.auth_level == "anonymous":
        return True
    if not key:
        return False
    given = key.encode("utf-8")
    master = hmac.compare_digest(given, keys.master_key.encode("utf-8"))
    if route.auth_level == "admin":
        return master
    return hmac.compare_digest(given, keys.function_key.encode("utf-8")) or master


def query_parameters(query: str) -> dict[str, str]:
    """Repeated names are joined with commas, as the host passes them to the worker."""
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(name, []).append(value)
    return {name: ",".join(values) for name, values in params.items()}


def loggable_path(path: str) -> str:
    """``path`` fit for the access log: the value of every ``code`` parameter (a function or
    master key, however its name is encoded) becomes ``***``; the rest stays as received."""
    route, question, query = path.partition("?")
    if not question:
        return path
    pieces = []
    for piece in query.split("&"):
        name, equals, _ = piece.partition("=")
        pieces.append(f"{name}=***" if equals and unquote_plus(name) == KEY_QUERY_PARAMETER else piece)
    return f"{route}?{'&'.join(pieces)}"


def response_parts(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body for what a function returned (HttpResponse, text, bytes or None)."""
    if result is None:
        return HTTPStatus.NO_CONTENT, [], b""
    if isinstance(result, str | bytes | bytearray):
        body = result.encode("utf-8") if isinstance(result, str) else bytes(result)
        return HTTPStatus.OK, [("Content-Type", "text/plain; charset=utf-8")], body
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function returned {type(result).__name__}, not azure.functions.HttpResponse")
    headers = [(name, value) for name, value in result.headers.items() if name.lower() != "content-length"]
    if not any(name.lower() == "content-type" for name, _ in headers):
        # The worker derives Content-Type from mimetype, adding the charset for text types.
        content_type = result.mimetype
        if content_type.startswith("text/"):
            content_type = f"{content_type}; charset={result.charset}"
        headers.append(("Content-Type", content_type))
    return result.status_code, headers, result.get_body()


_DRAIN_LIMIT = 1024 * 1024  # bodies up to this are read and dropped when a request is refused


class RequestHandler(BaseHTTPRequestHandler):
    """One request: route, check the key, read the body, run the function, answer."""

    server: _Server
    # Keep-alive, as the Functions host does: a caller posting in a loop reuses its connection.
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes; without this, Nagle holds the body for the peer's delayed ACK (40 ms).
    disable_nagle_algorithm = True
    server_version = "devhost"

    def _handle_any_method(self) -> None:
        started = time.monotonic()
        status = self._dispatch()
        log.info("%s %s -> %d (%dms)", self.command, loggable_path(self.path), status,
                 (time.monotonic() - started) * 1000)
        hosting_cpu.flush()  # per request: a kept-alive connection may carry many

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_TRACE = _handle_any_method

    def _dispatch(self) -> int:
        url = urlsplit(self.path)
        if url.path == HOSTING_CPU_PATH:
            return self._hosting_cpu(query_parameters(url.query))
        route, route_params = self.server.routes.find(self.command, url.path)
        if route is None:
            # Azure answers 404, not 405, when a route exists but not for this method.
            return self._refuse_unread(HTTPStatus.NOT_FOUND)
        params = query_parameters(url.query)
        if not key_accepted(route, self.headers.get(KEY_HEADER) or params.get(KEY_QUERY_PARAMETER), self.server.keys):
            return self._refuse_unread(HTTPStatus.UNAUTHORIZED)
        try:
            body = self._read_body()
        except ValueError:  # a Content-Length or chunk size that is not a number
            self.close_connection = True
            return self._answer(HTTPStatus.BAD_REQUEST)
        if body is None:
            return self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        request = func.HttpRequest(
            self.command,
            f"http://{self.headers.get('Host') or self.server.authority}{self.path}",
            headers=self._header_dict(),
            params=params,
            route_params=route_params,
            body=body,
        )
        try:
            result = route.function.invoke(request, reason=f"HTTP {self.command} {url.path}")
        except Exception:  # noqa: BLE001 - invoke has logged it with its traceback
            return self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, body=FAILURE_BODY)
        try:
            status, headers, content = response_parts(result)
        except TypeError:
            log.exception("HTTP function '%s' returned an answer devhost cannot send", route.function.name)
            return self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, body=FAILURE_BODY)
        return self._answer(status, headers, content)

    def _hosting_cpu(self, params: dict[str, str]) -> int:
        key = (self.headers.get(KEY_HEADER) or params.get(KEY_QUERY_PARAMETER) or "").encode("utf-8")
        if not hmac.compare_digest(key, self.server.keys.master_key.encode("utf-8")):
            return self._refuse_unread(HTTPStatus.UNAUTHORIZED)
        body = json.dumps({"hosting_cpu_seconds": hosting_cpu.seconds()}).encode("utf-8")
        return self._answer(HTTPStatus.OK, [("Content-Type", "application/json")], body)

    def _refuse_unread(self, status: int) -> int:
        """Answer a request whose body the function will not see.

        A small body is read and dropped, so the kept-alive connection stays in step (closing
        a socket with unread data resets it, and the answer can be lost); a large or chunked
        one is left unread and the connection closed after the answer.
        """
        length = self.headers.get("Content-Length") or "0"
        if self.headers.get("Transfer-Encoding") or not length.isdigit() or int(length) > _DRAIN_LIMIT:
            self.close_connection = True
        elif int(length):
            self.rfile.read(int(length))
        return self._answer(status)

    def _header_dict(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        return headers

    def _read_body(self) -> bytes | None:
        """The request body, or None when it is over the host's limit (nothing more is read then).

        Raises ValueError for a malformed length.
        """
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_REQUEST_BODY:
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _answer(self, status: int, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> int:
        if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
            self.close_connection = True  # the unread body must not be taken for the next request
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        return status

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request still running must not keep the process alive at exit
    allow_reuse_address = True
    # The standard library listens with a backlog of 5: fifty concurrent callers get resets.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], routes: RouteTable, keys: AccessKeys) -> None:
        self.routes = routes
        self.keys = keys
        super().__init__(address, RequestHandler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with hosting_cpu.thread():  # the request's own CPU, less the function's
            super().process_request_thread(request, client_address)

    def service_actions(self) -> None:
        hosting_cpu.flush()  # the accepting thread's CPU, reported on each turn of its loop

    @property
    def authority(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, bytes | bytearray):  # typed as an address may be given; a bound socket names it as text
            host = host.decode("ascii")
        return f"{host}:{port}"


class HttpServer:
    """Binds at construction (so a taken port fails early); serves in a thread from ``start()``."""

    def __init__(self, bind: str, port: int, routes: RouteTable, keys: AccessKeys) -> None:
        self._server = _Server((bind, port), routes, keys)
        self._thread = threading.Thread(target=self._serve, name="devhost-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        with hosting_cpu.thread():
            self._server.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
