"""QAD EE / Adaptive ERP: polled through the Web UI's browses, notes written through QXtend.

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

Entities, in the order one poll cycle reads them:

1. ``GoodsReceipts``: ``tr_hist`` rows of type ``RCT-PO`` after the last ``tr_trnbr`` read
   (a number cursor), with ``prh_hist`` receiver, part and quantity where the browse joins it.
2. ``UnmatchedInvoices``: supplier invoices (EE ``CInvoice``) not yet through the three-way
   match. An invoice whose PO line already has a posted receipt (one read earlier in this
   cycle, or found in the ERP) waits on the match, not on the goods: ``status`` tells which.
   No stamp moves when they change: the watched fields (status, match status, hold) are hashed.
3. ``PendingPurchaseOrders``: open (blank ``po_stat``) purchase orders not yet confirmed;
   ``po_mstr`` has no modification date either: status, confirmation, total and revision are
   hashed.

The names and shapes this module cannot know for sure are in the block marked "check on the
customer's instance" below, and in ``shared.erp.qad.qxtend`` for the write-back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from functools import lru_cache
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from shared.clients import PerConnection
from shared.erp.polling import NONE, NUMBER, Note, Page, PageRequest, PolledEntity, Source, phone_or_as_stored
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


@dataclass(frozen=True)
class Browse:
    """A browse the adapter reads: its default id (overridable per connection) and the columns it relies on."""

    name: str
    default_id: str
    key: str  # unique, ordered: pages are read after the last key of the page before
    domain: str  # the column holding the domain code
    conditions: tuple[tuple[str, str, str], ...] = ()  # (column, operator, value), always applied
    numeric_key: bool = False  # an integer key (ordered as a number), else character (ordered as text)


RECEIPTS = Browse("receipts", "urn:browse:mfg:tr_hist_rct_po", key="tr_hist.tr_trnbr", domain="tr_hist.tr_domain",
                  conditions=(("tr_hist.tr_type", "eq", "RCT-PO"),), numeric_key=True)
INVOICES = Browse("invoices", "urn:browse:fin:cinvoice_ap_matching", key="CInvoice.CInvoice_ID",
                  domain="Domains.DomainCode", numeric_key=True)
PURCHASE_ORDERS = Browse("purchase_orders", "urn:browse:mfg:po_mstr_approval", key="po_mstr.po_nbr",
                         domain="po_mstr.po_domain")
SUPPLIERS = Browse("suppliers", "urn:browse:mfg:vd_mstr_ad_mstr", key="vd_mstr.vd_addr", domain="vd_mstr.vd_domain")
BROWSES: Mapping[str, Browse] = {browse.name: browse for browse in (RECEIPTS, INVOICES, PURCHASE_ORDERS, SUPPLIERS)}

# Receipt columns come from tr_hist and, when the browse joins it, prh_hist (on tr_lot = prh_receiver,
# tr_nbr = prh_nbr, tr_line = prh_line). Supplier invoice columns: EE CInvoice with Creditor and
# APMatching; the PO link, currency and hold columns are the least certain of all.
INVOICE_PO, INVOICE_PO_LINE = "PoNbr", "PoLine"
INVOICE_CURRENCY, INVOICE_HELD = "CurrencyCode", "CInvoiceIsHeld"
MATCH_FINISHED = "FINISHEDAPMATCHING"
# Calculated columns of the PO browse (po_mstr has no total of its own).
PO_TOTAL, PO_LINE_COUNT = "po_total", "po_line_count"
# --- end of the unconfirmed block -----------------------------------------------------------------

PROGRESS_NULL = "?"
_PROGRESS_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})")
# Browse bookkeeping columns that say nothing about the record.
_NOISE = re.compile(r"^(?:BrowseRowOrderIndex|uniqueId|decoration_cell|oid_.*|.*_rowid)$")
_JSON_TYPES = ("application/json", "+json")
DEFAULT_READ_TIMEOUT = 60.0  # browses over large tables are slow
TOKEN_RENEW_MARGIN = 60.0
CYCLE_CACHE_LIMIT = 20_000  # per poll cycle: suppliers, receipt look-ups, PO lines received


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


def quantity(value: Any) -> float | int | None:
    """A quantity as people read it: 250, not 250.0."""
    amount = number(value)
    return int(amount) if amount is not None and amount.is_integer() else amount


def text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def po_status(value: Any) -> str:
    """``po_stat``: blank is open, ``c`` closed, ``x`` cancelled, in either case."""
    code = text(value).lower()
    return {"": "open", "c": "closed", "x": "cancelled"}.get(code, code)


def _order_key(value: Any, numeric: bool) -> Any:
    if numeric:
        amount = number(value)
        if amount is None:
            raise ValueError(f"{value!r} is not a number")
        return amount
    return text(value).upper()  # Progress compares text without case


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


# --- one poll cycle ----------------------------------------------------------------------------


class _Bounded(OrderedDict):
    """A dict that forgets its oldest entries beyond ``limit``: memory stays flat however much is read."""

    def __init__(self, limit: int = CYCLE_CACHE_LIMIT) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


@dataclass(frozen=True)
class Supplier:
    name: str = ""
    phone: str = ""


POLine = tuple[str, str | None]  # PO number (upper case) and line (None: any line)


class QadCycle:
    """One poll cycle of a connection: the shared client, and what this cycle has learnt so far."""

    def __init__(self, client: QadClient, *, cache_limit: int = CYCLE_CACHE_LIMIT) -> None:
        self.client = client
        self.domain = client.domain
        self._suppliers: _Bounded = _Bounded(cache_limit)
        self._received: _Bounded = _Bounded(cache_limit)  # PO lines with a receipt read in this cycle or found

    def close(self) -> None:
        self._suppliers.clear()
        self._received.clear()

    def page(self, browse: Browse, request: PageRequest, after: Any) -> tuple[list[dict[str, Any]], str | None]:
        """Rows of one page in this domain, cleaned, and the token of the next page (None: last page)."""
        raw = self.client.browse_page(browse, size=request.size, after=after)
        rows = [clean_row(row) for row in raw]
        key = column_name(browse.key)
        _check_key_order(browse, [row.get(key) for row in rows], after)
        next_token = text(rows[-1].get(key)) if len(raw) >= request.size else None
        domain_field = column_name(browse.domain)
        mine = [row for row in rows if text(row.get(domain_field) or self.domain).upper() == self.domain.upper()]
        if len(mine) < len(rows):
            log.warning("browse %s returned %d row(s) of another domain; ignored", browse.name, len(rows) - len(mine))
        return mine, next_token

    # --- suppliers: one look-up per supplier per cycle --------------------------------------------

    def add_suppliers(self, rows: Iterable[dict[str, Any]], code_field: str) -> None:
        rows = list(rows)
        for code in sorted({text(row.get(code_field)) for row in rows} - {""}):
            if code.upper() not in self._suppliers:
                self._suppliers[code.upper()] = self._fetch_supplier(code)
        for row in rows:
            found = self._suppliers.get(text(row.get(code_field)).upper(), Supplier())
            row["supplier_name"], row["supplier_phone"] = found.name, found.phone

    def _fetch_supplier(self, code: str) -> Supplier:
        try:
            rows = self.client.browse_page(SUPPLIERS, size=1, conditions=[(SUPPLIERS.key, "eq", code)])
        except ValueError:
            return Supplier()  # a code the filter cannot carry
        if not rows:
            return Supplier()
        row = clean_row(rows[0])
        name = text(row.get("ad_name")) or text(row.get("vd_sort"))
        return Supplier(name, phone_or_as_stored(row.get("ad_phone"), self.client.connection.default_region))

    # --- receipts: what this cycle read, and look-ups for the rest ------------------------------

    def saw_receipt(self, po: str, line: Any) -> None:
        self._received[(po.upper(), text(line) or None)] = True
        self._received[(po.upper(), None)] = True

    def receipts_posted(self, lines: Iterable[POLine]) -> dict[POLine, bool]:
        """Whether each PO line has a posted receipt; one browse call per line not seen in this cycle."""
        found: dict[POLine, bool] = {}
        for line in set(lines):
            if line not in self._received:
                self._received[line] = self._look_up_receipt(*line)
            found[line] = bool(self._received.get(line))
        return found

    def _look_up_receipt(self, po: str, line: str | None) -> bool:
        conditions = [("tr_hist.tr_nbr", "eq", po)] + ([("tr_hist.tr_line", "eq", line)] if line else [])
        try:
            return bool(self.client.browse_page(RECEIPTS, size=1, conditions=conditions))
        except ValueError:
            return False


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


def _after(request: PageRequest) -> Any:
    """The key the page starts after: the token of the page before, else the cursor's lower bound."""
    return request.token if request.token is not None else request.since


