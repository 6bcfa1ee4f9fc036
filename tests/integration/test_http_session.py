"""HttpClient against a real local HTTP(S) server whose answers each test scripts."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import trustme

from shared.http import HttpClient, HttpFailure, RetryLater, RetryPolicy

pytestmark = pytest.mark.timeout(10)

# Tiny backoff so retried tests stay fast; Retry-After values are still honoured exactly.
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, connect_timeout=1.0, read_timeout=2.0)
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0  # seconds to stall before answering (to provoke read timeouts)


@dataclass(frozen=True)
class Arrival:
    method: str
    path: str
    at: float  # time.monotonic() when the request reached the server
    headers: dict[str, str]


class _QuietServer(ThreadingHTTPServer):
    scripted: ScriptedServer

    def handle_error(self, request: object, client_address: object) -> None:
        # A stalled answer hits a socket the client already dropped: expected, not news.
        pass


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection pool is exercised
    server: _QuietServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        reply = self.server.scripted.next_reply(self.command, self.path, dict(self.headers.items()))
        if reply.delay:
            time.sleep(reply.delay)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


class ScriptedServer:
    """Answers requests with the scripted replies in order; the last one repeats."""

    def __init__(self, replies: list[Reply], tls: ssl.SSLContext | None = None) -> None:
        if not replies:
            raise ValueError("script at least one reply")
        self._replies = list(replies)
        self._lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self._httpd = _QuietServer(("127.0.0.1", 0), _ScriptedHandler)
        self._httpd.scripted = self
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def next_reply(self, method: str, path: str, headers: dict[str, str]) -> Reply:
        with self._lock:
            self.arrivals.append(Arrival(method, path, time.monotonic(), headers))
            return self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    """Start scripted servers; every one is shut down when the test ends, pass or fail."""
    servers: list[ScriptedServer] = []

    def start(*replies: Reply, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        server = ScriptedServer(list(replies), tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class RecordingSleep:
    """Records requested waits; really sleeps only when asked to (timing tests)."""

    def __init__(self, real: bool = False) -> None:
        self.waits: list[float] = []
        self._real = real

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self._real:
            time.sleep(seconds)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- Retry-After and back-pressure -------------------------------------------------------


def test_429_then_200_waits_the_full_retry_after(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(Reply(429, {"Retry-After": "1"}), Reply(200, body=b"done"))
    sleep = RecordingSleep(real=True)
    with HttpClient(FAST, sleep=sleep) as client:
        response = client.get(f"{server.url}/data/Customers")
    assert response.status_code == 200
    assert response.text == "done"
    assert sleep.waits == [1.0]
    first, second = server.arrivals
    assert second.at - first.at >= 1.0


def test_long_retry_after_is_handed_back_to_the_queue(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(Reply(429, {"Retry-After": "30"}), Reply(200))
    sleep = RecordingSleep()
    with HttpClient(FAST, sleep=sleep) as client, pytest.raises(RetryLater) as raised:
        client.get(f"{server.url}/data/Customers")
    assert raised.value.delay == 30.0
    assert raised.value.status == 429
    assert "HTTP 429" in raised.value.reason
    assert len(server.arrivals) == 1
    assert sleep.waits == []


def test_503_without_retry_after_uses_the_policy_default(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(Reply(503), Reply(200))
    sleep = RecordingSleep()
    chat_policy = RetryPolicy(default_retry_after=1.0, base_delay=0.01)
    with HttpClient(chat_policy, sleep=sleep) as client:
        assert client.post(f"{server.url}/api/chat.postMessage", json={"text": "hi"}).status_code == 200
    assert sleep.waits == [1.0]
    assert [arrival.method for arrival in server.arrivals] == ["POST", "POST"]


# --- permanent failures and the idempotency guard ----------------------------------------


def test_400_fails_at_once(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(Reply(400, body=b'{"code": 21211}'), Reply(200))
    with HttpClient(FAST, sleep=RecordingSleep()) as client, pytest.raises(HttpFailure) as raised:
        client.post(f"{server.url}/2010-04-01/Accounts/AC1/Messages.json", data={"To": "+1"})
    assert raised.value.status == 400
    assert raised.value.reason == "HTTP 400"
    assert raised.value.response is not None
    assert raised.value.response.json() == {"code": 21211}
    assert len(server.arrivals) == 1


def test_post_500_is_not_retried(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(Reply(500), Reply(200))
    with HttpClient(FAST, sleep=RecordingSleep()) as client, pytest.raises(HttpFailure) as raised:
        client.post(f"{server.url}/2010-04-01/Accounts/AC1/Messages.json", data={"Body": "hello"})
    assert raised.value.status == 500
    assert len(server.arrivals) == 1


def test_post_500_is_retried_when_the_caller_declares_it_idempotent(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(Reply(500), Reply(200))
    with HttpClient(FAST, sleep=RecordingSleep()) as client:
        response = client.post(f"{server.url}/data/Actions", json={}, idempotent=True)
    assert response.status_code == 200
    assert len(server.arrivals) == 2


def test_get_500_then_200_is_retried(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(Reply(500), Reply(200))
    sleep = RecordingSleep()
    with HttpClient(FAST, sleep=sleep) as client:
        assert client.get(f"{server.url}/data/Customers").status_code == 200
    assert len(server.arrivals) == 2
    assert len(sleep.waits) == 1 and 0.0 <= sleep.waits[0] <= FAST.base_delay


def test_repeated_500_gives_up_after_max_attempts(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(Reply(502))
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.01)
    with HttpClient(policy, sleep=RecordingSleep()) as client, pytest.raises(HttpFailure) as raised:
        client.get(f"{server.url}/data/Customers")
    assert raised.value.reason == "gave up after 3 attempts: HTTP 502"
    assert len(server.arrivals) == 3


# --- network errors ----------------------------------------------------------------------


def test_read_timeout_on_get_is_retried(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(Reply(200, body=b"late", delay=0.8), Reply(200, body=b"fresh"))
    policy = RetryPolicy(base_delay=0.01, max_delay=0.05, connect_timeout=1.0, read_timeout=0.3)
    started = time.monotonic()
    with HttpClient(policy, sleep=RecordingSleep()) as client:
        response = client.get(f"{server.url}/data/Customers")
    assert response.text == "fresh"
    assert len(server.arrivals) == 2
    assert time.monotonic() - started < 0.8, "the read timeout must cut the stalled answer short"


def test_read_timeout_on_post_is_not_retried(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(Reply(201, delay=0.8), Reply(201))
    policy = RetryPolicy(base_delay=0.01, connect_timeout=1.0, read_timeout=0.3)
    with HttpClient(policy, sleep=RecordingSleep()) as client, pytest.raises(HttpFailure) as raised:
        client.post(f"{server.url}/2010-04-01/Accounts/AC1/Messages.json", data={"Body": "once"})
    assert raised.value.status is None
    assert isinstance(raised.value.__cause__, requests.ReadTimeout)
    assert len(server.arrivals) == 1


def test_connection_refused_is_retried_even_for_post() -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/chat.postMessage"
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.01, connect_timeout=1.0)
    sleep = RecordingSleep()
    with HttpClient(policy, sleep=sleep) as client, pytest.raises(HttpFailure) as raised:
        client.post(url, json={"text": "hi"})
    assert raised.value.reason == "gave up after 3 attempts: ConnectionError"
    assert len(sleep.waits) == 2


# --- session setup and logs --------------------------------------------------------------


def test_adapter_leaves_retries_to_the_client() -> None:
    with HttpClient(FAST) as client:
        adapter = client.session.get_adapter("https://example.invalid/")
        assert adapter.max_retries.total == 0


def test_retry_logs_carry_no_query_string_or_headers(
    serve: Callable[..., ScriptedServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(Reply(503, {"Retry-After": "0"}), Reply(200))
    caplog.set_level(logging.INFO, logger="shared.http")
    with HttpClient(FAST, sleep=RecordingSleep()) as client:
        client.get(f"{server.url}/data/Customers?code=query-secret", headers={"Authorization": "Bearer header-secret"})
    assert server.arrivals[0].path == "/data/Customers?code=query-secret"
    assert server.arrivals[0].headers["Authorization"] == "Bearer header-secret"
    assert f"{server.url}/data/Customers" in caplog.text
    assert "HTTP 503" in caplog.text
    assert "query-secret" not in caplog.text
    assert "header-secret" not in caplog.text


# --- TLS with a private CA despite REQUESTS_CA_BUNDLE --------------------------------------


@pytest.fixture
def tls_server(
    serve: Callable[..., ScriptedServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[ScriptedServer, Path]:
    """An HTTPS server with a test CA, while the environment points requests at another bundle."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(SYSTEM_BUNDLE) if SYSTEM_BUNDLE.exists() else requests.certs.where())
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_pem = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    return serve(Reply(200, body=b"secure"), tls=context), ca_pem


def test_https_with_private_ca_passes_verify_per_request(tls_server: tuple[ScriptedServer, Path]) -> None:
    server, ca_pem = tls_server
    with HttpClient(FAST, verify=ca_pem, sleep=RecordingSleep()) as client:
        response = client.get(f"{server.url}/data/Customers")
    assert response.text == "secure"


def test_session_verify_alone_is_overridden_by_the_environment(tls_server: tuple[ScriptedServer, Path]) -> None:
    # The reason HttpClient passes verify on each request: requests prefers REQUESTS_CA_BUNDLE.
    server, ca_pem = tls_server
    with requests.Session() as session:
        session.verify = str(ca_pem)
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"{server.url}/data/Customers", timeout=2)


def test_untrusted_certificate_fails_without_retrying(tls_server: tuple[ScriptedServer, Path]) -> None:
    server, _ = tls_server
    sleep = RecordingSleep()
    with HttpClient(FAST, sleep=sleep) as client, pytest.raises(HttpFailure) as raised:
        client.get(f"{server.url}/data/Customers")
    assert raised.value.reason == "SSLError"
    assert sleep.waits == []
