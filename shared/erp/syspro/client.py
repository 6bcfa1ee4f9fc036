"""SYSPRO 8 transport: e.net REST sessions, COMFND table reads, transactions, and the OData service.

e.net (``{base_url}/Logon``, ``/Query/Query``, ``/Transaction/Post``, ``/Logoff``):

- Every call is a GET with every parameter in the query string, the operator password and
  the session id (``UserId``) included. No URL of these calls is ever logged or put in an
  exception: failures name the path and the business object only, and a filter on
  urllib3's logger masks those parameters in its debug lines.
- A transaction is a GET too, but not a repeatable one: it is retried only where the
  server surely did not act (connection refused, 408/429/503), never after a timeout.
- Answers are Windows-1252 XML, sometimes JSON-quoted or wrapped in ``<string>``; a
  business failure is HTTP 200 with a body starting ``ERROR`` (or ``ErrorDescription`` /
  ``ErrorMessage`` elements). A non-2xx status is an infrastructure error (retried by
  ``shared.http``).
- The session is opened on the first call and kept for the process (``enet_session``: one
  logon per connection, not one per poll); unused for ``session_minutes`` it is logged off and
  logged on anew before its next call, so SYSPRO's idle timeout does not end it under a call.
  An answer saying it expired anyway (or was ended by another logon of the same operator)
  logs on again and retries the call once.
  So does a read answered with any other unexpected ``ERROR`` (not a full licence class, not
  a missing business object): after one retry on a fresh session it fails with the answer's text.
  A second logon by the same operator ends the first session, so calls of one operator are
  serialized within the process; across instances the poll framework holds a lease.

OData (read-only, Basic auth with the operator and its OData password): the same table
reads through ``$filter``/``$orderby``/``$top``, at most 5,000 rows a request.

Both readers take a ``TableQuery`` whose ``where`` is an OR of AND groups, so a keyset
lower bound on (stamp, key...) is expressed without nested brackets.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

from shared.clients import PerConnection
from shared.erp.syspro.connection import SysproConnection, has_enet, notes_unavailable
from shared.erp.xml_answers import XmlRefused, parse_xml
from shared.http import HttpClient, HttpFailure, RetryPolicy
from shared.outcomes import PermanentFailure, RetryLater, is_transient, network_problem

if TYPE_CHECKING:
    import requests

    from shared.storage.secrets import SecretProvider

log = logging.getLogger(__name__)

# --- names and texts not confirmed by a primary source: check on the customer's instance ---------
# The text e.net answers for an expired or ended session is not documented; these are the words
# such an answer is recognised by (the fake SYSPRO answers with one such text).
SESSION_ENDED = re.compile(
    r"(session|user\s*id|guid)\b.{0,80}\b(expired|invalid|not logged on|logged off|timed out|not found)"
    r"|\b(expired|invalid|unknown)\b.{0,40}\b(session|user\s*id|guid)\b",
    re.IGNORECASE | re.DOTALL,
)
# A full licence class: worth trying again later, not a configuration error.
NO_LICENCE = re.compile(r"licen[cs]e|no (more )?seats|maximum number of (users|operators)", re.IGNORECASE)
# COMFND conditions: only EQ is confirmed; the others follow its naming.
COMFND_CONDITIONS: Mapping[str, str] = {"eq": "EQ", "ne": "NE", "gt": "GT", "ge": "GE", "lt": "LT", "le": "LE"}
# How a rowversion and a date are written as a COMFND Value.
COMFND_ROWVERSION_FORMAT = "0x{:016X}"
COMFND_DATE_FORMAT = "%Y-%m-%d"
# OData: the table URL below the configured service URL, and literals for a rowversion (if the
# service exposes TimeStamp at all) and a date column (server-local midnight, written as UTC).
ODATA_TABLE_PATH = "{company}/{table}"
ODATA_DATE_LITERAL = "{date}T00:00:00Z"
# --------------------------------------------------------------------------------------------------

ODATA_MAX_ROWS = 5000  # the service's cap per request
CALL_TIMEOUT_SECONDS = 30.0  # seen in working integrations: 30 s per call
LICENCE_RETRY_SECONDS = 120.0
BO_NOT_INSTALLED = "e.net exception 100000"
_ERROR_ELEMENTS = frozenset({"errordescription", "errormessage"})
_MAX_REASON = 300
_CHARSET = re.compile(r"charset\s*=\s*\"?([\w.:-]+)", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_ENCODING_IN_DECLARATION = re.compile(r"encoding\s*=\s*[\"']([\w.:-]+)[\"']", re.IGNORECASE)

T = TypeVar("T")


class RowVersion(int):
    """A SQL Server rowversion (``TimeStamp``): a database-wide counter, not a time."""

    @classmethod
    def parse(cls, value: Any) -> RowVersion:
        """From an integer, decimal text, ``0x`` hex text, or base64 of its 8 bytes (OData Edm.Binary)."""
        if isinstance(value, bool) or value is None:
            raise ValueError(f"not a rowversion: {value!r}")
        if isinstance(value, int):
            return cls(value)
        text = str(value).strip()
        if text.lower().startswith("0x"):
            return cls(int(text, 16))
        if text.isdigit():
            return cls(int(text))
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError:
            raise ValueError(f"not a rowversion: {value!r}") from None
        if len(raw) != 8:
            raise ValueError(f"not a rowversion: {value!r}")
        return cls(int.from_bytes(raw, "big"))


# --- queries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    """``column <op> value``; ``op`` is one of eq, ne, gt, ge, lt, le."""

    column: str
    op: str
    value: str | int | Decimal | date | RowVersion

    def __post_init__(self) -> None:
        if self.op not in COMFND_CONDITIONS:
            raise ValueError(f"unknown condition {self.op!r}")


Where = tuple[tuple[Cond, ...], ...]  # OR of AND groups; () reads every row


@dataclass(frozen=True)
class TableQuery:
    table: str
    columns: tuple[str, ...]
    order_by: tuple[str, ...]
    rows: int
    where: Where = ()


def after(order: Sequence[str], last: Sequence[Any]) -> Where:
    """The rows strictly after ``last`` in the order ``order``: a keyset bound as OR of AND groups.

    (a, b) > (x, y) is ``a > x`` or ``a = x and b > y``.
    """
    groups = []
    for index, column in enumerate(order):
        equal = tuple(Cond(name, "eq", value) for name, value in zip(order[:index], last[:index], strict=True))
        groups.append((*equal, Cond(column, "gt", last[index])))
    return tuple(groups)


def both(left: Where, right: Where) -> Where:
    """``left and right`` for two OR-of-AND conditions (an empty one is "everything")."""
    if not left:
        return right
    if not right:
        return left
    return tuple(a + b for a in left for b in right)


def any_of(column: str, values: Sequence[Any]) -> Where:
    return tuple((Cond(column, "eq", value),) for value in values)


Row = dict[str, Any]


class TableReader:
    """One request, one page: the rows a ``TableQuery`` selects, keyed by the requested column names."""

    def rows(self, query: TableQuery) -> list[Row]:
        raise NotImplementedError

    @property
    def max_rows(self) -> int:
        return 10_000

    def close(self) -> None:
        pass


def read_all(reader: TableReader, query: TableQuery) -> Iterator[Row]:
    """Every row of ``query`` in its order (which must end with the table's key), a page at a time."""
    last: Sequence[Any] | None = None
    while True:
        where = query.where if last is None else both(query.where, after(query.order_by, last))
        page = reader.rows(TableQuery(query.table, query.columns, query.order_by, query.rows, where))
        yield from page
        if len(page) < query.rows:
            return
        last = [page[-1].get(column) for column in query.order_by]
        if any(value is None for value in last):
            raise PermanentFailure(f"SYSPRO {query.table}: rows without {', '.join(query.order_by)} cannot be paged")


def chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- answers -----------------------------------------------------------------------------------


class SysproError(PermanentFailure):
    """A business failure SYSPRO answered (an ``ERROR`` text or error elements)."""


def decode_body(content: bytes, content_type: str) -> str:
    """The answer as text: the charset the header names, else Windows-1252."""
    found = _CHARSET.search(content_type or "")
    encoding = found.group(1) if found else "cp1252"
    try:
        return content.decode(encoding, errors="replace")
    except LookupError:
        return content.decode("cp1252", errors="replace")


def unwrap(text: str) -> str:
    """The payload of an e.net answer: JSON-quoted, wrapped in ``<string>``, or bare."""
    body = text.strip().lstrip("\ufeff")
    if body.startswith('"'):
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, str):
            return decoded.strip()
    if _without_declaration(body)[:7].lower() == "<string":
        try:
            element = parse_xml(_without_declaration(body))
        except XmlRefused:
            return body
        if _local(element.tag).lower() == "string":
            return (element.text or "").strip()
    return body