# --- goods receipts --------------------------------------------------------------------------------


def _read_receipts(cycle: QadCycle, entity: PolledEntity, request: PageRequest) -> Page:
    rows, token = cycle.page(RECEIPTS, request, _after(request))
    records = [receipt_fields(row, cycle.domain) for row in rows]
    for record in records:
        if record["po_number"]:
            cycle.saw_receipt(record["po_number"], record["po_line"])
    cycle.add_suppliers(records, "supplier")
    return Page(records, token)


def receipt_fields(row: Mapping[str, Any], domain: str) -> dict[str, Any]:
    received = quantity(row.get("prh_rcvd"))
    if received is None:
        received = quantity(row.get("tr_qty_loc"))
    cost = number(row.get("prh_pur_cost"))
    po = text(row.get("tr_nbr")) or text(row.get("prh_nbr"))
    return {
        **row,
        "domain": domain,
        "document": po,
        "po_number": po,
        "po_line": text(row.get("tr_line")) or text(row.get("prh_line")),
        "receiver": text(row.get("prh_receiver")) or text(row.get("tr_lot")),
        "part": text(row.get("prh_part")) or text(row.get("tr_part")),
        "quantity": received,
        "site": text(row.get("tr_site")),
        "supplier": text(row.get("prh_vend")),
        "amount": round(received * cost, 2) if received is not None and cost is not None else None,
        "currency": text(row.get("prh_curr")),
        "receipt_date": row.get("prh_rcp_date") or row.get("tr_effdate") or row.get("tr_date"),
        "status": "received",
        "line_count": 1,
    }


