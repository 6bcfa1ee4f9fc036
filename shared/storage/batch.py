"""Entity-group transactions (the Table service's ``$batch``) at about the CPU cost of one request.

``TableClient.submit_transaction`` builds its multipart request with the ``email`` package's generator and a
thread pool per request, and reads the answer with the ``email`` feed parser, which compiles a regular
expression per boundary: about 2.3 ms of CPU more than the same operations sent one by one. ``submit`` sends
the same request and raises the same errors without those:

- each operation's request is the SDK's own (``TableBatchOperations``: its request builders and entity
  serialisation), written into one changeset as azure-core writes it (``application/http`` parts);
- the ``$batch`` request goes through the table client's own pipeline: its signing (SharedKey or Entra ID),
  retries, timeouts and transport;
- the answer's parts are read by a small parser of the documented format ("Performing entity group
  transactions" in the Azure Storage REST reference); a failed one is decoded by the SDK's own error decoding
  into the exception ``submit_transaction`` raises (``TableTransactionError`` with the failing operation's
  index and status, ``RequestTooLargeError``, or the whole batch's ``HttpResponseError``).

It leans on private parts of azure-data-tables and azure-core; ``tests/integration/test_table_batch.py`` pins
each of them, so an SDK upgrade that moves one fails there first.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.rest import HttpRequest, HttpResponse
    from azure.data.tables import TableClient

# The azure-data-tables releases whose private parts this module was checked against (the fingerprints in
# tests/integration/test_table_batch.py); under any other the app sends through submit_transaction itself.
CHECKED_RELEASES = frozenset({"12.7.0"})
CRLF = b"\r\n"
# What http.client gives a body-less request of these methods (azure-core serialises parts through it).
_METHODS_EXPECTING_BODY = ("PATCH", "POST", "PUT")


def checked_release() -> bool:
    """Whether the installed azure-data-tables is one this module was checked against."""
    from azure.data.tables import __version__

    return __version__ in CHECKED_RELEASES


def submit(table: TableClient, operations: Iterable[Any], **kwargs: Any) -> list[Mapping[str, Any]]:
    """``table.submit_transaction(operations, **kwargs)``: the same request, answer and errors, less CPU."""
    from azure.core.exceptions import HttpResponseError

    requests = operation_requests(table, operations)
    # Streamed, as the SDK asks for it: else the pipeline would try to decode the multipart answer as data.
    response = table._client.send_request(batch_request(table, requests), stream=True, **kwargs)
    if response.status_code != 202:
        error = _whole_batch_error(table, response)
        if isinstance(error, HttpResponseError) and error.status_code == 400 and not requests:
            return []  # the service refuses an empty changeset; the SDK answers that no operation failed
        raise error
    parts = answer_parts(response.read(), response.headers.get("Content-Type", ""))
    for position, part in enumerate(parts):
        if not 200 <= part.status < 300:
            raise _operation_error(table, response, part, requests[position] if position < len(requests)
                                   else response.request)
    return [{"etag": part.headers["etag"]} if "etag" in part.headers else {} for part in parts]


def operation_requests(table: TableClient, operations: Iterable[Any]) -> list[HttpRequest]:
    """Each operation's request as the SDK builds it for a transaction (its checks included: one partition,
    known operation names)."""
    from azure.data.tables._table_batch import TableBatchOperations

    built = TableBatchOperations(
        config=table._client._config,
        endpoint=f"{table.scheme}://{table._primary_hostname}",
        table_name=table.table_name,
        is_cosmos_endpoint=table._cosmos_endpoint,
    )
    try:
        for operation in operations:
            built.add_operation(operation)
    except TypeError as exc:
        raise TypeError("The value of 'operations' must be an iterator of Tuples. Please check documentation "
                        "for correct Tuple format.") from exc
    return built.requests


def batch_request(table: TableClient, requests: list[HttpRequest]) -> HttpRequest:
    """The ``$batch`` request carrying ``requests`` as one changeset, with the headers the SDK sends."""
    from azure.core.rest import HttpRequest

    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    return HttpRequest(
        "POST",
        f"{table.scheme}://{table._primary_hostname}/$batch",
        headers={"x-ms-version": table.api_version, "DataServiceVersion": "3.0",
                 "MaxDataServiceVersion": "3.0;NetFx", "Content-Type": f"multipart/mixed; boundary={batch}",
                 "Accept": "application/json"},
        content=batch_body(requests, batch, changeset, _http_date()),
    )


def batch_body(requests: list[HttpRequest], batch: str, changeset: str, date: str) -> bytes:
    """The multipart/mixed body: one batch part holding the changeset, each request an application/http part
    (byte for byte what azure-core writes, ``x-ms-date``/``Date`` as the SDK's policy stamps each part)."""
    out = [b"--", batch.encode(), CRLF, b"Content-Type: multipart/mixed; boundary=", changeset.encode(), CRLF, CRLF]
    for index, request in enumerate(requests):
        out += [b"--", changeset.encode(), CRLF, b"Content-Type: application/http", CRLF,
                b"Content-Transfer-Encoding: binary", CRLF, b"Content-ID: ", str(index).encode(), CRLF, CRLF,
                _serialised(request, date), CRLF]
    out += [b"--", changeset.encode(), b"--", CRLF, CRLF, b"--", batch.encode(), b"--", CRLF]
    return b"".join(out)


def _serialised(request: HttpRequest, date: str) -> bytes:
    """One operation as an HTTP/1.1 request message, as http.client writes it for azure-core."""
    content = request.content
    body = content.encode() if isinstance(content, str) else content
    lines = [f"{request.method} {request.url} HTTP/1.1"]
    if "content-length" not in request.headers and "transfer-encoding" not in request.headers:
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        elif request.method.upper() in _METHODS_EXPECTING_BODY:
            lines.append("Content-Length: 0")
    headers = {**request.headers, "x-ms-date": date, "Date": date}
    lines += [f"{name}: {value}" for name, value in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


def _http_date() -> str:
    from wsgiref.handlers import format_date_time

    return format_date_time(time.time())


@dataclass(frozen=True, slots=True)
class AnswerPart:
    """One operation's answer in the changeset: its status, headers (case-insensitive) and raw message."""

    status: int
    headers: Mapping[str, str]
    message: bytes


def answer_parts(body: bytes, content_type: str) -> list[AnswerPart]:
    """The application/http parts of a multipart answer, the changeset's flattened in order."""
    parts: list[AnswerPart] = []
    for part_type, payload in _multipart(body, _boundary(content_type)):
        if part_type.startswith("multipart/mixed"):
            parts += answer_parts(payload, part_type)
        elif part_type.startswith("application/http"):
            parts.append(_http_part(payload))
        else:
            raise ValueError("Multipart doesn't support part other than application/http for now")
    return parts


def _boundary(content_type: str) -> bytes:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"').encode("latin-1")
    raise ValueError(f"a multipart answer without a boundary: {content_type!r}")


def _multipart(body: bytes, boundary: bytes) -> list[tuple[str, bytes]]:
    """(content type, payload) of each part. A delimiter is CRLF, "--" and the boundary (the first may open
    the body); the last is followed by "--"; the rest of a delimiter's line is padding."""
    chunks = (CRLF + body).split(CRLF + b"--" + boundary)
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[chunk.find(b"\n") + 1:]
        head, _, payload = chunk.partition(CRLF + CRLF) if not chunk.startswith(CRLF) else (b"", b"", chunk[2:])
        parts.append((_header(head, "content-type"), payload))
    return parts


def _header(head: bytes, wanted: str) -> str:
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == wanted:
            return value.strip()
    return ""


def _http_part(message: bytes) -> AnswerPart:
    """An HTTP/1.1 response message: status line, headers, body."""
    from azure.core.utils import CaseInsensitiveDict

    head = message.partition(CRLF + CRLF)[0].decode("latin-1").split("\r\n")
    if not head[0].startswith("HTTP/"):
        _read_by_http_client(message, "POST")  # raises what the SDK's reading raises (BadStatusLine)
    headers = CaseInsensitiveDict()
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return AnswerPart(int(head[0].split(" ", 2)[1]), headers, message)


def _whole_batch_error(table: TableClient, response: HttpResponse) -> Exception:
    """What the SDK raises for an answer other than 202: the batch as a whole refused."""
    from azure.data.tables import RequestTooLargeError
    from azure.data.tables._error import _decode_error, _validate_tablename_error

    if response.status_code == 413:
        return _decode_error(response, error_message="The transaction request was too large",
                             error_type=RequestTooLargeError)
    decoded = _decode_error(response)
    _validate_tablename_error(decoded, table.table_name)
    return decoded


def _operation_error(table: TableClient, response: HttpResponse, part: AnswerPart,
                     request: HttpRequest) -> Exception:
    """What the SDK raises for an operation the service refused (and with it the transaction)."""
    from azure.data.tables import RequestTooLargeError, TableTransactionError
    from azure.data.tables._error import _decode_error, _validate_tablename_error

    if part.status == 413:
        return _decode_error(response, error_message="The transaction request was too large",
                             error_type=RequestTooLargeError)
    decoded = _decode_error(response=_sdk_response(part, request), error_type=TableTransactionError)
    _validate_tablename_error(decoded, table.table_name)
    return decoded


def _sdk_response(part: AnswerPart, request: HttpRequest) -> Any:
    """The part as the response object the SDK decodes errors from (azure-core's, read by http.client)."""
    from azure.core.rest._http_response_impl import RestHttpClientTransportResponse

    answer = _read_by_http_client(part.message, request.method)
    return RestHttpClientTransportResponse(request=request, internal_response=answer)


def _read_by_http_client(message: bytes, method: str) -> Any:
    from http.client import HTTPResponse

    answer = HTTPResponse(_BytesSocket(message), method=method)  # type: ignore[arg-type]
    answer.begin()
    return answer


class _BytesSocket:
    """What http.client reads a response from: bytes already received."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, *_args: Any) -> io.BytesIO:
        return io.BytesIO(self._data)
