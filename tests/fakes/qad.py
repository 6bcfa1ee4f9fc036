"""Fake QAD EE / Adaptive ERP tenant: Web UI login and browses, the Adaptive token, QXtend Inbound.

Behaviour follows the QAD reference (section 3 of the ERP polling notes); what the reference
marks unconfirmed is modelled as the adapter assumes it, so a change on either side shows:

- ``POST {tenant}/j_spring_security_check`` with ``j_username``/``j_password`` (form body or
  query): a new ``JSESSIONID`` cookie and a redirect to the tenant root, or a redirect to
  ``{tenant}/login?error`` for wrong credentials.
- ``POST {tenant}/oauth/token`` (``grant_type=password``, optional registered client):
  ``{"access_token", "token_type", "expires_in"}``; a Bearer token works instead of the cookie.
- ``GET {tenant}/api/qracore/browses?browseId=…&page=N&pageSize=M`` answers
  ``{"data": [{"<table>.<field>": value, …}]}``. ``filter=<table.field>,<op>,<value>[,literal]``
  (repeatable; all must hold; ``eq ne gt ge lt le``; text compares without case as Progress
  does) and ``sort=<table.field>,asc|desc``; without a sort, rows come in the browse's key
  order. Rows of every domain come back unless a filter names the domain column.
  ``GET {tenant}/api/qracore/browses/totalCount/?browseId=…`` answers ``{"totalCount": n}``.
- Progress quirks in the rows: unknown values are ``"?"``, ``tr_hist`` and ``prh_hist`` dates are
  ``mm/dd/yy``, logicals are JSON booleans, browse bookkeeping columns come along.
- Without a valid session or token a browse answers 401 (or, after ``expire_sessions(answer=…)``,
  a redirect to the login page or the login page itself with status 200).
- ``POST {qxi}/services/QdocWebService`` (``text/xml``, a ``SOAPAction`` header): the
  ``maintainMasterComment`` QDoc; the ``ttContext`` rows must carry a known user, password and
  domain; the comment is stored and the reply's ``result`` is ``success`` (or what
  ``answer_qdoc_next`` scripted: ``warning`` stores it too, ``error`` does not).

Failure injection, besides the base class's ``fail_next``/``delay_next``/``drop_next`` (a 429
with ``Retry-After`` included): ``fail_page(3)`` answers 500 for the third page of a read, however
it is asked for (page numbers or a key lower bound), until cleared or ``times`` is used up.

``fill_receipts(n)`` adds ``n`` synthetic receipts that take no memory until a page shows them,
for benchmarks over 100,000 rows and more.
"""

from __future__ import annotations

import itertools
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

from tests.fakes.server import FakeServer, RecordedRequest, Response, Route, route

TENANT_PATH = "/qad-central"
QXI_PATH = "/qxilive"
SESSION_COOKIE = "JSESSIONID"
DEFAULT_DOMAIN = "10USA"
DEFAULT_USER, DEFAULT_PASSWORD = "mfg@qad.com", "qad-password"
MAX_PAGE_SIZE = 10_000
TOKEN_SECONDS = 3600
BROWSE_IDS: Mapping[str, str] = {
    "receipts": "urn:browse:mfg:tr_hist_rct_po",
    "invoices": "urn:browse:fin:cinvoice_ap_matching",
    "purchase_orders": "urn:browse:mfg:po_mstr_approval",
    "suppliers": "urn:browse:mfg:vd_mstr_ad_mstr",
}
QDOC_NS = "urn:schemas-qad-com:xml-services"
QCOM_NS = "urn:schemas-qad-com:xml-services:common"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
_OPS: Mapping[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}


class BrowseError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def progress_date(day: date | None) -> str:
    """A date as QAD exports print it: ``mm/dd/yy``; unknown is ``?``."""
    return "?" if day is None else day.strftime("%m/%d/%y")


# --- records -----------------------------------------------------------------------------------


