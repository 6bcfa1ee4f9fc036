"""QAD EE / Adaptive ERP: the HTTP client that reads a tenant's Web UI browses.

- Auth, per connection: ``session`` (the default) logs in to the Web UI (qracore) with
  ``POST {base}/j_spring_security_check`` (form fields ``j_username``/``j_password``, never in
  the URL) and sends its session cookie with every browse; ``oauth`` gets a Bearer token from
  ``POST {base}/oauth/token``. A session or token that has expired (401, a redirect to the
  login page, an HTML page where JSON was asked for) logs in again once and repeats the call.
- Browses: ``GET {base}/api/qracore/browses?browseId=...&page=1&pageSize=M`` answer
  ``{"data": [{"tr_hist.tr_trnbr": 7, ...}]}``. Pages are read by key: each asks for rows whose
  key is greater than the last key of the page before, sorted by that key, so a row added
  meanwhile never shifts a page, and the token is that last key.
- Every request is scoped to the connection's domain (a filter on the browse's domain column);
  a row of another domain that comes back all the same is dropped.
- Progress quirks: ``?`` is null, dates may come as ``mm/dd/yy``, text compares without case.

The poll adapter (``shared.erp.qad.adapter``) names the browses and makes records of their rows.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from shared.clients import PerConnection
from shared.erp.qad.connection import QadConnection
from shared.http import HttpClient, HttpFailure, RetryPolicy, header_value, redact_url
from shared.outcomes import PermanentFailure

if TYPE_CHECKING:
    import requests

    from shared.storage.secrets import SecretProvider

log = logging.getLogger(__name__)

# --- check on the customer's instance --------------------------------------------------------------
# Nothing below is confirmed by QAD documentation; each item was chosen from working clients or
# the table definitions. Check them against the tenant (its Swagger, Browse Maintenance, a
# captured Web UI request) before going live.

# Web UI login (Spring Security): success answers with a new session cookie and a redirect that is
# not to the error page; a refusal redirects to a URL carrying "error".
LOGIN_PATH = "/j_spring_security_check"
LOGIN_USER_FIELD, LOGIN_PASSWORD_FIELD = "j_username", "j_password"
SESSION_COOKIE = "JSESSIONID"
LOGIN_REFUSED_MARK = "error"
# Adaptive REST token; the grant type is not published.
TOKEN_PATH = "/oauth/token"
TOKEN_GRANT = "password"
# Browses. "page" and "pageAction=first" are both sent: without them some tenants answer no rows.
BROWSE_PATH = "/api/qracore/browses"
PAGE_ACTION = "first"


def browse_filter(column: str, op: str, value: str) -> tuple[str, str]:
    """One filter condition as a query parameter: ``filter=<table.field>,<op>,<value>,literal``.

    Several conditions are sent as repeated ``filter`` parameters, all of which must hold.
    """
    if "," in value:
        raise ValueError(f"{value!r} cannot be sent in a browse filter (commas separate its parts)")
    return ("filter", f"{column},{op},{value},literal")


def browse_sort(column: str) -> tuple[str, str]:
    return ("sort", f"{column},asc")


# --- end of the unconfirmed block -----------------------------------------------------------------


@dataclass(frozen=True)
class Browse:
    """A browse the adapter reads: its default id (overridable per connection) and the columns it relies on."""

    name: str
    default_id: str
    key: str  # unique, ordered: pages are read after the last key of the page before
    domain: str  # the column holding the domain code
    conditions: tuple[tuple[str, str, str], ...] = ()  # (column, operator, value), always applied
    numeric_key: bool = False  # an integer key (ordered as a number), else character (ordered as text)


PROGRESS_NULL = "?"
_PROGRESS_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})")
# Browse bookkeeping columns that say nothing about the record.
_NOISE = re.compile(r"^(?:BrowseRowOrderIndex|uniqueId|decoration_cell|oid_.*|.*_rowid)$")
_JSON_TYPES = ("application/json", "+json")
DEFAULT_READ_TIMEOUT = 60.0  # browses over large tables are slow
TOKEN_RENEW_MARGIN = 60.0


class QadLoginRefused(PermanentFailure):
    """The tenant refused the connection's credentials; trying again with the same ones will not help."""


class QadPagingError(PermanentFailure):
    """A browse did not keep the key order that reading by key needs."""


# --- values ----------------------------------------------------------------------------------------


def progress_date(text: str) -> str:
    """``mm/dd/yy`` (or ``mm/dd/yyyy``) as ISO ``yyyy-mm-dd``; two-digit years from 1950 on, as Progress reads them."""
    found = _PROGRESS_DATE.fullmatch(text.strip())
    if found is None:
        return text
    month, day, year = (int(part) for part in found.groups())
    if len(found.group(3)) == 2:
        year += 1900 if year >= 50 else 2000
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return text