def _without_declaration(text: str) -> str:
    # The text is already decoded: a declared encoding would make the parser decode it again.
    return _XML_DECLARATION.sub("", text, count=1).lstrip()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def is_error_text(payload: str) -> bool:
    return payload.lstrip().upper().startswith("ERROR")


def parse_answer(payload: str, what: str) -> ET.Element:
    try:
        return parse_xml(_without_declaration(payload))
    except XmlRefused as error:
        raise SysproError(f"{what}: the answer is not XML we read ({error})") from None


def error_elements(root: ET.Element) -> list[str]:
    return [(element.text or "").strip() for element in root.iter()
            if _local(element.tag).lower() in _ERROR_ELEMENTS and (element.text or "").strip()]


def table_rows(root: ET.Element, columns: Sequence[str]) -> list[Row]:
    """COMFND's ``<Row>`` elements as rows keyed by the requested names (some BOs change their case)."""
    wanted = {column.lower(): column for column in columns}
    rows = []
    for element in root.iter():
        if _local(element.tag).lower() != "row":
            continue
        row: Row = dict.fromkeys(columns)
        for child in element:
            name = wanted.get(_local(child.tag).lower())
            if name is not None:
                row[name] = child.text.strip() if child.text is not None and child.text.strip() else None
        rows.append(row)
    return rows