@dataclass
class SyntheticReceipts:
    """``count`` receipts from ``tr_trnbr`` ``first`` on, rendered only when a page shows them."""

    first: int
    count: int
    domain: str
    suppliers: tuple[str, ...]
    po_prefix: str
    day: date

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def row(self, trnbr: int) -> dict[str, Any]:
        index = trnbr - self.first
        supplier = self.suppliers[index % len(self.suppliers)]
        return receipt_row(self.domain, trnbr, "RCT-PO", f"{self.po_prefix}{index // 5:06d}", index % 5 + 1,
                           f"RC{trnbr}", f"PART-{index % 97:03d}", float(index % 9 + 1), supplier, 12.5, "USD",
                           self.day, index % 86400)


def receipt_row(domain: str, trnbr: int, tr_type: str, po: str, line: int, receiver: str, part: str, qty: float,
                supplier: str, cost: float, currency: str, day: date, seconds: int) -> dict[str, Any]:
    return {
        "tr_hist.tr_domain": domain, "tr_hist.tr_trnbr": trnbr, "tr_hist.tr_type": tr_type, "tr_hist.tr_nbr": po,
        "tr_hist.tr_line": line, "tr_hist.tr_lot": receiver, "tr_hist.tr_part": part, "tr_hist.tr_site": "10000",
        "tr_hist.tr_qty_loc": qty, "tr_hist.tr_date": progress_date(day), "tr_hist.tr_time": seconds,
        "tr_hist.tr_effdate": progress_date(day), "prh_hist.prh_receiver": receiver, "prh_hist.prh_vend": supplier,
        "prh_hist.prh_part": part, "prh_hist.prh_rcvd": qty, "prh_hist.prh_pur_cost": cost,
        "prh_hist.prh_curr": currency, "prh_hist.prh_rcp_date": progress_date(day), "prh_hist.prh_ps_nbr": "?",
        "local_variables.BrowseRowOrderIndex": trnbr, "tr_hist.tr_hist_rowid": f"0x{trnbr:016x}",
    }


@dataclass
class FakeComment:
    domain: str
    reference: str
    comment_type: str
    language: str
    lines: list[str]
    username: str
    message_id: str


@dataclass
class _PageFailure:
    page: int
    status: int
    browse_id: str | None
    domain: str | None
    remaining: int | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Browse:
    key: str  # the column rows are ordered by, unless a sort says otherwise
    domain: str
    rows: Callable[[int | None], Iterator[dict[str, Any]]]  # rows in key order, after a numeric key bound


