"""An azure-core transport for the storage clients on the standard library's ``http.client``.

Every Table and Queue call costs about a millisecond of CPU, and a third of it went to requests and
urllib3 under azure-core's ``RequestsTransport``: sessions, adapters, pool managers and header
merging that a client talking to one storage endpoint does not need. This transport sends the same
requests over kept-alive ``http.client`` connections and answers with azure-core's own response
type, so the SDKs' policies and deserialisers see what they saw before.

What it keeps of azure-core's contract:

- Connections are kept alive and reused per thread: an ``http.client`` connection carries one
  exchange at a time, and the app calls its clients from several threads.
- ``connection_timeout`` bounds connecting (and the TLS handshake), ``read_timeout`` every send and
  read after it, as azure-core passes them per client or per call.
- TLS is verified, against ``connection_verify``'s CA bundle (file or directory) when it names one.
- Errors as azure-core's retry policy reads them: ``ServiceRequestError`` when nothing of the request
  left this process (the server cannot have acted), ``ServiceResponseError`` once any of it did.
  A kept-alive connection that the server has closed is found before anything is written on it and
  replaced; a send that fails on a reused connection before its first byte is tried once on a new one.
- Answers are read whole unless ``stream=True``; a short body raises ``IncompleteReadError``.

Requests it does not carry (a proxy, form fields or files, azure-core's legacy request type) go
through a ``RequestsTransport`` built on first need, so nothing an SDK can send is refused.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
import weakref
import zlib
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

# This module is imported only when a storage client is built (shared.storage.transport), never at cold start.
from azure.core.configuration import ConnectionConfiguration  # noqa: TID253
from azure.core.exceptions import (  # noqa: TID253
    DecodeError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpTransport  # noqa: TID253
from azure.core.rest import HttpRequest  # noqa: TID253
from azure.core.rest._http_response_impl import HttpResponseImpl  # noqa: TID253
from azure.core.utils import case_insensitive_dict  # noqa: TID253

# Idle connections kept per thread and endpoint: a thread uses one at a time, more only while it streams.
IDLE_PER_ENDPOINT = 4
DEFAULT_PORTS = {"http": 80, "https": 443}

# (scheme, host, port, connection_verify, connection_cert): connections differ in what they trust.
PoolKey = tuple[str, str, int, Any, Any]


class _SendTracking:
    """Remembers whether any byte of the current request was handed to the network."""

    sock: socket.socket | None
    sent_any = False

    def _send_tracked(self, data: Any, send_rest: Any) -> None:
        if self.sock is not None and isinstance(data, bytes | bytearray | memoryview):
            view = memoryview(data)
            while view:
                sent = self.sock.send(view)
                self.sent_any = self.sent_any or sent > 0
                view = view[sent:]
            return
        self.sent_any = True  # a file or an iterable: parts of it may leave before a failure
        send_rest(data)


class _Connection(_SendTracking, http.client.HTTPConnection):
    def send(self, data: Any) -> None:
        self._send_tracked(data, super().send)


class _TlsConnection(_SendTracking, http.client.HTTPSConnection):
    def send(self, data: Any) -> None:
        self._send_tracked(data, super().send)


AnyConnection = _Connection | _TlsConnection

_contexts: dict[tuple[Any, Any], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def tls_context(verify: Any, cert: Any) -> ssl.SSLContext:
    """The TLS context for ``connection_verify`` and ``connection_cert``, built once (loading CAs costs ms).

    ``verify``: True (requests' default trust, certifi's bundle), False (no verification), or the path
    of a CA bundle file or directory. ``cert``: a client certificate file, or (certificate, key).
    """
    key = (verify, cert)
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = _contexts[key] = _new_tls_context(verify, cert)
        return context


def _new_tls_context(verify: Any, cert: Any) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str) and os.path.isdir(verify):
        context = ssl.create_default_context(capath=verify)
    elif isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    else:
        context = ssl.create_default_context(cafile=_default_ca_bundle())
    if cert:
        certfile, keyfile = cert if isinstance(cert, tuple) else (cert, None)
        context.load_cert_chain(certfile, keyfile)
    return context


def _default_ca_bundle() -> str | None:
    """The bundle requests trusts by default, so a switch of transport changes no one's trust."""
    try:
        import certifi
    except ImportError:
        return None  # the system's store
    return str(certifi.where())


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when an idle kept-alive socket has something to read: the server's close (or stray bytes)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _request_body(content: Any, headers: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
    """What http.client sends: the content, text as UTF-8 (as urllib3 does), and the headers, with the
    Content-Length of that UTF-8 (azure-core counts a text's characters, which differ beyond ASCII)."""
    sent_headers = dict(headers)
    if not isinstance(content, str):
        return content, sent_headers
    body = content.encode("utf-8")
    for name in sent_headers:
        if name.lower() == "content-length":
            sent_headers[name] = str(len(body))
    return body, sent_headers


