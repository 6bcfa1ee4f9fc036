"""The storage clients' kept-alive http.client transport against a real loopback HTTP(S) server."""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from azure.core.exceptions import (
    IncompleteReadError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.rest import HttpRequest

from shared.storage import keepalive
from shared.storage.keepalive import KeepAliveTransport
from shared.storage.transport import storage_client_options

pytestmark = pytest.mark.timeout(30)

LARGE = bytes(range(256)) * 12_000  # about 3 MB: many reads of the transport's blocks
CHUNKS = [bytes([n]) * (n * 97 % 5000 + 1) for n in range(200)]


@dataclass(frozen=True)
class Arrival:
    method: str
    path: str
    client_port: int  # which connection carried the request
    body: bytes


class _Server(ThreadingHTTPServer):
    loopback: Loopback

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a connection the test dropped on purpose

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        super().shutdown_request(request)
        self.loopback.closed.release()  # the server's side of one connection is closed now


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _Server

    def do_GET(self) -> None:
        self.server.loopback.answer(self)

    do_PUT = do_POST = do_GET

    def log_message(self, fmt: str, *args: object) -> None:
        pass


def _send(handler: BaseHTTPRequestHandler, body: bytes, headers: dict[str, str] | None = None) -> None:
    handler.send_response(200)
    for name, value in (headers or {"Content-Length": str(len(body))}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def _ok_then_close(handler: BaseHTTPRequestHandler) -> None:
    """Answers, then closes the kept-alive connection without having said so (an idle timeout)."""
    _send(handler, b"ok")
    handler.close_connection = True


def _ok_then_reset(handler: BaseHTTPRequestHandler) -> None:
    """Answers, then resets the connection: the client's next write on it fails at once."""
    _send(handler, b"ok")
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True


def _no_answer(handler: BaseHTTPRequestHandler) -> None:
    """Reads the request and closes: the server may have acted, the answer is lost."""
    handler.close_connection = True


def _chunked(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for chunk in CHUNKS:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    handler.wfile.write(b"0\r\n\r\n")


def _short(handler: BaseHTTPRequestHandler) -> None:
    """Promises 1000 bytes, sends 10, closes."""
    _send(handler, b"0123456789", {"Content-Length": "1000"})
    handler.close_connection = True


class Loopback:
    """A local HTTP/1.1 server: what each path answers is one of the functions above."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.arrivals: list[Arrival] = []
        self.closed = threading.Semaphore(0)
        self.release_slow = threading.Event()
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {
            "/ok": lambda handler: _send(handler, b"ok"),
            "/echo": lambda handler: _send(handler, self.arrivals[-1].body),
            "/close-after": _ok_then_close,
            "/reset-after": _ok_then_reset,
            "/no-answer": _no_answer,
            "/slow": self._slow,
            "/large": lambda handler: _send(handler, LARGE),
            "/chunked": _chunked,
            "/short": _short,
        }
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.loopback = self
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        self.arrivals.append(Arrival(handler.command, handler.path, handler.client_address[1], body))
        self.routes[handler.path](handler)

    def _slow(self, handler: BaseHTTPRequestHandler) -> None:
        self.release_slow.wait(10)  # released when the test ends
        _send(handler, b"late")

    def connections(self) -> set[int]:
        return {arrival.client_port for arrival in self.arrivals}

    def stop(self) -> None:
        self.release_slow.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Loopback]:
    loopback = Loopback()
    yield loopback
    loopback.stop()


@pytest.fixture
def transport() -> Iterator[KeepAliveTransport]:
    with KeepAliveTransport(connection_timeout=2.0, read_timeout=5.0) as opened:
        yield opened


def get(transport: KeepAliveTransport, url: str, **kwargs: object) -> bytes:
    response = transport.send(HttpRequest("GET", url), **kwargs)
    assert response.status_code == 200
    return bytes(response.read())


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- keep-alive ---------------------------------------------------------------------------


def test_one_thread_sends_its_requests_on_one_kept_connection(server: Loopback,
                                                              transport: KeepAliveTransport) -> None:
    assert [get(transport, f"{server.url}/ok") for _ in range(3)] == [b"ok"] * 3
    assert len(server.arrivals) == 3
    assert len(server.connections()) == 1


def test_each_thread_keeps_a_connection_of_its_own(server: Loopback, transport: KeepAliveTransport) -> None:
    both_started = threading.Barrier(2)
    answers: list[bytes] = []

    def three_gets() -> None:
        both_started.wait(5)
        answers.extend(get(transport, f"{server.url}/ok") for _ in range(3))

    threads = [threading.Thread(target=three_gets) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == [b"ok"] * 6
    ports = [arrival.client_port for arrival in server.arrivals]
    assert sorted(ports.count(port) for port in set(ports)) == [3, 3]


def test_a_request_body_arrives_as_sent_and_text_as_utf8(server: Loopback, transport: KeepAliveTransport) -> None:
    response = transport.send(HttpRequest("PUT", f"{server.url}/echo", content="Grüße ✓"))
    assert response.read() == "Grüße ✓".encode()
    response = transport.send(HttpRequest("POST", f"{server.url}/echo", json={"PartitionKey": "p"}))
    assert response.json() == {"PartitionKey": "p"}
    assert len(server.connections()) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced(server: Loopback,
                                                               transport: KeepAliveTransport) -> None:
    assert get(transport, f"{server.url}/close-after") == b"ok"
    assert server.closed.acquire(timeout=5)  # the kept connection is closed at the server's end
    assert get(transport, f"{server.url}/ok") == b"ok"
    assert [arrival.path for arrival in server.arrivals] == ["/close-after", "/ok"]  # each sent once
    assert len(server.connections()) == 2


def test_a_reused_connection_that_fails_before_any_byte_left_is_tried_once_more_on_a_new_one(
        server: Loopback, transport: KeepAliveTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reset lands after the idle check and before the write: the write fails with nothing sent.
    monkeypatch.setattr(keepalive, "_closed_by_peer", lambda sock: False)
    assert get(transport, f"{server.url}/reset-after") == b"ok"
    assert server.closed.acquire(timeout=5)
    assert get(transport, f"{server.url}/ok") == b"ok"
    assert [arrival.path for arrival in server.arrivals] == ["/reset-after", "/ok"]
    assert len(server.connections()) == 2


def test_an_answer_lost_after_the_request_was_sent_is_a_response_error_and_not_sent_again(
        server: Loopback, transport: KeepAliveTransport) -> None:
    assert get(transport, f"{server.url}/ok") == b"ok"
    with pytest.raises(ServiceResponseError):
        transport.send(HttpRequest("PUT", f"{server.url}/no-answer", content=b"do it once"))
    assert [arrival.path for arrival in server.arrivals] == ["/ok", "/no-answer"]
    assert get(transport, f"{server.url}/ok") == b"ok"  # the transport goes on, on a new connection


# --- timeouts and refusals ------------------------------------------------------------------


def test_an_answer_slower_than_the_read_timeout_is_a_response_timeout(server: Loopback,
                                                                      transport: KeepAliveTransport) -> None:
    with pytest.raises(ServiceResponseTimeoutError):
        transport.send(HttpRequest("GET", f"{server.url}/slow"), read_timeout=0.3)
    assert [arrival.path for arrival in server.arrivals] == ["/slow"]


def test_a_refused_connection_is_a_request_error(transport: KeepAliveTransport) -> None:
    with pytest.raises(ServiceRequestError) as raised:
        transport.send(HttpRequest("PUT", f"http://127.0.0.1:{closed_port()}/messages", content=b"x"))
    assert not isinstance(raised.value, ServiceResponseError)


# --- answers --------------------------------------------------------------------------------


def test_a_large_answer_is_read_whole_and_the_connection_kept(server: Loopback,
                                                              transport: KeepAliveTransport) -> None:
    assert hashlib.sha256(get(transport, f"{server.url}/large")).digest() == hashlib.sha256(LARGE).digest()
    assert get(transport, f"{server.url}/ok") == b"ok"
    assert len(server.connections()) == 1


def test_a_chunked_answer_is_read_whole_or_streamed_and_the_connection_kept(
        server: Loopback, transport: KeepAliveTransport) -> None:
    assert get(transport, f"{server.url}/chunked") == b"".join(CHUNKS)
    streamed = transport.send(HttpRequest("GET", f"{server.url}/chunked"), stream=True)
    assert b"".join(streamed.iter_bytes()) == b"".join(CHUNKS)
    large = transport.send(HttpRequest("GET", f"{server.url}/large"), stream=True)
    assert large.headers["content-length"] == str(len(LARGE))
    assert b"".join(large.iter_raw()) == LARGE
    assert get(transport, f"{server.url}/ok") == b"ok"
    assert len(server.connections()) == 1


def test_a_stream_left_unread_does_not_lend_its_connection_to_the_next_request(
        server: Loopback, transport: KeepAliveTransport) -> None:
    unread = transport.send(HttpRequest("GET", f"{server.url}/large"), stream=True)
    unread.close()
    assert get(transport, f"{server.url}/ok") == b"ok"
    assert len(server.connections()) == 2


def test_an_answer_shorter_than_its_content_length_is_an_incomplete_read(server: Loopback,
                                                                         transport: KeepAliveTransport) -> None:
    with pytest.raises(IncompleteReadError):
        transport.send(HttpRequest("GET", f"{server.url}/short"))
    streamed = transport.send(HttpRequest("GET", f"{server.url}/short"), stream=True)
    with pytest.raises(IncompleteReadError):
        b"".join(streamed.iter_bytes())


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Loopback, Path]]:
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    loopback = Loopback(tls=context)
    yield loopback, bundle
    loopback.stop()


def test_tls_is_verified_against_the_named_ca_bundle(tls_server: tuple[Loopback, Path]) -> None:
    loopback, bundle = tls_server
    with KeepAliveTransport(connection_timeout=2.0, read_timeout=5.0, connection_verify=str(bundle)) as trusting:
        assert [get(trusting, f"{loopback.url}/ok") for _ in range(2)] == [b"ok", b"ok"]
    assert len(loopback.connections()) == 1


def test_tls_to_a_server_outside_the_trusted_cas_is_refused_before_sending(tls_server: tuple[Loopback, Path],
                                                                           transport: KeepAliveTransport) -> None:
    loopback, _ = tls_server
    with pytest.raises(ServiceRequestError) as raised:
        transport.send(HttpRequest("PUT", f"{loopback.url}/ok", content=b"x"))
    assert isinstance(raised.value.inner_exception, ssl.SSLCertVerificationError)
    assert loopback.arrivals == []


# --- which storage clients get it ----------------------------------------------------------------


def test_storage_clients_send_on_the_kept_alive_transport_with_their_timeouts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    options = storage_client_options("http://127.0.0.1:10002/devstoreaccount1", connection_timeout=3.0,
                                     read_timeout=10.0, retry_total=2)
    assert isinstance(options["transport"], KeepAliveTransport)
    assert (options["transport"].connection_config.timeout, options["transport"].connection_config.read_timeout,
            options["retry_total"]) == (3.0, 10.0, 2)


def test_storage_clients_behind_a_proxy_keep_the_requests_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    options = storage_client_options("https://account.table.core.windows.net", connection_timeout=3.0)
    assert "transport" not in options
    assert options["proxies"] == {"https": "http://proxy.internal:3128"}


def test_storage_clients_keep_the_requests_transport_where_azure_core_lacks_what_the_kept_alive_one_builds_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "shared.storage.keepalive", None)  # importing it fails, as on such a release

    options = storage_client_options("https://account.table.core.windows.net", connection_timeout=3.0)

    assert "transport" not in options and options["connection_timeout"] == 3.0