# --- supplier invoices waiting on the three-way match ---------------------------------------------

AWAITING_RECEIPT, AWAITING_MATCH = "awaiting-receipt", "awaiting-match"


def _read_invoices(cycle: QadCycle, entity: PolledEntity, request: PageRequest) -> Page:
    rows, token = cycle.page(INVOICES, request, _after(request))
    records = [invoice_fields(row, cycle.domain) for row in rows if _waits_on_match(row)]
    posted = cycle.receipts_posted(_po_line(record) for record in records)
    for record in records:
        received = posted[_po_line(record)]
        record["receipt_posted"] = "yes" if received else "no"
        record["status"] = AWAITING_MATCH if received else AWAITING_RECEIPT
    cycle.add_suppliers(records, "supplier")
    return Page(records, token)


def _waits_on_match(row: Mapping[str, Any]) -> bool:
    """Open, linked to a PO, and not through the match (a non-PO invoice has nothing to wait for)."""
    is_open = row.get("CInvoiceIsOpen")
    matched = text(row.get("APMatchingStatus")).upper() == MATCH_FINISHED
    return bool(text(row.get(INVOICE_PO))) and not matched and (is_open is None or truthy(is_open))


def _po_line(record: Mapping[str, Any]) -> POLine:
    return (text(record["po_number"]).upper(), text(record["po_line"]) or None)


def invoice_fields(row: Mapping[str, Any], domain: str) -> dict[str, Any]:
    reference = text(row.get("CInvoiceReference")) or text(row.get("CInvoiceVoucher"))
    return {
        **row,
        "domain": domain,
        "document": reference,
        "invoice_id": text(row.get("CInvoice_ID")),
        "voucher": text(row.get("CInvoiceVoucher")),
        "supplier": text(row.get("CreditorCode")),
        "amount": number(row.get("CInvoiceOriginalCreditTC")),
        "currency": text(row.get(INVOICE_CURRENCY)),
        "invoice_date": row.get("CInvoiceDate"),
        "due_date": row.get("CInvoiceDueDate"),
        "po_number": text(row.get(INVOICE_PO)),
        "po_line": text(row.get(INVOICE_PO_LINE)),
        "match_status": text(row.get("APMatchingStatus")).upper(),
        "on_hold": "yes" if truthy(row.get(INVOICE_HELD)) else "no",
    }


# --- purchase orders pending approval -----------------------------------------------------------


def _read_purchase_orders(cycle: QadCycle, entity: PolledEntity, request: PageRequest) -> Page:
    rows, token = cycle.page(PURCHASE_ORDERS, request, _after(request))
    records = [record for record in (purchase_order_fields(row, cycle.domain) for row in rows)
               if record["status"] == "open" and record["approval"] == "pending"]
    cycle.add_suppliers(records, "supplier")
    return Page(records, token)