def _decoder(content_encoding: str | None) -> Any:
    """A decompressor for a gzip or deflate answer (as requests decodes), None for anything else."""
    if content_encoding and content_encoding.strip().lower() in ("gzip", "deflate", "x-gzip"):
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header, found from the data
    return None


class _Exchange:
    """One answer on one connection: the connection goes back to its pool once the answer was read to its
    end, and is closed when the answer is dropped before that (unread bytes would corrupt the next one)."""

    def __init__(self, answer: http.client.HTTPResponse, connection: AnyConnection, pool: KeepAliveTransport,
                 key: PoolKey, block_size: int) -> None:
        self.answer = answer
        self.connection = connection
        self._pool = pool
        self._key = key
        self._block_size = block_size
        self._read_to_end = False  # only then may the connection carry another request
        self._done = False

    def read_whole(self) -> bytes:
        try:
            content = self.answer.read()
            self._read_to_end = True
            decoder = _decoder(self.answer.getheader("Content-Encoding"))
            return decoder.decompress(content) + decoder.flush() if decoder else content
        except Exception as error:
            self.close()
            raise _answer_error(error) from error

    def chunks(self, response: Any = None, pipeline: Any = None, decompress: bool = True, **_: Any) -> Iterator[bytes]:
        """The body in blocks, for ``stream=True`` answers (azure-core's stream download generator)."""
        decoder = _decoder(self.answer.getheader("Content-Encoding")) if decompress else None
        try:
            while block := self.answer.read(self._block_size):
                yield decoder.decompress(block) if decoder else block
            if self.answer.length:  # http.client ends a short Content-Length body without a word
                raise http.client.IncompleteRead(b"", self.answer.length)
            self._read_to_end = True
            if decoder and (tail := decoder.flush()):
                yield tail
        except Exception as error:
            raise _answer_error(error) from error
        finally:
            self.close()  # back to the pool when read to its end, else closed (also when the reader stops early)

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        self.answer.close()
        if self._read_to_end and self.connection.sock is not None:  # None: the server said it closes (will_close)
            self._pool.put_back(self._key, self.connection)
        else:
            self.connection.close()


def _answer_error(error: Exception) -> Exception:
    """The azure-core error for a failure while reading an answer (the request was sent)."""
    if isinstance(error, http.client.IncompleteRead):
        return IncompleteReadError(error, error=error)
    if isinstance(error, zlib.error):
        return DecodeError(error, error=error)
    if isinstance(error, TimeoutError):
        return ServiceResponseTimeoutError(error, error=error)
    if isinstance(error, OSError | http.client.HTTPException):
        return ServiceResponseError(error, error=error)
    return error


def _send_error(error: Exception, sent_any: bool) -> Exception:
    """ServiceRequestError while nothing of the request left (safe to send again), ServiceResponseError after."""
    timed_out = isinstance(error, TimeoutError)
    if sent_any:
        kind: type[ServiceRequestError | ServiceResponseError]
        kind = ServiceResponseTimeoutError if timed_out else ServiceResponseError
    else:
        kind = ServiceRequestTimeoutError if timed_out else ServiceRequestError
    return kind(error, error=error)


class _Response(HttpResponseImpl):
    """azure-core's response for a request sent over ``http.client``."""