# --- literals ----------------------------------------------------------------------------------


def comfnd_value(value: Any) -> str:
    if isinstance(value, RowVersion):
        return COMFND_ROWVERSION_FORMAT.format(int(value))
    if isinstance(value, datetime):
        return value.strftime(COMFND_DATE_FORMAT)
    if isinstance(value, date):
        return value.strftime(COMFND_DATE_FORMAT)
    return str(value)


def comfnd_xml(query: TableQuery) -> str:
    """COMFND's XmlIn: the first Expression has no AndOr; each AND group sits in one bracket pair."""
    parts = [f"<Query><TableName>{escape(query.table)}</TableName><ReturnRows>{query.rows}</ReturnRows><Columns>"]
    parts += [f"<Column>{escape(column)}</Column>" for column in query.columns]
    parts.append("</Columns>")
    if query.where:
        parts.append("<Where>")
        for group_index, group in enumerate(query.where):
            for index, cond in enumerate(group):
                first, last = index == 0, index == len(group) - 1
                and_or = "" if group_index == 0 and first else ("Or" if first else "And")
                parts.append(
                    "<Expression>"
                    f"<OpenBracket>{'(' if first else ''}</OpenBracket>"
                    + (f"<AndOr>{and_or}</AndOr>" if and_or else "")
                    + f"<Column>{escape(cond.column)}</Column>"
                    f"<Condition>{COMFND_CONDITIONS[cond.op]}</Condition>"
                    f"<Value>{escape(comfnd_value(cond.value))}</Value>"
                    f"<CloseBracket>{')' if last else ''}</CloseBracket>"
                    "</Expression>"
                )
        parts.append("</Where>")
    if query.order_by:
        parts.append("<OrderBy>" + "".join(f"<Column>{escape(column)}</Column>" for column in query.order_by)
                     + "</OrderBy>")
    parts.append("</Query>")
    return "".join(parts)


def odata_literal(value: Any) -> str:
    if isinstance(value, RowVersion):
        return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, date):
        day = value.date() if isinstance(value, datetime) else value
        return ODATA_DATE_LITERAL.format(date=day.isoformat())
    return "'" + str(value).replace("'", "''") + "'"


def odata_filter(where: Where) -> str | None:
    if not where:
        return None
    groups = [" and ".join(f"{cond.column} {cond.op} {odata_literal(cond.value)}" for cond in group)
              for group in where]
    return " or ".join(f"({group})" for group in groups) if len(groups) > 1 else groups[0]


# --- HTTP, without URLs in errors ----------------------------------------------------------------


def send_naming_only(call: str, send: Callable[[], T]) -> T:
    """Run a request; a failure comes back naming ``call`` only, never the URL (it carries secrets).

    The new exception has no cause, no context and no response: each of those would hold the URL.
    """
    try:
        return send()
    except RetryLater as exc:
        failure: Exception = RetryLater(exc.delay, f"{call}: {exc.reason}", exc.status)
    except HttpFailure as exc:
        failure = HttpFailure(exc.status, f"{call}: {exc.reason}")
        _keep_network_nature(failure, exc)
    except Exception as exc:  # noqa: BLE001 - e.g. requests' InvalidURL quotes the URL: keep only the class
        failure = HttpFailure(None, f"{call}: {type(exc).__name__}")
    raise failure