class FakeQad(FakeServer):
    service_name = "qad"

    def __init__(self, *, port: int = 0, browse_ids: Mapping[str, str] | None = None) -> None:
        super().__init__(port=port)
        self._data_lock = threading.RLock()
        self.browse_ids = {**BROWSE_IDS, **(browse_ids or {})}
        self._users: dict[str, str] = {DEFAULT_USER: DEFAULT_PASSWORD}
        self._qxtend_users: dict[str, str] = {DEFAULT_USER: DEFAULT_PASSWORD}
        self._oauth_clients: dict[str, str] = {}
        self.domains: set[str] = {DEFAULT_DOMAIN}
        self._sessions: set[str] = set()
        self._tokens: dict[str, float] = {}
        self._unauthenticated = "401"
        self.logins = 0  # successful Web UI logins
        self.tokens_issued = 0
        self._receipts: list[dict[str, Any] | SyntheticReceipts] = []
        self._next_trnbr = 1000
        self._next_invoice_id = 50000
        self._pos: dict[tuple[str, str], dict[str, Any]] = {}
        self._invoices: dict[int, dict[str, Any]] = {}
        self._suppliers: dict[tuple[str, str], dict[str, Any]] = {}
        self._comments: list[FakeComment] = []
        self._page_failures: list[_PageFailure] = []
        # Per read (browse, page size, conditions but the key bound): the last key served and its page.
        self._reads: dict[tuple[Any, ...], tuple[str, int]] = {}
        self._pending_read: tuple[tuple[Any, ...], int] = ((), 0)
        self._qdoc_answers: list[tuple[str, str]] = []

    # --- addresses -------------------------------------------------------------------------

    @property
    def tenant_url(self) -> str:
        """The connection's ``base_url``: ``http://127.0.0.1:PORT/qad-central``."""
        return self.base_url + TENANT_PATH

    @property
    def qxtend_url(self) -> str:
        """The QXtend server: the endpoint is ``{qxtend_url}/services/QdocWebService``."""
        return self.base_url + QXI_PATH

    # --- accounts ----------------------------------------------------------------------------

    def add_user(self, username: str, password: str, *, qxtend: bool = True) -> None:
        with self._data_lock:
            self._users[username] = password
            if qxtend:
                self._qxtend_users[username] = password

    def add_domain(self, domain: str) -> None:
        with self._data_lock:
            self.domains.add(domain)

    def register_oauth_client(self, client_id: str, client_secret: str) -> None:
        """From now on the token endpoint wants this client (or another registered one)."""
        with self._data_lock:
            self._oauth_clients[client_id] = client_secret

    def expire_sessions(self, answer: str = "401") -> None:
        """End every session and token; a browse without one then answers ``answer``:
        ``"401"``, ``"redirect"`` (302 to the login page) or ``"html"`` (the login page, 200)."""
        if answer not in ("401", "redirect", "html"):
            raise ValueError(answer)
        with self._data_lock:
            self._sessions.clear()
            self._tokens.clear()
            self._unauthenticated = answer

    # --- records --------------------------------------------------------------------------

    def add_supplier(self, code: str, name: str, phone: str, *, domain: str = DEFAULT_DOMAIN) -> None:
        with self._data_lock:
            self._suppliers[(domain.upper(), code.upper())] = {
                "vd_mstr.vd_domain": domain, "vd_mstr.vd_addr": code, "vd_mstr.vd_sort": name.upper()[:28],
                "ad_mstr.ad_name": name, "ad_mstr.ad_phone": phone, "ad_mstr.ad_ext": "?",
                "ad_mstr.ad_country": "USA", "vd_mstr.vd_mstr_rowid": uuid.uuid4().hex[:16],
            }

    def add_receipt(self, po: str, line: int, part: str, qty: float, *, supplier: str, cost: float = 10.0,
                    currency: str = "USD", domain: str = DEFAULT_DOMAIN, receiver: str | None = None,
                    when: datetime | None = None, tr_type: str = "RCT-PO") -> int:
        """A posted receipt (or another tr_hist transaction); its ``tr_trnbr``."""
        moment = when or datetime.now(UTC)
        with self._data_lock:
            trnbr = self._take_trnbr(1)
            self._receipts.append(receipt_row(domain, trnbr, tr_type, po, line, receiver or f"RC{trnbr}", part, qty,
                                              supplier, cost, currency, moment.date(),
                                              moment.hour * 3600 + moment.minute * 60 + moment.second))
        return trnbr

    def fill_receipts(self, n: int, *, domain: str = DEFAULT_DOMAIN, suppliers: Sequence[str] = ("S-SYN",),
                      po_prefix: str = "SYN", day: date | None = None) -> tuple[int, int]:
        """Add ``n`` synthetic receipts (generated when read); their first and last ``tr_trnbr``."""
        with self._data_lock:
            block = SyntheticReceipts(self._take_trnbr(n), n, domain, tuple(suppliers), po_prefix,
                                      day or datetime.now(UTC).date())
            self._receipts.append(block)
        return block.first, block.last

    def _take_trnbr(self, count: int) -> int:
        first = self._next_trnbr
        self._next_trnbr += count
        return first

    def add_po(self, nbr: str, supplier: str, total: float, *, domain: str = DEFAULT_DOMAIN, status: str = "",
               confirmed: bool = False, currency: str = "USD", due: date | None = None,
               ordered: date | None = None, revision: int = 0, lines: int = 1, buyer: str = "JB") -> None:
        today = datetime.now(UTC).date()
        with self._data_lock:
            self._pos[(domain.upper(), nbr.upper())] = {
                "po_mstr.po_domain": domain, "po_mstr.po_nbr": nbr, "po_mstr.po_vend": supplier,
                "po_mstr.po_ord_date": (ordered or today).isoformat(),
                "po_mstr.po_due_date": (due or today + timedelta(days=14)).isoformat(), "po_mstr.po_stat": status,
                "po_mstr.po_confirm": confirmed, "po_mstr.po_curr": currency, "po_mstr.po_buyer": buyer,
                "po_mstr.po_rev": revision, "po_mstr.po_site": "10000", "po_mstr.po_cls_date": "?",
                "local_variables.po_total": total, "local_variables.po_line_count": lines,
            }

    def change_po(self, nbr: str, *, domain: str = DEFAULT_DOMAIN, **changes: Any) -> None:
        """``status``, ``confirmed``, ``total``, ``revision``, ``lines``, ``due``, ``currency``."""
        columns = {"status": "po_mstr.po_stat", "confirmed": "po_mstr.po_confirm", "total": "local_variables.po_total",
                   "revision": "po_mstr.po_rev", "lines": "local_variables.po_line_count",
                   "due": "po_mstr.po_due_date", "currency": "po_mstr.po_curr"}
        with self._data_lock:
            row = self._pos[(domain.upper(), nbr.upper())]
            for name, value in changes.items():
                row[columns[name]] = value.isoformat() if isinstance(value, date) else value

    def add_invoice(self, reference: str, supplier: str, po: str, amount: float, *, line: int | None = None,
                    currency: str = "USD", due: date | None = None, domain: str = DEFAULT_DOMAIN,
                    match_status: str = "", held: bool = False, is_open: bool = True) -> int:
        """A supplier invoice (EE CInvoice) linked to a PO (line); its ``CInvoice_ID``."""
        today = datetime.now(UTC).date()
        with self._data_lock:
            invoice_id = self._next_invoice_id
            self._next_invoice_id += 1
            self._invoices[invoice_id] = {
                "Domains.DomainCode": domain, "CInvoice.CInvoice_ID": invoice_id,
                "CInvoice.CInvoiceReference": reference, "CInvoice.CInvoiceVoucher": f"V{invoice_id}",
                "CInvoice.CInvoiceType": "INVOICE", "CInvoice.CInvoiceDate": today.isoformat(),
                "CInvoice.CInvoiceDueDate": (due or today + timedelta(days=30)).isoformat(),
                "CInvoice.CInvoiceOriginalCreditTC": amount, "CInvoice.CInvoiceIsOpen": is_open,
                "CInvoice.CInvoiceIsHeld": held, "Creditor.CreditorCode": supplier,
                "Currency.CurrencyCode": currency, "CInvoicePO.PoNbr": po,
                "CInvoicePO.PoLine": "?" if line is None else line, "APMatching.APMatchingStatus": match_status,
                "local_variables.uniqueId": uuid.uuid4().hex,
            }
        return invoice_id

    def change_invoice(self, invoice_id: int, **changes: Any) -> None:
        """``match_status``, ``held``, ``is_open``, ``amount``."""
        columns = {"match_status": "APMatching.APMatchingStatus", "held": "CInvoice.CInvoiceIsHeld",
                   "is_open": "CInvoice.CInvoiceIsOpen", "amount": "CInvoice.CInvoiceOriginalCreditTC"}
        with self._data_lock:
            row = self._invoices[invoice_id]
            for name, value in changes.items():
                row[columns[name]] = value

    def comments(self, reference: str | None = None, *, domain: str | None = None) -> list[FakeComment]:
        with self._data_lock:
            return [comment for comment in self._comments
                    if (reference is None or comment.reference.upper() == reference.upper())
                    and (domain is None or comment.domain.upper() == domain.upper())]

    # --- failure injection ------------------------------------------------------------------------

    def fail_page(self, page: int, status: int = 500, *, browse: str | None = None, domain: str | None = None,
                  times: int | None = None, headers: Mapping[str, str] | None = None) -> None:
        """Answer ``status`` for page ``page`` of any read of ``browse`` (a name of ``browse_ids``
        or an id; all when None) in ``domain``, ``times`` times or until ``clear_failures``."""
        browse_id = self.browse_ids.get(browse, browse) if browse else None
        with self._data_lock:
            self._page_failures.append(_PageFailure(page, status, browse_id, domain, times, dict(headers or {})))

    def clear_failures(self) -> None:
        with self._data_lock:
            self._page_failures.clear()
        self.clear_scripts()

    def answer_qdoc_next(self, result: str, message: str) -> None:
        """The next QDoc request gets ``result`` (``warning`` or ``error``) with ``message``."""
        with self._data_lock:
            self._qdoc_answers.append((result, message))

    # --- routes --------------------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        tenant = re.escape(TENANT_PATH)
        return [
            route("POST", tenant + r"/j_spring_security_check", self._login),
            route("GET", tenant + r"/login", self._login_page),
            route("POST", tenant + r"/oauth/token", self._token),
            route("GET", tenant + r"/api/qracore/browses", self._browse),
            route("GET", tenant + r"/api/qracore/browses/totalCount/?", self._total_count),
            route("POST", re.escape(QXI_PATH) + r"/services/QdocWebService", self._qdoc),
        ]

    def error_response(self, status: int, message: str) -> Response:
        return Response.json(status, {"success": False, "status": status, "message": message})

    # --- Web UI login and OAuth ---------------------------------------------------------------

    def _login(self, request: RecordedRequest, _match: re.Match[str]) -> Response:
        form = {**{k: v[0] for k, v in request.query.items()}, **{k: v[0] for k, v in (request.form or {}).items()}}
        user, password = form.get("j_username", ""), form.get("j_password", "")
        with self._data_lock:
            if not user or self._users.get(user) != password:
                return Response(302, b"", {"Location": f"{TENANT_PATH}/login?error"})
            session = uuid.uuid4().hex.upper()
            self._sessions.add(session)
            self.logins += 1
        return Response(302, b"", {"Location": f"{TENANT_PATH}/",
                                   "Set-Cookie": f"{SESSION_COOKIE}={session}; Path={TENANT_PATH}; HttpOnly"})

    def _login_page(self, _request: RecordedRequest, _match: re.Match[str]) -> Response:
        return _login_page()

    def _token(self, request: RecordedRequest, _match: re.Match[str]) -> Response:
        form = {k: v[0] for k, v in (request.form or {}).items()}
        with self._data_lock:
            if form.get("grant_type") != "password":
                return Response.json(400, {"error": "unsupported_grant_type"})
            client = form.get("client_id", "")
            if self._oauth_clients and (client not in self._oauth_clients
                                        or self._oauth_clients[client] != form.get("client_secret")):
                return Response.json(401, {"error": "invalid_client"})
            if self._users.get(form.get("username", "")) != form.get("password"):
                return Response.json(400, {"error": "invalid_grant", "error_description": "Bad credentials"})
            token = uuid.uuid4().hex
            self._tokens[token] = datetime.now(UTC).timestamp() + TOKEN_SECONDS
            self.tokens_issued += 1
        return Response.json(200, {"access_token": token, "token_type": "bearer", "expires_in": TOKEN_SECONDS})

    def _authenticated(self, request: RecordedRequest) -> bool:
        authorization = request.headers.get("Authorization", "")
        with self._data_lock:
            if authorization.startswith("Bearer "):
                expires = self._tokens.get(authorization[7:])
                return expires is not None and expires > datetime.now(UTC).timestamp()
            cookies = _cookies(request.headers.get_all("Cookie"))
            return cookies.get(SESSION_COOKIE) in self._sessions

    def _unauthenticated_answer(self) -> Response:
        if self._unauthenticated == "redirect":
            return Response(302, b"", {"Location": f"{TENANT_PATH}/login"})
        if self._unauthenticated == "html":
            return _login_page()
        return self.error_response(401, "Full authentication is required to access this resource")

    # --- browses --------------------------------------------------------------------------------

    def _browse(self, request: RecordedRequest, _match: re.Match[str]) -> Response:
        if not self._authenticated(request):
            return self._unauthenticated_answer()
        try:
            browse_id = _required(request, "browseId")
            page, size = int(_required(request, "page")), int(_required(request, "pageSize"))
            if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
                raise BrowseError(400, f"page must be 1 or more and pageSize 1 to {MAX_PAGE_SIZE}")
            with self._data_lock:
                browse = self._browse_named(browse_id)
                conditions = [_condition(text) for text in request.query.get("filter", ())]
                failure = self._failure_for(browse_id, browse, conditions, page, size)
                if failure is not None:
                    message = self.default_error_message(failure.status)
                    return Response.json(failure.status, {"success": False, "status": failure.status,
                                                          "message": message}, failure.headers)
                rows = self._matching(browse, conditions, request.query_value("sort"))
                data = list(itertools.islice(rows, (page - 1) * size, page * size))
                self._served(browse, data, size)
        except BrowseError as error:
            return self.error_response(error.status, str(error))
        return Response.json(200, {"data": data})

    def _total_count(self, request: RecordedRequest, _match: re.Match[str]) -> Response:
        if not self._authenticated(request):
            return self._unauthenticated_answer()
        try:
            with self._data_lock:
                browse = self._browse_named(_required(request, "browseId"))
                conditions = [_condition(text) for text in request.query.get("filter", ())]
                count = sum(1 for _ in self._matching(browse, conditions, None))
        except BrowseError as error:
            return self.error_response(error.status, str(error))
        return Response.json(200, {"totalCount": count})

    def _browse_named(self, browse_id: str) -> _Browse:
        browses = {
            "receipts": _Browse("tr_hist.tr_trnbr", "tr_hist.tr_domain", self._receipt_rows),
            "invoices": _Browse("CInvoice.CInvoice_ID", "Domains.DomainCode",
                                lambda _bound: iter(sorted(self._invoices.values(),
                                                           key=lambda row: row["CInvoice.CInvoice_ID"]))),
            "purchase_orders": _Browse("po_mstr.po_nbr", "po_mstr.po_domain",
                                       lambda _bound: iter(sorted(self._pos.values(),
                                                                  key=lambda row: row["po_mstr.po_nbr"].upper()))),
            "suppliers": _Browse("vd_mstr.vd_addr", "vd_mstr.vd_domain",
                                 lambda _bound: iter(sorted(self._suppliers.values(),
                                                            key=lambda row: row["vd_mstr.vd_addr"].upper()))),
        }
        for name, known_id in self.browse_ids.items():
            if known_id == browse_id:
                return browses[name]
        raise BrowseError(404, f"Browse {browse_id} not found")

    def _receipt_rows(self, after: int | None) -> Iterator[dict[str, Any]]:
        for block in self._receipts:
            if isinstance(block, SyntheticReceipts):
                if after is None or block.last > after:
                    start = block.first if after is None else max(block.first, after + 1)
                    yield from (block.row(trnbr) for trnbr in range(start, block.last + 1))
            elif after is None or block["tr_hist.tr_trnbr"] > after:
                yield block

    def _matching(self, browse: _Browse, conditions: list[tuple[str, str, str]],
                  sort: str | None) -> Iterator[dict[str, Any]]:
        """Rows that meet every condition, in the sort asked for (the key order when none)."""
        rows = browse.rows(_numeric_bound(browse.key, conditions))
        selected = (row for row in rows if all(_holds(row, condition) for condition in conditions))
        column, descending = _sort(sort, browse.key)
        if column == browse.key and not descending:
            return selected
        return iter(sorted(selected, key=lambda row: _comparable(row.get(column)), reverse=descending))

    def _failure_for(self, browse_id: str, browse: _Browse, conditions: list[tuple[str, str, str]], page: int,
                     size: int) -> _PageFailure | None:
        """The armed failure for this page of a read, if any.

        Read by page number, the page is ``page``. Read by key, a request whose lower bound is the
        last key the previous page of the same read served is that page's successor; any other
        bound starts a new read at page 1. A failed page is not served, so its retry is the same page.
        """
        bound = next((value for column, op, value in conditions if column == browse.key and op in ("gt", "ge")), None)
        read = (browse_id, size, tuple(sorted(c for c in conditions if c[0] != browse.key)))
        last_key, last_index = self._reads.get(read, (None, 0))
        index = page if bound is None else (last_index + 1 if bound == last_key else 1)
        domain = next((value for column, op, value in conditions if column == browse.domain and op == "eq"), None)
        for failure in self._page_failures:
            if failure.page != index or failure.browse_id not in (None, browse_id):
                continue
            if failure.domain is not None and (domain or "").upper() != failure.domain.upper():
                continue
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._page_failures.remove(failure)
            return failure
        self._pending_read = (read, index)
        return None

    def _served(self, browse: _Browse, data: list[dict[str, Any]], size: int) -> None:
        read, index = self._pending_read
        if len(data) < size:
            self._reads.pop(read, None)  # the last page: this read is over
        else:
            self._reads[read] = (str(data[-1][browse.key]), index)

    # --- QXtend -----------------------------------------------------------------------------------

    def _qdoc(self, request: RecordedRequest, _match: re.Match[str]) -> Response:
        if not request.content_type.lower().startswith("text/xml"):
            return Response(415, b"Content-Type must be text/xml", {"Content-Type": "text/plain"})
        if "SOAPAction" not in request.headers:
            return _soap_fault("no SOAPAction header")
        try:
            body = ET.fromstring(request.body)
        except ET.ParseError as error:
            return _soap_fault(f"the request is not XML: {error}")
        operation = next(iter(_child(body, SOAP_NS, "Body") or []), None)
        if operation is None or _local(operation.tag) != "maintainMasterComment":
            return _soap_fault(f"unknown QDoc {_local(operation.tag) if operation is not None else ''!r}")
        context = _session_context(operation)
        name = "maintainMasterCommentResponse"
        with self._data_lock:
            if self._qxtend_users.get(context.get("username", "")) != context.get("password"):
                return _qdoc_reply(name, "error", "User ID or password is not valid.")
            if context.get("domain", "").upper() not in {domain.upper() for domain in self.domains}:
                return _qdoc_reply(name, "error", f"Domain {context.get('domain', '')} does not exist.")
            record = _find(operation, "masterComment")
            reference = _text_of(record, "cmtRef")
            if record is None or not reference:
                return _qdoc_reply(name, "error", "Reference is required.")
            result, message = self._qdoc_answers.pop(0) if self._qdoc_answers else ("success", "")
            if result != "error":
                self._comments.append(FakeComment(
                    context["domain"], reference, _text_of(record, "cmtType"), _text_of(record, "cmtLang"),
                    [(line.text or "") for line in record if _local(line.tag) == "cmtCmmt"],
                    context.get("username", ""), _text_of(_child(body, SOAP_NS, "Header"), "MessageID")))
        return _qdoc_reply(name, result, message)