def purchase_order_fields(row: Mapping[str, Any], domain: str) -> dict[str, Any]:
    lines = number(row.get(PO_LINE_COUNT))
    return {
        **row,
        "domain": domain,
        "document": text(row.get("po_nbr")),
        "po_number": text(row.get("po_nbr")),
        "supplier": text(row.get("po_vend")),
        "amount": number(row.get(PO_TOTAL)),
        "currency": text(row.get("po_curr")),
        "order_date": row.get("po_ord_date"),
        "due_date": row.get("po_due_date"),
        "buyer": text(row.get("po_buyer")),
        "status": po_status(row.get("po_stat")),
        "approval": "confirmed" if truthy(row.get("po_confirm")) else "pending",
        "line_count": int(lines) if lines is not None else None,
    }


# --- what the framework reads ------------------------------------------------------------------

RECEIPTS_ENTITY, INVOICES_ENTITY, PURCHASE_ORDERS_ENTITY = "GoodsReceipts", "UnmatchedInvoices", "PendingPurchaseOrders"
# Record entities: replies and delivery statuses are recorded against these, and notes written to them.
RECEIPT_RECORD, INVOICE_RECORD, PO_RECORD, SUPPLIER_RECORD = "Receipt", "SupplierInvoice", "PurchaseOrder", "Supplier"

ENTITIES: Mapping[str, PolledEntity] = {
    RECEIPTS_ENTITY: PolledEntity(
        name=RECEIPTS_ENTITY, keys=("tr_trnbr",), cursor=NUMBER, cursor_field="tr_trnbr", read=_read_receipts,
        record_entity=RECEIPT_RECORD, record_key=("domain", "po_number", "receiver")),
    INVOICES_ENTITY: PolledEntity(
        name=INVOICES_ENTITY, keys=("CInvoice_ID",), cursor=NONE, read=_read_invoices,
        watched=("status", "match_status", "on_hold"),
        record_entity=INVOICE_RECORD, record_key=("domain", "supplier", "document")),
    PURCHASE_ORDERS_ENTITY: PolledEntity(
        name=PURCHASE_ORDERS_ENTITY, keys=("po_nbr",), cursor=NONE, read=_read_purchase_orders,
        watched=("status", "approval", "amount", "currency", "po_rev", "line_count"),
        record_entity=PO_RECORD, record_key=("domain", "po_number")),
}


def open_source(connection: QadConnection) -> Source:
    cycle = QadCycle(qad_client(connection))
    entities = {name: replace(entity, page_size=connection.page_size) for name, entity in ENTITIES.items()}
    return Source(client=cycle, entities=entities, close=cycle.close)


# --- notes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommentTarget:
    """Where a note goes: the master comment of a PO or a supplier, and what it is about."""

    reference: str  # cmt_ref
    about: str  # a first line naming the record, when the reference alone does not


# Record entity -> number of key parts: domain first, then the PO or supplier, then the document.
_KEY_PARTS: Mapping[str, int] = {PO_RECORD: 2, RECEIPT_RECORD: 3, INVOICE_RECORD: 3, SUPPLIER_RECORD: 2}


def comment_target(connection: QadConnection, note: Note) -> CommentTarget:
    """The PO or supplier a reply about ``note.record_entity``/``record_key`` is written against."""
    parts = note.record_key.split("|")
    expected = _KEY_PARTS.get(note.record_entity)
    if expected is None:
        raise PermanentFailure(f"QAD notes can be written on {', '.join(_KEY_PARTS)}, not {note.record_entity!r}")
    if len(parts) != expected or not all(part.strip() for part in parts):
        raise PermanentFailure(f"{note.record_entity} key {note.record_key!r} does not name a QAD record")
    if parts[0].upper() != connection.domain.upper():
        raise PermanentFailure(f"{note.record_key!r} is in domain {parts[0]!r}, not {connection.domain!r}")
    if note.record_entity == RECEIPT_RECORD:
        return CommentTarget(parts[1], f"Receipt {parts[2]}")
    if note.record_entity == INVOICE_RECORD:
        return CommentTarget(parts[1], f"Invoice {parts[2]}")
    return CommentTarget(parts[1], "")


def write_note(connection: QadConnection, note: Note) -> None:
    """The reply as a master comment (cmt_det) on its PO or supplier, through QXtend Inbound."""
    from shared.erp.qad.qxtend import comment_lines, qxtend_client

    target = comment_target(connection, note)
    qxtend_client(connection).add_master_comment(target.reference, comment_lines(note, target.about),
                                                 message_id=note.reference)