def _keep_network_nature(failure: HttpFailure, original: HttpFailure) -> None:
    """What the dropped cause said about the network, without its URL: a SYSPRO that cannot be reached
    is a transient failure (the poll backs off), and the words say why ("connection refused")."""
    if original.status is None and is_transient(original):
        failure.transient = True
        failure.network = network_problem(original)


def _scrub(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:_MAX_REASON]


# --- e.net -------------------------------------------------------------------------------------

_SECRET_PARAMETERS = re.compile(r"\b((?:UserId|OperatorPassword|CompanyPassword)=)[^&\s\"']*", re.IGNORECASE)


class QueryRedactingFilter(logging.Filter):
    """Masks e.net's secret query parameters in urllib3's debug lines (it logs each request's URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the handler's error to report
            return True
        if _SECRET_PARAMETERS.search(message):
            record.msg, record.args = _SECRET_PARAMETERS.sub(r"\1***", message), None
        return True


def _mask_urllib3_debug_lines() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(existing, QueryRedactingFilter) for existing in logger.filters):
        logger.addFilter(QueryRedactingFilter())


_mask_urllib3_debug_lines()

_operator_locks: dict[tuple[str, str], threading.Lock] = {}
_operator_locks_guard = threading.Lock()


def operator_lock(connection: SysproConnection) -> threading.Lock:
    """One lock per SYSPRO server and operator in this process: a second logon ends the first session."""
    key = ((connection.base_url or "").rstrip("/").lower(), connection.operator.strip().lower())
    with _operator_locks_guard:
        return _operator_locks.setdefault(key, threading.Lock())


def lease_name(connection: SysproConnection) -> str:
    """The lease every instance takes before using this operator's session on this company."""
    return "syspro|" + "|".join(part.strip().lower() for part in
                                ((connection.base_url or "").rstrip("/"), connection.company_id,
                                 connection.operator))