# --- helpers ----------------------------------------------------------------------------------------


def _login_page() -> Response:
    return Response(200, b"<html><body><form action='j_spring_security_check'></form></body></html>",
                    {"Content-Type": "text/html;charset=UTF-8"})


def _cookies(headers: Iterable[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for header in headers:
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            found.setdefault(name, value)
    return found


def _required(request: RecordedRequest, name: str) -> str:
    value = request.query_value(name)
    if not value:
        raise BrowseError(400, f"{name} is required")
    return value


def _condition(text: str) -> tuple[str, str, str]:
    parts = text.split(",")
    if len(parts) not in (3, 4) or parts[1] not in _OPS or (len(parts) == 4 and parts[3] not in ("", "literal")):
        raise BrowseError(400, f"Invalid filter {text!r}")
    return parts[0], parts[1], parts[2]


def _numeric_bound(key: str, conditions: list[tuple[str, str, str]]) -> int | None:
    """The lowest key a ``gt``/``ge`` condition on a numeric key allows (less one), to skip to it."""
    bounds = []
    for column, op, value in conditions:
        if column == key and op in ("gt", "ge"):
            try:
                bounds.append(int(float(value)) - (1 if op == "ge" else 0))
            except ValueError:
                return None
    return max(bounds) if bounds else None


def _comparable(value: Any) -> Any:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value).upper())