class KeepAliveTransport(HttpTransport):  # type: ignore[type-arg]  # sends azure.core.rest requests
    """An azure-core ``HttpTransport`` on kept-alive ``http.client`` connections, reused per thread.

    Takes azure-core's connection settings: ``connection_timeout``, ``read_timeout``, ``connection_verify``,
    ``connection_cert``, ``connection_data_block_size``; a call can override the first four.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._settings = kwargs
        self.connection_config = ConnectionConfiguration(**kwargs)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: weakref.WeakSet[AnyConnection] = weakref.WeakSet()  # every connection, for close()
        self._fallback: HttpTransport | None = None  # type: ignore[type-arg]

    def __enter__(self) -> KeepAliveTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()

    def open(self) -> None:
        """Nothing to open: connections are made on first use."""

    def close(self) -> None:
        """Closes every connection, kept or in use; later calls open new ones."""
        with self._lock:
            connections, fallback = list(self._open), self._fallback
            self._fallback = None
        for connection in connections:
            connection.close()
        if fallback is not None:
            fallback.close()

    def send(self, request: Any, *, proxies: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        if proxies or not isinstance(request, HttpRequest) or isinstance(request.content, Mapping):
            return self._requests_transport().send(request, proxies=proxies, **kwargs)
        config = self.connection_config
        connect_timeout = kwargs.pop("connection_timeout", config.timeout)
        read_timeout = kwargs.pop("read_timeout", config.read_timeout)
        if isinstance(connect_timeout, tuple):  # azure-core's older (connect, read) form
            connect_timeout, read_timeout = connect_timeout
        parts = urlsplit(request.url)
        scheme = parts.scheme.lower()
        key: PoolKey = (scheme, parts.hostname or "", parts.port or DEFAULT_PORTS.get(scheme, 80),
                        kwargs.pop("connection_verify", config.verify), kwargs.pop("connection_cert", config.cert))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body, headers = _request_body(request.content, request.headers)
        answer, connection = self._exchange(key, request.method, target, body, headers, connect_timeout,
                                            read_timeout)
        exchange = _Exchange(answer, connection, self, key, config.data_block_size)
        answer_headers = case_insensitive_dict(answer.getheaders())
        response = _Response(request=request, internal_response=exchange, block_size=config.data_block_size,
                             status_code=answer.status, reason=answer.reason, headers=answer_headers,
                             content_type=answer_headers.get("Content-Type"), stream_download_generator=exchange.chunks)
        if not kwargs.get("stream"):
            response._content = exchange.read_whole()
            response.read()  # as azure-core does for a whole answer: marks it read and closes it
        return response

    def _exchange(self, key: PoolKey, method: str, target: str, body: Any, headers: dict[str, str],
                  connect_timeout: float, read_timeout: float) -> tuple[http.client.HTTPResponse, AnyConnection]:
        """Sends the request and reads the answer's head; once more on a new connection when a reused one
        failed before any byte of the request left."""
        for attempt in (1, 2):
            connection, reused = self._take(key, connect_timeout)
            connection.sent_any = False
            try:
                assert connection.sock is not None  # connected by _take
                connection.sock.settimeout(read_timeout)
                connection.request(method, target, body=body, headers=headers)
                return connection.getresponse(), connection
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                if reused and attempt == 1 and not connection.sent_any:
                    continue  # the kept connection was gone: nothing was sent, so sending again is safe
                raise _send_error(error, connection.sent_any) from error
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _idle(self, key: PoolKey) -> list[AnyConnection]:
        pools: dict[PoolKey, list[AnyConnection]] | None = getattr(self._local, "pools", None)
        if pools is None:
            pools = self._local.pools = {}
        return pools.setdefault(key, [])

    def _take(self, key: PoolKey, connect_timeout: float) -> tuple[AnyConnection, bool]:
        """A connection of this thread for ``key``: a kept one still open, else a new one (and whether reused)."""
        idle = self._idle(key)
        while idle:
            connection = idle.pop()
            if connection.sock is not None and not _closed_by_peer(connection.sock):
                return connection, True
            connection.close()  # the server closed it while idle: found before anything was written
        return self._connect(key, connect_timeout), False

    def _connect(self, key: PoolKey, connect_timeout: float) -> AnyConnection:
        scheme, host, port, verify, cert = key
        connection: AnyConnection
        if scheme == "https":
            connection = _TlsConnection(host, port, timeout=connect_timeout, context=tls_context(verify, cert))
        else:
            connection = _Connection(host, port, timeout=connect_timeout)
        try:
            connection.connect()
        except OSError as error:  # refused, unresolved, timed out, or TLS refused: nothing was sent
            connection.close()
            raise _send_error(error, sent_any=False) from error
        with self._lock:
            self._open.add(connection)
        return connection

    def put_back(self, key: PoolKey, connection: AnyConnection) -> None:
        """Keeps a connection whose last answer was read to its end, for this thread's next request."""
        idle = self._idle(key)
        if len(idle) < IDLE_PER_ENDPOINT:
            idle.append(connection)
        else:
            connection.close()

    def _requests_transport(self) -> HttpTransport:  # type: ignore[type-arg]
        """azure-core's requests transport with the same settings, for requests this one does not carry."""
        with self._lock:
            if self._fallback is None:
                from azure.core.pipeline.transport import RequestsTransport

                self._fallback = RequestsTransport(**{"use_env_settings": False, **self._settings})
            return self._fallback