def clean_value(value: Any, is_date: bool) -> Any:
    if isinstance(value, str):
        if value.strip() == PROGRESS_NULL:
            return None
        if is_date:
            return progress_date(value)
    return value


def column_name(column: str) -> str:
    """``tr_hist.tr_trnbr`` -> ``tr_trnbr``: QAD field names already carry their table's prefix."""
    return column.rpartition(".")[2]


@lru_cache(maxsize=4096)
def _column_plan(column: str) -> tuple[str, bool]:
    """The field name a column becomes ("" to drop it) and whether it holds a date; columns repeat on every row."""
    name = column_name(column)
    return ("" if not name or _NOISE.match(name) else name), "date" in name.lower()


def clean_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A browse row with plain field names, Progress nulls as None and dates in ISO form."""
    row: dict[str, Any] = {}
    for column, value in raw.items():
        name, is_date = _column_plan(column)
        if name and name not in row:
            row[name] = clean_value(value, is_date)
    return row


def truthy(value: Any) -> bool:
    """A Progress logical as a browse renders it: true/false, yes/no, y/n, 1/0."""
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "y", "true", "1")
    return bool(value)


def number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).replace(",", "").strip())
    except ValueError:
        return None


def text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _order_key(value: Any, numeric: bool) -> Any:
    if numeric:
        amount = number(value)
        if amount is None:
            raise ValueError(f"{value!r} is not a number")
        return amount
    return text(value).upper()  # Progress compares text without case


def _check_key_order(browse: Browse, keys: Sequence[Any], after: Any) -> None:
    """Reading by key needs rows after ``after`` in ascending key order; anything else would skip rows."""
    bounds = ([after] if after is not None else []) + list(keys)
    try:
        ordered = [_order_key(key, browse.numeric_key) for key in bounds]
    except ValueError:
        ordered = []
    in_order = len(ordered) == len(bounds) and all(text(key) for key in keys)
    if not in_order or any(a >= b for a, b in pairwise(ordered)):
        raise QadPagingError(f"browse {browse.name}: rows do not come in ascending {browse.key} order after "
                             f"{after!r}; the sort or filter parameters are not honoured")


# --- the client --------------------------------------------------------------------------------


class QadClient:
    """Reads one QAD tenant's browses within the connection's domain. Thread-safe; shared by polls."""

    def __init__(self, connection: QadConnection, secrets: SecretProvider, *, http: HttpClient | None = None) -> None:
        self.connection = connection
        self.domain = connection.domain
        self._secrets = secrets
        self._base = connection.base_url.rstrip("/")
        self._http = http or HttpClient(RetryPolicy(read_timeout=DEFAULT_READ_TIMEOUT),
                                        verify=connection.ca_bundle or True)
        self._lock = threading.Lock()
        self._generation = 0  # logins so far; a call made under an older login is simply repeated
        self._signed_in = False
        self._token: str | None = None
        self._token_expires = 0.0

    @property
    def base_url(self) -> str:
        return self._base

    def browse_id(self, browse: Browse) -> str:
        return self.connection.browse_id(browse.name, browse.default_id)

    def browse_page(self, browse: Browse, *, size: int, after: Any = None,
                    conditions: Sequence[tuple[str, str, str]] = ()) -> list[dict[str, Any]]:
        """One page of rows (as the browse names its columns) whose key is greater than ``after``."""
        wanted = [(browse.domain, "eq", self.domain), *browse.conditions, *conditions]
        if after is not None:
            wanted.append((browse.key, "gt", str(after)))
        params = [("browseId", self.browse_id(browse)), ("page", "1"), ("pageSize", str(size)),
                  ("pageAction", PAGE_ACTION), *(browse_filter(*condition) for condition in wanted),
                  browse_sort(browse.key)]
        body = self._get_json(self._base + BROWSE_PATH, params)
        rows = body.get("data") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise PermanentFailure(f"browse {self.browse_id(browse)!r} answered without a list of rows in 'data'")
        return rows

    def page_after(self, browse: Browse, size: int, after: Any) -> tuple[list[dict[str, Any]], str | None]:
        """One page read by key: rows after ``after`` in this domain, cleaned, and the next token (None: last page)."""
        raw = self.browse_page(browse, size=size, after=after)
        rows = [clean_row(row) for row in raw]
        key = column_name(browse.key)
        _check_key_order(browse, [row.get(key) for row in rows], after)
        next_token = text(rows[-1].get(key)) if len(raw) >= size else None
        domain_field = column_name(browse.domain)
        mine = [row for row in rows if text(row.get(domain_field) or self.domain).upper() == self.domain.upper()]
        if len(mine) < len(rows):
            log.warning("browse %s returned %d row(s) of another domain; ignored", browse.name, len(rows) - len(mine))
        return mine, next_token

    def log_in(self) -> None:
        """Log in now (or fetch a token), not at the first browse: QadLoginRefused when refused."""
        with self._lock:
            self._sign_in()

    def close(self) -> None:
        self._http.close()

    # --- calls and sessions --------------------------------------------------------------------

    def _get_json(self, url: str, params: list[tuple[str, str]]) -> Any:
        generation = self._signed_in_generation()
        response = self._send(url, params)
        if _session_lost(response):
            log.info("QAD session of %s ended; logging in again", self.connection.name)
            self._sign_in_again(generation)
            response = self._send(url, params)
            if _session_lost(response):
                raise QadLoginRefused(f"{self.connection.name}: QAD refused a browse right after a new login "
                                      f"(HTTP {response.status_code}); check the user's access to browses")
        try:
            return response.json()
        except ValueError:
            raise PermanentFailure(f"{self.connection.name}: a browse answered something that is not JSON") from None

    def _send(self, url: str, params: list[tuple[str, str]]) -> requests.Response:
        try:
            return self._http.get(url, params=params, headers=self._auth_headers(), allow_redirects=False)
        except HttpFailure as failure:
            if failure.status == 401 and failure.response is not None:
                return failure.response
            raise

    def _auth_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _signed_in_generation(self) -> int:
        with self._lock:
            expired = self.connection.auth == "oauth" and time.monotonic() >= self._token_expires
            if not self._signed_in or expired:
                self._sign_in()
            return self._generation

    def _sign_in_again(self, seen: int) -> None:
        with self._lock:
            if self._generation == seen:  # no other thread has logged in since this call was made
                self._sign_in()

    def _sign_in(self) -> None:
        self._signed_in = False
        if self.connection.auth == "oauth":
            self._fetch_token()
        else:
            self._log_in()
        self._signed_in = True
        self._generation += 1

    def _password(self) -> str:
        return self._secrets.get(self.connection.password.name).reveal()

    def _log_in(self) -> None:
        self._http.session.cookies.clear()
        form = {LOGIN_USER_FIELD: self.connection.username, LOGIN_PASSWORD_FIELD: self._password()}
        try:
            response = self._http.post(self._base + LOGIN_PATH, data=form, allow_redirects=False, idempotent=True)
        except HttpFailure as failure:
            if failure.status in (400, 401, 403):
                self._refused()
            raise
        location = header_value(response.headers, "Location") or ""
        if LOGIN_REFUSED_MARK in location.lower() or SESSION_COOKIE not in self._http.session.cookies:
            self._refused()

    def _fetch_token(self) -> None:
        form = {"grant_type": TOKEN_GRANT, "username": self.connection.username, "password": self._password()}
        if self.connection.client_id:
            form["client_id"] = self.connection.client_id
        if self.connection.client_secret is not None:
            form["client_secret"] = self._secrets.get(self.connection.client_secret.name).reveal()
        try:
            response = self._http.post(self._base + TOKEN_PATH, data=form, idempotent=True)
        except HttpFailure as failure:
            if failure.status in (400, 401, 403):
                self._refused()
            raise
        body = response.json()
        self._token = str(body["access_token"])
        expires_in = number(body.get("expires_in")) or 3600.0
        self._token_expires = time.monotonic() + max(expires_in - TOKEN_RENEW_MARGIN, 1.0)

    def _refused(self) -> None:
        invalidate = getattr(self._secrets, "invalidate", None)  # a rotated password is read again next time
        if invalidate is not None:
            invalidate(self.connection.password.name)
        raise QadLoginRefused(f"{self.connection.name}: QAD at {redact_url(self._base)} refused the login of "
                              f"{self.connection.username!r}")


def _session_lost(response: requests.Response) -> bool:
    """401, a redirect (to the login page) or an HTML page instead of JSON: the session is gone."""
    if response.status_code == 401 or 300 <= response.status_code < 400:
        return True
    content_type = (header_value(response.headers, "Content-Type") or "").split(";")[0].strip().lower()
    return not any(content_type.endswith(kind) for kind in _JSON_TYPES)


def _new_qad_client(connection: QadConnection) -> QadClient:
    from shared.storage.secrets import get_secret_provider

    return QadClient(connection, get_secret_provider())


_clients: PerConnection[QadClient] = PerConnection(_new_qad_client)


def qad_client(connection: QadConnection) -> QadClient:
    """The process-wide client of this connection: its session is kept between polls."""
    return _clients.get(connection)


def reset_qad_clients() -> None:
    _clients.reset()