def _holds(row: Mapping[str, Any], condition: tuple[str, str, str]) -> bool:
    column, op, expected = condition
    if column not in row:
        raise BrowseError(400, f"Unknown field {column}")
    value = row[column]
    if isinstance(value, bool):
        left, right = value, expected.strip().lower() in ("true", "yes", "y", "1")
    elif isinstance(value, int | float):
        try:
            left, right = float(value), float(expected)
        except ValueError:
            raise BrowseError(400, f"{expected!r} is not a number for {column}") from None
    else:
        left, right = str(value).strip().upper(), expected.strip().upper()
    return _OPS[op](left, right)


def _sort(sort: str | None, key: str) -> tuple[str, bool]:
    if not sort:
        return key, False
    column, _, direction = sort.partition(",")
    if direction not in ("", "asc", "desc"):
        raise BrowseError(400, f"Invalid sort {sort!r}")
    return column, direction == "desc"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(element: ET.Element | None, namespace: str, name: str) -> ET.Element | None:
    return None if element is None else element.find(f"{{{namespace}}}{name}")


def _find(element: ET.Element | None, name: str) -> ET.Element | None:
    if element is None:
        return None
    return next((found for found in element.iter() if _local(found.tag) == name), None)


def _text_of(element: ET.Element | None, name: str) -> str:
    found = _find(element, name)
    return (found.text or "").strip() if found is not None else ""