class EnetSession:
    """One e.net session of a connection's operator: logged on lazily, renewed before SYSPRO's idle
    timeout (``session_minutes`` unused) and once when SYSPRO says it ended."""

    def __init__(self, connection: SysproConnection, secrets: SecretProvider, http: HttpClient, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not has_enet(connection) or connection.base_url is None:
            raise PermanentFailure(notes_unavailable(connection) or f"{connection.name}: e.net is not configured")
        self.connection = connection
        self.secrets = secrets
        self.http = http
        self._base = connection.base_url.rstrip("/")
        self._lock = operator_lock(connection)
        self._user_id: str | None = None
        self._clock = clock
        self._last_used = 0.0
        self._idle_limit = connection.session_minutes * 60.0
        self.logons = 0
        self.renewals = 0

    @property
    def logged_on(self) -> bool:
        return self._user_id is not None

    def query(self, business_object: str, xml_in: str) -> ET.Element:
        """Run a query-class business object; its XML answer."""
        return self._call("Query/Query", business_object, {"BusinessObject": business_object, "XmlIn": xml_in})

    def post(self, path: str, business_object: str, parameters: str, xml_in: str) -> ET.Element:
        """Run a transaction (``Transaction/Post``) or setup business object at ``path``; its XML answer.

        Not repeated after a timeout or a 5xx: it may have been applied (callers read back instead).
        """
        return self._call(path, business_object,
                          {"BusinessObject": business_object, "XmlParameters": parameters, "XmlIn": xml_in},
                          repeatable=False)

    def logon(self) -> None:
        """Log on now, not at the first query (the connection doctor checks the credentials so)."""
        with self._lock:
            self._logon_if_needed()

    def logoff(self, *, quiet: bool = True) -> None:
        """End the session (a session left open holds a licence seat until it times out).

        A failed Logoff is logged, or raised when not ``quiet`` (the connection doctor reports it).
        """
        with self._lock:
            user_id, self._user_id = self._user_id, None
            if user_id is None:
                return
            try:
                self._get("Logoff", "", {"UserId": user_id})
            except (HttpFailure, RetryLater) as exc:
                if not quiet:
                    raise
                log.warning("SYSPRO Logoff of %s failed: %s", self.connection.name, exc)

    # --- internals ---------------------------------------------------------------------------

    def _call(self, path: str, business_object: str, params: dict[str, str], repeatable: bool = True) -> ET.Element:
        with self._lock:
            user_id = self._logon_if_needed()
            payload = self._get(path, business_object, {"UserId": user_id, **params}, repeatable)
            self._last_used = self._clock()  # every call refreshes the session's idle time on SYSPRO's side
            if is_error_text(payload) and SESSION_ENDED.search(payload):
                # Nothing was done on an ended session: logging on again and repeating is safe.
                log.info("SYSPRO session of %s ended; logging on again", self.connection.name)
                self._user_id = None
                user_id = self._logon_if_needed()
                payload = self._get(path, business_object, {"UserId": user_id, **params}, repeatable)
            elif repeatable and _unexpected_error(payload):
                # An ERROR nobody recognises may be a session in a bad state: on a fresh session once
                # more, then the answer's own text. Writes are not repeated: they may have landed.
                log.info("SYSPRO %s %s of %s answered an unexpected ERROR; logging on again and retrying once",
                         path, business_object, self.connection.name)
                self._end_session(user_id)
                user_id = self._logon_if_needed()
                payload = self._get(path, business_object, {"UserId": user_id, **params}, repeatable)
            return self._checked(payload, f"SYSPRO {path} {business_object}", user_id)

    def _end_session(self, user_id: str) -> None:
        """Log the session off before a new logon, so it does not hold a licence seat until it times out."""
        self._user_id = None
        try:
            self._get("Logoff", "", {"UserId": user_id})
        except (HttpFailure, RetryLater) as exc:
            log.warning("SYSPRO Logoff of %s failed: %s", self.connection.name, exc)

    def _checked(self, payload: str, what: str, user_id: str) -> ET.Element:
        if is_error_text(payload):
            self._raise_error(what, payload, user_id)
        root = parse_answer(payload, what)
        errors = error_elements(root)
        if errors:
            self._raise_error(what, "; ".join(errors), user_id)
        return root

    def _raise_error(self, what: str, text: str, user_id: str | None) -> None:
        reason = _scrub(text, user_id, self._password())
        if SESSION_ENDED.search(text):
            # Still ended right after a new logon: another process keeps logging this operator on.
            raise RetryLater(60.0, f"{what}: the session ended again after a new logon ({reason})")
        if BO_NOT_INSTALLED in text:
            raise SysproError(f"{what}: the business object is not installed or licensed ({reason})")
        if NO_LICENCE.search(text):
            raise RetryLater(LICENCE_RETRY_SECONDS, f"{what}: {reason}")
        raise SysproError(f"{what}: {reason}")

    def _logon_if_needed(self) -> str:
        if self._user_id is not None and self._clock() - self._last_used < self._idle_limit:
            return self._user_id
        if self._user_id is not None:
            # Unused long enough for SYSPRO to time it out: give the seat back and log on anew
            # rather than have a call refused on it.
            log.info("SYSPRO session of %s unused for %d minutes or more; logging on again",
                     self.connection.name, self.connection.session_minutes)
            self.renewals += 1
            self._end_session(self._user_id)
        params = {
            "Operator": self.connection.operator,
            "OperatorPassword": self._password(),
            "CompanyId": self.connection.company_id,
            # Sent even when blank: empty values are accepted, missing parameters are not.
            "CompanyPassword": self._company_password(),
        }
        payload = self._get("Logon", "", params)
        if is_error_text(payload):
            reason = _scrub(payload, self._password(), self._company_password())
            if NO_LICENCE.search(payload):
                raise RetryLater(LICENCE_RETRY_SECONDS, f"SYSPRO Logon: {reason}")
            raise SysproError(f"SYSPRO Logon: {reason}")
        user_id = payload.strip()
        if not user_id or any(character in user_id for character in "<> \r\n"):
            raise SysproError("SYSPRO Logon: the answer holds no session id")
        self._user_id = user_id
        self._last_used = self._clock()
        self.logons += 1
        return user_id

    def _get(self, path: str, business_object: str, params: Mapping[str, str], repeatable: bool = True) -> str:
        url = f"{self._base}/{path}?{urlencode(params, quote_via=quote)}"
        call = f"SYSPRO {path} {business_object}".rstrip()
        response: requests.Response = send_naming_only(call, lambda: self.http.get(url, idempotent=repeatable))
        text = decode_body(response.content, response.headers.get("Content-Type", ""))
        return unwrap(text)

    def _password(self) -> str:
        ref = self.connection.password
        return self.secrets.get(ref.name).reveal() if ref is not None else ""

    def _company_password(self) -> str:
        ref = self.connection.company_password
        return self.secrets.get(ref.name).reveal() if ref is not None else ""


def _unexpected_error(payload: str) -> bool:
    """An ERROR answer that is none of the failures with a known meaning (no licence, object not installed)."""
    return is_error_text(payload) and BO_NOT_INSTALLED not in payload and not NO_LICENCE.search(payload)


class EnetReader(TableReader):
    """Table reads through COMFND on an e.net session."""

    def __init__(self, session: EnetSession) -> None:
        self.session = session

    def rows(self, query: TableQuery) -> list[Row]:
        root = self.session.query("COMFND", comfnd_xml(query))
        return table_rows(root, query.columns)

    # close() keeps the session: it is the process's one session of this operator (enet_session).


_sessions: dict[str, EnetSession] = {}
_sessions_guard = threading.Lock()


def enet_session(connection: SysproConnection, secrets: SecretProvider, http: HttpClient) -> EnetSession:
    """The process's e.net session of ``connection``, kept across polls and notes: one logon, not one per poll.

    A changed connection (a reloaded file), other secrets or another HTTP client get a new session.
    """
    with _sessions_guard:
        found = _sessions.get(connection.name)
        if found is None or found.connection != connection or found.secrets is not secrets or found.http is not http:
            found = _sessions[connection.name] = EnetSession(connection, secrets, http)
        return found


def reset_sessions() -> None:
    """Log off and forget every kept session (tests; a host shutting down)."""
    with _sessions_guard:
        sessions = list(_sessions.values())
        _sessions.clear()
    for session in sessions:
        session.logoff()


class ODataReader(TableReader):
    """Table reads through the SYSPRO OData service (read-only, Basic auth)."""

    def __init__(self, connection: SysproConnection, secrets: SecretProvider, http: HttpClient) -> None:
        if not connection.odata_url or connection.odata_password is None:
            raise ValueError(f"{connection.name}: the OData service needs odata_url and odata_password")
        self.connection = connection
        self._secrets = secrets
        self._http = http
        self._base = connection.odata_url.rstrip("/")

    @property
    def max_rows(self) -> int:
        return ODATA_MAX_ROWS

    def rows(self, query: TableQuery) -> list[Row]:
        path = ODATA_TABLE_PATH.format(company=quote(self.connection.company_id, safe=""),
                                       table=quote(query.table, safe=""))
        options = {"$select": ",".join(query.columns), "$orderby": ",".join(query.order_by) or None,
                   "$top": str(min(query.rows, ODATA_MAX_ROWS)), "$filter": odata_filter(query.where)}
        url = f"{self._base}/{path}?" + urlencode({k: v for k, v in options.items() if v}, safe="$,'():",
                                                  quote_via=quote)
        password = self._secrets.get(self.connection.odata_password.name).reveal()  # type: ignore[union-attr]
        call = f"SYSPRO OData {query.table}"
        response = send_naming_only(call, lambda: self._http.get(
            url, auth=(self.connection.operator, password), headers={"Accept": "application/json"}))
        try:
            body = response.json()
        except ValueError:
            raise SysproError(f"{call}: the answer is not JSON") from None
        values = body.get("value") if isinstance(body, dict) else None
        if not isinstance(values, list):
            raise SysproError(f"{call}: the answer has no value list")
        wanted = {column.lower(): column for column in query.columns}
        return [_named_as_asked(item, wanted) for item in values if isinstance(item, dict)]


def _named_as_asked(item: Mapping[str, Any], wanted: Mapping[str, str]) -> Row:
    """One OData row, its columns spelt as the query asked for them, without its ``@`` annotations."""
    return {wanted.get(name.lower(), name): value for name, value in item.items() if not name.startswith("@")}


# --- one HTTP pool per connection ---------------------------------------------------------------


class Transport:
    """The connection's pooled HTTP client, shared by every poll cycle and note of the process."""

    def __init__(self, connection: SysproConnection) -> None:
        self.connection = connection
        policy = RetryPolicy(read_timeout=CALL_TIMEOUT_SECONDS)
        self.http = HttpClient(policy, verify=connection.ca_bundle or True)

    def close(self) -> None:
        self.http.close()


_transports: PerConnection[Transport] = PerConnection(Transport)


def transport(connection: SysproConnection) -> Transport:
    return _transports.get(connection)


def reset_transports() -> None:
    _transports.reset()