def _session_context(operation: ET.Element) -> dict[str, str]:
    context: dict[str, str] = {}
    for row in operation.iter(f"{{{QCOM_NS}}}ttContext"):
        name = _text_of(row, "propertyName")
        if name:
            context[name] = _text_of(row, "propertyValue")
    return context


def _qdoc_reply(operation: str, result: str, message: str) -> Response:
    exceptions = ""
    if message:
        severity = "error" if result == "error" else "warning"
        exceptions = (f"<ns3:dsExceptions><ns3:temp_err_msg><ns3:tt_msg_nbr>0</ns3:tt_msg_nbr>"
                      f"<ns3:tt_msg_desc>{escape(message)}</ns3:tt_msg_desc><ns3:tt_msg_sev>{severity}</ns3:tt_msg_sev>"
                      "<ns3:tt_msg_field/><ns3:tt_msg_index>0</ns3:tt_msg_index></ns3:temp_err_msg></ns3:dsExceptions>")
    body = (f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body>'
            f'<ns1:{operation} xmlns:ns1="{QDOC_NS}" xmlns:ns3="{QCOM_NS}"><ns1:result>{result}</ns1:result>'
            f"{exceptions}</ns1:{operation}></soapenv:Body></soapenv:Envelope>")
    return Response(200, body.encode("utf-8"), {"Content-Type": "text/xml;charset=utf-8"})


def _soap_fault(reason: str) -> Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body>'
            f"<soapenv:Fault><faultcode>soapenv:Server</faultcode><faultstring>{escape(reason)}</faultstring>"
            "</soapenv:Fault></soapenv:Body></soapenv:Envelope>")
    return Response(500, body.encode("utf-8"), {"Content-Type": "text/xml;charset=utf-8"})

