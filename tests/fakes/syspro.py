"""Fake SYSPRO 8: the e.net REST service and the OData service, over HTTP on loopback.

Modelled on the SYSPRO reference (section 1):

- e.net under ``/SYSPROWCFService/Rest``, every call a GET with its parameters in the query
  string: ``Logon`` (Operator, OperatorPassword, CompanyId, CompanyPassword: all four must
  be present, blanks allowed) answers a session id, JSON-quoted by default
  (``logon_wrap``: "json", "bare" or "string"); ``Query/Query`` runs COMFND;
  ``Transaction/Post`` runs PORTOI; ``Setup/Update`` runs COMSFM; ``Logoff`` ends the
  session. Answers are Windows-1252 XML (``answer_wrap`` as for the logon, "bare" by
  default, sent without a charset); business failures are HTTP 200 with a body starting
  ``ERROR``.
- Sessions: a second logon by the same operator ends the operator's earlier sessions;
  ``expire_sessions()`` ends them all; a call on an ended session answers
  ``SESSION_ENDED_TEXT``. ``licences`` caps concurrent sessions. Each call refreshes its
  session's idle time (as the reference says of e.net's state file); with
  ``session_timeout`` (seconds; SYSPRO's figure is unconfirmed, so none by default) a
  session idle longer than that has timed out, and a logon into a full licence class evicts
  the longest-idle session only if it has been idle longer than the timeout, else it is
  refused. ``pass_time(seconds)`` moves the fake's clock (``clock``) on.
- COMFND: TableName, Columns (none: all), Where (Expressions with OpenBracket, AndOr,
  Column, Condition EQ/NE/GT/GE/LT/LE, Value, CloseBracket; And binds tighter than Or, as
  in SQL), OrderBy (several columns), ReturnRows. One ``<Row>`` per record with one child
  per column; dates ``YYYY-MM-DD``, rowversions ``0x`` + 16 hex digits, empty elements
  for NULL. String comparisons ignore case (SQL Server's usual collation).
- ``TimeStamp`` is a rowversion: one counter per company database, moved by every insert
  and update (``put_row``, ``update_row``, the write-backs).
- OData under ``/SYSPRO8Odata/SYSPROOData/{company}/{table}``: Basic auth with the
  operator and its OData password; ``$filter`` (the F&O fake's parser), ``$select``,
  ``$orderby``, ``$top``, ``$skip``; at most 5,000 rows an answer, then
  ``@odata.nextLink``. ``odata_timestamp=False`` hides ``TimeStamp`` as a service that
  does not expose it would.
- Failure injection: ``on_query(nth, ...)`` fails (e.g. 500), ends the sessions or answers
  an ``ERROR`` text at the nth COMFND query of a table from now; the base class's ``fail_next``/``delay_next``/
  ``drop_next`` work on any path.
- Write-backs are read back by the adapter: ``drop_writes = True`` answers success but
  keeps nothing, as SYSPRO does with XML elements it does not know.

Large data sets: ``add_synthetic_purchase_orders(n)`` and ``add_synthetic_invoices(n)`` add
rows generated on demand from their index (nothing stored per row), so 100,000 changed
records cost a few objects. A query ordered the way such a block is sorted finds its
start by binary search and reads only what it returns.

The names marked unconfirmed in the reference (the expired-session text, conditions other
than EQ, COMSFM's REST path, the PORTOI comment-line elements, AdmFormData) are this fake's
choices; the adapter keeps its own copy of each, so a disagreement shows in the tests.
"""

from __future__ import annotations

import base64
import bisect
import collections
import heapq
import itertools
import json
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode
from xml.sax.saxutils import escape

from tests.fakes.dynamics import FilterParser, ODataError
from tests.fakes.server import FakeServer, RecordedRequest, Response, Route, route

REST = "/SYSPROWCFService/Rest"
ODATA = "/SYSPRO8Odata/SYSPROOData"
ODATA_PAGE_CAP = 5000
SESSION_ENDED_TEXT = "ERROR: e.net exception 100001 - UserId {user_id} is not logged on or the session has expired"
NO_LICENCE_TEXT = "ERROR: e.net exception 100002 - No licences are available for the e.net Solutions class"
BO_NOT_INSTALLED_TEXT = "ERROR: e.net exception 100000 - Business object {bo} is not installed or licensed"
CONDITIONS = ("EQ", "NE", "GT", "GE", "LT", "LE")
COMMENT_LINE_TYPE = "6"
FIRST_ROWVERSION = 0x7D0

TEXT, INT, DECIMAL, DATE, ROWVERSION = "text", "int", "decimal", "date", "rowversion"


@dataclass(frozen=True)
class TableSchema:
    name: str
    keys: tuple[str, ...]
    columns: Mapping[str, str]  # name -> type
    lengths: Mapping[str, int] = field(default_factory=dict)  # varchar sizes the fake enforces


SCHEMAS: Mapping[str, TableSchema] = {schema.name: schema for schema in (
    TableSchema("PorMasterHdr", ("PurchaseOrder",), {
        "PurchaseOrder": TEXT, "Supplier": TEXT, "OrderStatus": TEXT, "ActiveFlag": TEXT, "CancelledFlag": TEXT,
        "OrderEntryDate": DATE, "OrderDueDate": DATE, "DatePoCompleted": DATE, "Buyer": TEXT, "Currency": TEXT,
        "ExchangeRate": DECIMAL, "Warehouse": TEXT, "PrintCount": INT, "AmendedCount": INT, "TimeStamp": ROWVERSION}),
    TableSchema("PorMasterDetail", ("PurchaseOrder", "Line"), {
        "PurchaseOrder": TEXT, "Line": INT, "LineType": TEXT, "MStockCode": TEXT, "MStockDes": TEXT,
        "MWarehouse": TEXT, "MOrderQty": DECIMAL, "MReceivedQty": DECIMAL, "MLatestDueDate": DATE,
        "MPrice": DECIMAL, "MCompleteFlag": TEXT, "NComment": TEXT, "OrderLineStatus": TEXT,
        "TimeStamp": ROWVERSION}, {"NComment": 100}),
    TableSchema("ApSupplier", ("Supplier",), {
        "Supplier": TEXT, "SupplierName": TEXT, "SupShortName": TEXT, "Telephone": TEXT, "Contact": TEXT,
        "Email": TEXT, "Currency": TEXT, "OnHold": TEXT, "TimeStamp": ROWVERSION}, {"Telephone": 20}),
    TableSchema("ApInvoice", ("Supplier", "Invoice"), {
        "Supplier": TEXT, "Invoice": TEXT, "JournalDate": DATE, "Journal": INT, "InvoiceDate": DATE,
        "DueDate": DATE, "Reference": TEXT, "OrigInvValue": DECIMAL, "MthInvBal1": DECIMAL,
        "InvoiceStatus": TEXT, "Currency": TEXT, "TimeStamp": ROWVERSION}),
    TableSchema("AdmFormData", ("FormType", "KeyField", "FieldName"), {
        "FormType": TEXT, "KeyField": TEXT, "FieldName": TEXT, "AlphaValue": TEXT, "NumericValue": DECIMAL,
        "DateValue": DATE, "TimeStamp": ROWVERSION}, {"AlphaValue": 255}),
)}


class EnetError(Exception):
    """A business failure: answered as HTTP 200 with ``ERROR: ...``."""


# --- values --------------------------------------------------------------------------------------


def as_varchar(text: str) -> str:
    """What a Windows-1252 varchar column keeps of ``text``."""
    return text.encode("cp1252", errors="replace").decode("cp1252")


def typed(kind: str, value: Any, column: str = "") -> Any:
    """A stored value of a column type, from Python values or the text a Value element carries."""
    if value is None or (isinstance(value, str) and not value.strip() and kind != TEXT):
        return None
    try:
        if kind == TEXT:
            return as_varchar(str(value))
        if kind in (INT, ROWVERSION):
            if isinstance(value, str) and value.strip().lower().startswith("0x"):
                return int(value.strip(), 16)
            return int(value)
        if kind == DECIMAL:
            return Decimal(str(value).strip())
        if kind == DATE:
            if isinstance(value, datetime):
                return value.date()
            if isinstance(value, date):
                return value
            return date.fromisoformat(str(value).strip()[:10])
    except (ValueError, ArithmeticError):
        raise EnetError(f"ERROR: Invalid value '{value}' for column {column}") from None
    raise AssertionError(kind)


def comfnd_text(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == ROWVERSION:
        return f"0x{value:016X}"
    if kind == DATE:
        return value.isoformat()
    if kind == DECIMAL:
        return format(value, "f")
    return str(value)


def odata_value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == DATE:
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if kind == DECIMAL:
        return float(value)
    return value


def odata_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def sort_value(value: Any) -> tuple[int, Any]:
    """NULLs first, strings without case (SQL Server's CI collation)."""
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (1, value.casefold())
    return (1, value)


# --- rows ------------------------------------------------------------------------------------------


@dataclass
class SyntheticBlock:
    """``count`` rows made on demand by ``make(index)``; index order is sorted by each of ``sorted_by``.

    ``sorted_by`` lists (columns, unique) pairs: the index order is sorted by those columns,
    strictly so when unique. Rows replaced by ``update_row`` are hidden here.
    """

    count: int
    make: Callable[[int], dict[str, Any]]
    sorted_by: tuple[tuple[tuple[str, ...], bool], ...]
    hidden: set[int] = field(default_factory=set)

    def follows(self, order: Sequence[str]) -> bool:
        order = tuple(order)
        return any(order == columns or (unique and order[: len(columns)] == columns)
                   for columns, unique in self.sorted_by)

    def first_at_least(self, columns: tuple[str, ...], bound: Sequence[Any]) -> int:
        return bisect.bisect_left(_Columns(self, columns), tuple(sort_value(value) for value in bound))

    def first_above(self, columns: tuple[str, ...], bound: Sequence[Any]) -> int:
        return bisect.bisect_right(_Columns(self, columns), tuple(sort_value(value) for value in bound))

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        for index in range(start, self.count if stop is None else stop):
            if index not in self.hidden:
                yield index, self.make(index)


class _Columns(Sequence[Any]):
    """Some columns of a block, as a sorted sequence of tuples for bisect."""

    def __init__(self, block: SyntheticBlock, columns: tuple[str, ...]) -> None:
        self._block, self._columns = block, columns

    def __len__(self) -> int:
        return self._block.count

    def __getitem__(self, index: Any) -> Any:
        row = self._block.make(index)
        return tuple(sort_value(row[column]) for column in self._columns)


@dataclass
class Table:
    schema: TableSchema
    rows: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    blocks: list[SyntheticBlock] = field(default_factory=list)

    def key_of(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(sort_value(values.get(name)) for name in self.schema.keys)

    def find(self, key: tuple[Any, ...]) -> tuple[dict[str, Any] | None, SyntheticBlock | None, int]:
        folded = tuple(sort_value(part) for part in key)
        if folded in self.rows:
            return self.rows[folded], None, -1
        for block in self.blocks:
            if block.follows(self.schema.keys):
                index = block.first_at_least(self.schema.keys, key)
                candidates: Iterable[int] = [index] if index < block.count else []
            else:
                candidates = range(block.count)
            for candidate in candidates:
                row = block.make(candidate)
                if candidate not in block.hidden and self.key_of(row) == folded:
                    return row, block, candidate
        return None, None, -1

    def count(self) -> int:
        return len(self.rows) + sum(block.count - len(block.hidden) for block in self.blocks)


@dataclass
class Company:
    company_id: str
    password: str
    tables: dict[str, Table]
    rowversion: int = FIRST_ROWVERSION

    def next_rowversion(self, n: int = 1) -> int:
        first = self.rowversion + 1
        self.rowversion += n
        return first


@dataclass
class Operator:
    name: str
    password: str
    odata_password: str | None


@dataclass
class Session:
    user_id: str
    operator: str
    company: str
    active: bool = True
    last_used: float = 0.0


@dataclass
class _QueryScript:
    countdown: int
    table: str | None
    action: str  # "fail" | "expire" | "error"
    status: int
    times: int
    headers: Mapping[str, str]
    text: str = ""


# --- COMFND where ------------------------------------------------------------------------------

Node = tuple  # ("or", [...]) | ("and", [...]) | ("cmp", column, op, value)


def parse_where(expressions: Sequence[ET.Element], schema: TableSchema) -> Node | None:
    tokens: list[Any] = []
    for position, expression in enumerate(expressions):
        text = {_local(child.tag): (child.text or "").strip() for child in expression}
        if position:
            and_or = text.get("AndOr", "").capitalize() or "And"
            if and_or not in ("And", "Or"):
                raise EnetError(f"ERROR: Invalid AndOr '{text.get('AndOr')}'")
            tokens.append(and_or)
        tokens += ["("] * text.get("OpenBracket", "").count("(")
        column, condition = text.get("Column", ""), text.get("Condition", "").upper()
        kind = schema.columns.get(_column_name(schema, column) or "")
        if kind is None:
            raise EnetError(f"ERROR: Column '{column}' is not valid for table {schema.name}")
        if condition not in CONDITIONS:
            raise EnetError(f"ERROR: Invalid condition '{text.get('Condition')}'")
        name = _column_name(schema, column)
        tokens.append(("cmp", name, condition.lower(), typed(kind, text.get("Value", ""), name or "")))
        tokens += [")"] * text.get("CloseBracket", "").count(")")
    if not tokens:
        return None
    parser = _WhereParser(tokens)
    node = parser.or_expr()
    if parser.position != len(tokens):
        raise EnetError("ERROR: Unbalanced brackets in Where")
    return node


class _WhereParser:
    def __init__(self, tokens: list[Any]) -> None:
        self.tokens, self.position = tokens, 0

    def _peek(self) -> Any:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def or_expr(self) -> Node:
        parts = [self.and_expr()]
        while self._peek() == "Or":
            self.position += 1
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def and_expr(self) -> Node:
        parts = [self.primary()]
        while self._peek() == "And":
            self.position += 1
            parts.append(self.primary())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def primary(self) -> Node:
        token = self._peek()
        if token == "(":
            self.position += 1
            inner = self.or_expr()
            if self._peek() != ")":
                raise EnetError("ERROR: Unbalanced brackets in Where")
            self.position += 1
            return inner
        if isinstance(token, tuple):
            self.position += 1
            return token
        raise EnetError("ERROR: Invalid Where expression")


def evaluate(node: Node | None, row: Mapping[str, Any]) -> bool:
    if node is None:
        return True
    if node[0] == "or":
        return any(evaluate(part, row) for part in node[1])
    if node[0] == "and":
        return all(evaluate(part, row) for part in node[1])
    _, column, op, value = node
    left = row.get(column)
    if left is None or value is None:
        return False  # SQL: a comparison with NULL is never true
    left_key, right_key = sort_value(left), sort_value(value)
    return {"eq": left_key == right_key, "ne": left_key != right_key, "gt": left_key > right_key,
            "ge": left_key >= right_key, "lt": left_key < right_key, "le": left_key <= right_key}[op]


def bounds(node: Node | None, column: str) -> tuple[Any, Any]:
    """(low, high) that every row matching ``node`` has ``column`` within (inclusive); None: open."""
    if node is None:
        return None, None
    if node[0] in ("and", "or"):
        parts = [bounds(part, column) for part in node[1]]
        lows, highs = [low for low, _ in parts], [high for _, high in parts]
        if node[0] == "and":
            low = max((v for v in lows if v is not None), key=sort_value, default=None)
            high = min((v for v in highs if v is not None), key=sort_value, default=None)
            return low, high
        low = None if any(v is None for v in lows) else min(lows, key=sort_value)
        high = None if any(v is None for v in highs) else max(highs, key=sort_value)
        return low, high
    _, name, op, value = node
    if name != column:
        return None, None
    return (value if op in ("eq", "gt", "ge") else None), (value if op in ("eq", "lt", "le") else None)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _column_name(schema: TableSchema, name: str) -> str | None:
    wanted = name.strip().lower()
    return next((column for column in schema.columns if column.lower() == wanted), None)


# --- the fake ------------------------------------------------------------------------------------


class FakeSyspro(FakeServer):
    """Fake SYSPRO e.net REST and OData services with companies, operators and table data."""

    service_name = "syspro"

    def __init__(self, *, port: int = 0, odata_timestamp: bool = True) -> None:
        super().__init__(port=port)
        self._state = threading.RLock()
        self.companies: dict[str, Company] = {}
        self.operators: dict[str, Operator] = {}
        self.sessions: dict[str, Session] = {}
        self._query_scripts: list[_QueryScript] = []
        self.logon_wrap = "json"
        self.answer_wrap = "bare"
        self.licences: int | None = None
        self.session_timeout: float | None = None
        self._time_passed = 0.0
        self.refused_as_ended = 0  # calls answered SESSION_ENDED_TEXT
        self.drop_writes = False
        self.odata_timestamp = odata_timestamp
        self.query_count = 0
        self.keep_log = True
        self._answered: collections.Counter[str] = collections.Counter()

    # --- addresses --------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        return f"{self.base_url}{REST}"

    @property
    def odata_url(self) -> str:
        return f"{self.base_url}{ODATA}"

    # --- set-up ------------------------------------------------------------------------------

    def add_operator(self, name: str, password: str, odata_password: str | None = None) -> None:
        with self._state:
            self.operators[name.upper()] = Operator(name, password, odata_password)

    def add_company(self, company_id: str, password: str = "") -> Company:
        with self._state:
            company = Company(company_id, password, {name: Table(schema) for name, schema in SCHEMAS.items()})
            self.companies[company_id.upper()] = company
            return company

    def company(self, company_id: str | None = None) -> Company:
        with self._state:
            if company_id is None:
                return next(iter(self.companies.values()))
            return self.companies[company_id.upper()]

    def put_row(self, table: str, values: Mapping[str, Any], *, company: str | None = None,
                timestamp: int | None = None) -> dict[str, Any]:
        """Insert or replace a row; it gets the next rowversion unless ``timestamp`` is given."""
        with self._state:
            target = self.company(company)
            data = target.tables[table]
            schema = data.schema
            unknown = set(values) - set(schema.columns)
            if unknown:
                raise KeyError(f"{table} has no column {sorted(unknown)}")
            row = {name: self._stored(schema, name, values.get(name)) for name in schema.columns}
            row["TimeStamp"] = timestamp if timestamp is not None else target.next_rowversion()
            _, block, index = data.find(tuple(row[name] for name in schema.keys))
            if block is not None:
                block.hidden.add(index)
            data.rows[data.key_of(row)] = row
            return dict(row)

    def update_row(self, table: str, key: Sequence[Any] | Any, *, company: str | None = None,
                   timestamp: int | None = None, **changes: Any) -> dict[str, Any]:
        """Change columns of an existing row (generated ones included); the row gets a new rowversion."""
        key = tuple(key) if isinstance(key, list | tuple) else (key,)
        with self._state:
            data = self.company(company).tables[table]
            existing, _, _ = data.find(key)
            if existing is None:
                raise KeyError(f"{table} has no row {key!r}")
            return self.put_row(table, {**existing, **changes}, company=company, timestamp=timestamp)

    def row(self, table: str, key: Sequence[Any] | Any, company: str | None = None) -> dict[str, Any] | None:
        key = tuple(key) if isinstance(key, list | tuple) else (key,)
        with self._state:
            found, _, _ = self.company(company).tables[table].find(key)
            return dict(found) if found is not None else None

    def rows(self, table: str, company: str | None = None) -> list[dict[str, Any]]:
        """Every row of a table in key order (generated ones included: for small tables)."""
        with self._state:
            data = self.company(company).tables[table]
            order = data.schema.keys
            return [dict(row) for row in self._select(data, None, order, None)]

    def add_supplier(self, supplier: str, name: str, telephone: str = "", *, company: str | None = None,
                     **extra: Any) -> dict[str, Any]:
        return self.put_row("ApSupplier", {"Supplier": supplier, "SupplierName": name, "Telephone": telephone,
                                           "Currency": "USD", "OnHold": "N", **extra}, company=company)

    def add_purchase_order(self, order: str, supplier: str, lines: Sequence[tuple[Any, Any]] = ((1, 10),), *,
                           status: str = "1", company: str | None = None, timestamp: int | None = None,
                           **extra: Any) -> dict[str, Any]:
        """A PO header and its stocked lines ((quantity, price) pairs); the header is written last."""
        for number, (quantity, price) in enumerate(lines, start=1):
            self.put_row("PorMasterDetail", {"PurchaseOrder": order, "Line": number, "LineType": "1",
                                             "MStockCode": f"ITEM{number:03d}", "MOrderQty": quantity,
                                             "MPrice": price, "MCompleteFlag": "N"}, company=company)
        header = {"PurchaseOrder": order, "Supplier": supplier, "OrderStatus": status, "ActiveFlag": "Y",
                  "CancelledFlag": "N", "OrderEntryDate": date(2026, 11, 2), "OrderDueDate": date(2026, 12, 1),
                  "Currency": "USD", "Buyer": "ANA", **extra}
        return self.put_row("PorMasterHdr", header, company=company, timestamp=timestamp)

    def add_invoice(self, supplier: str, invoice: str, value: Any, *, journal_date: date = date(2026, 11, 20),
                    company: str | None = None, **extra: Any) -> dict[str, Any]:
        return self.put_row("ApInvoice", {"Supplier": supplier, "Invoice": invoice, "JournalDate": journal_date,
                                          "Journal": 12, "InvoiceDate": journal_date, "DueDate": journal_date
                                          + timedelta(days=30), "OrigInvValue": value, "MthInvBal1": value,
                                          "InvoiceStatus": "", "Currency": "USD", **extra}, company=company)

    def add_synthetic_purchase_orders(self, n: int, *, supplier: str = "S100", lines: int = 2, status: str = "1",
                                      prefix: str = "G", company: str | None = None) -> tuple[str, str]:
        """``n`` changed purchase orders with ``lines`` lines each, made on demand; (first, last) order number.

        Their rowversions follow every row written so far, in order-number order, so a poll
        reads them as ``n`` new changes. The supplier is added when missing.
        """
        with self._state:
            target = self.company(company)
            if self.row("ApSupplier", supplier, company) is None:
                self.add_supplier(supplier, f"Supplier {supplier}", "+14155550100", company=company)
            run = uuid.uuid4().hex[:4].upper()
            width = max(6, len(str(n)))

            def number(index: int) -> str:
                return f"{prefix}{run}{index:0{width}d}"

            details_first = target.next_rowversion(n * lines)
            headers_first = target.next_rowversion(n)

            def header(index: int) -> dict[str, Any]:
                return {"PurchaseOrder": number(index), "Supplier": supplier, "OrderStatus": status,
                        "ActiveFlag": "Y", "CancelledFlag": "N", "OrderEntryDate": date(2026, 11, 2),
                        "OrderDueDate": date(2026, 12, 1), "DatePoCompleted": None, "Buyer": "ANA",
                        "Currency": "USD", "ExchangeRate": None, "Warehouse": "WH", "PrintCount": 0,
                        "AmendedCount": 0, "TimeStamp": headers_first + index}

            def detail(index: int) -> dict[str, Any]:
                order, line = divmod(index, lines)
                return {"PurchaseOrder": number(order), "Line": line + 1, "LineType": "1",
                        "MStockCode": f"ITEM{line + 1:03d}", "MStockDes": "", "MWarehouse": "WH",
                        "MOrderQty": Decimal(line + 1), "MReceivedQty": Decimal(0), "MLatestDueDate": None,
                        "MPrice": Decimal("10.50"), "MCompleteFlag": "N", "NComment": "", "OrderLineStatus": "",
                        "TimeStamp": details_first + index}

            target.tables["PorMasterHdr"].blocks.append(
                SyntheticBlock(n, header, ((("TimeStamp",), True), (("PurchaseOrder",), True))))
            target.tables["PorMasterDetail"].blocks.append(
                SyntheticBlock(n * lines, detail, ((("PurchaseOrder", "Line"), True), (("PurchaseOrder",), False),
                                                   (("TimeStamp",), True))))
            return number(0), number(n - 1)

    def add_synthetic_invoices(self, n: int, *, supplier: str = "S100", value: Any = "125.00",
                               journal_date: date = date(2026, 11, 20), prefix: str = "GI",
                               company: str | None = None) -> tuple[str, str]:
        """``n`` new supplier invoices of one supplier, made on demand; (first, last) invoice number."""
        with self._state:
            target = self.company(company)
            if self.row("ApSupplier", supplier, company) is None:
                self.add_supplier(supplier, f"Supplier {supplier}", "+14155550100", company=company)
            run = uuid.uuid4().hex[:4].upper()
            width = max(6, len(str(n)))
            first = target.next_rowversion(n)
            amount = Decimal(str(value))

            def number(index: int) -> str:
                return f"{prefix}{run}{index:0{width}d}"

            def invoice(index: int) -> dict[str, Any]:
                return {"Supplier": supplier, "Invoice": number(index), "JournalDate": journal_date, "Journal": 12,
                        "InvoiceDate": journal_date, "DueDate": journal_date + timedelta(days=30), "Reference": "",
                        "OrigInvValue": amount, "MthInvBal1": amount, "InvoiceStatus": "", "Currency": "USD",
                        "TimeStamp": first + index}

            target.tables["ApInvoice"].blocks.append(SyntheticBlock(
                n, invoice, ((("TimeStamp",), True), (("Supplier", "Invoice"), True), (("Invoice",), True))))
            return number(0), number(n - 1)

    # --- sessions and failures -----------------------------------------------------------------

    def clock(self) -> float:
        """The fake's clock (monotonic seconds), moved on by ``pass_time``: what session idle times are read on."""
        return time.monotonic() + self._time_passed

    def pass_time(self, seconds: float) -> None:
        with self._state:
            self._time_passed += seconds

    def _idle_past_timeout(self, session: Session) -> bool:
        return self.session_timeout is not None and self.clock() - session.last_used > self.session_timeout

    def expire_sessions(self) -> None:
        """End every session: the next call on one answers the expired-session error."""
        with self._state:
            for session in self.sessions.values():
                session.active = False

    def active_sessions(self) -> list[Session]:
        with self._state:
            return [session for session in self.sessions.values() if session.active
                    and not self._idle_past_timeout(session)]

    def on_query(self, nth: int, *, table: str | None = None, action: str = "fail", status: int = 500,
                 times: int = 1, headers: Mapping[str, str] | None = None, text: str = "") -> None:
        """At the ``nth`` COMFND query (of ``table``) from now: answer ``status`` ``times`` times,
        (``action="expire"``) end every session first, so that query meets the expired-session error,
        or (``action="error"``) answer the business failure ``text`` (HTTP 200, ``ERROR...``) ``times`` times."""
        if nth < 1 or times < 1 or action not in ("fail", "expire", "error"):
            raise ValueError("nth and times must be positive; action is fail, expire or error")
        if action == "error" and not text.startswith("ERROR"):
            raise ValueError("an e.net business failure starts with ERROR")
        with self._state:
            self._query_scripts.append(_QueryScript(nth, table, action, status, times, dict(headers or {}), text))

    def logons(self) -> list[RecordedRequest]:
        return self.requests_to(f"GET {REST}/Logon")

    def queries(self, table: str | None = None) -> list[ET.Element]:
        """The XmlIn of every COMFND query received (of ``table``), oldest first."""
        found = []
        for request in self.requests_to(f"GET {REST}/Query/Query"):
            root = ET.fromstring(request.query_value("XmlIn") or "<Query/>")
            if table is None or (root.findtext("TableName") or "").lower() == table.lower():
                found.append(root)
        return found

    def handled(self, match: str) -> int:
        """How many requests whose ``"METHOD /path"`` starts with ``match`` have been answered (stalled ones
        count once their answer is ready)."""
        with self._state:
            return sum(count for target, count in self._answered.items() if target.startswith(match))

    def _answer(self, request: RecordedRequest) -> Response | None:
        answer = super()._answer(request)
        with self._state:
            self._answered[f"{request.method} {request.path}"] += 1
        if not self.keep_log:
            self.clear_log()  # long runs (benchmarks, memory tests) keep no request log
        return answer

    # --- routes ------------------------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        return [
            route("GET", f"{REST}/Logon", self._logon),
            route("GET", f"{REST}/Logoff", self._logoff),
            route("GET", f"{REST}/Query/Query", self._query),
            route("GET", f"{REST}/Transaction/Post", self._transaction),
            route("GET", f"{REST}/Setup/Update", self._setup),
            route("GET", f"{ODATA}/([^/]+)/([^/]+)", self._odata),
        ]

    def error_response(self, status: int, message: str) -> Response:
        return Response(status, f"<html><body><h1>{escape(message)}</h1></body></html>".encode(),
                        {"Content-Type": "text/html"})

    def _answer_text(self, text: str, wrap: str) -> Response:
        if wrap == "json":
            return Response(200, json.dumps(text).encode("ascii"), {"Content-Type": "application/json; charset=utf-8"})
        if wrap == "string":
            body = ('<string xmlns="http://schemas.microsoft.com/2003/10/Serialization/">'
                    f"{escape(text)}</string>").encode()
            return Response(200, body, {"Content-Type": "application/xml; charset=utf-8"})
        return Response(200, text.encode("cp1252", errors="xmlcharrefreplace"), {"Content-Type": "application/xml"})

    def _enet(self, handler: Callable[[RecordedRequest], str], request: RecordedRequest,
              wrap: str | None = None) -> Response:
        try:
            with self._state:
                text = handler(request)
        except EnetError as error:
            text = str(error)
        except _Scripted as scripted:
            return scripted.response
        return self._answer_text(text, wrap or self.answer_wrap)

    # --- e.net ------------------------------------------------------------------------------------

    def _logon(self, request: RecordedRequest, _match: Any) -> Response:
        return self._enet(self._do_logon, request, self.logon_wrap)

    def _do_logon(self, request: RecordedRequest) -> str:
        missing = [name for name in ("Operator", "OperatorPassword", "CompanyId", "CompanyPassword")
                   if name not in request.query]
        if missing:
            raise EnetError(f"ERROR: Parameter {missing[0]} is missing")
        operator = self.operators.get((request.query_value("Operator") or "").upper())
        if operator is None or operator.password != request.query_value("OperatorPassword"):
            raise EnetError("ERROR: Invalid operator password")
        company = self.companies.get((request.query_value("CompanyId") or "").upper())
        if company is None:
            raise EnetError(f"ERROR: Company '{request.query_value('CompanyId')}' not found")
        if company.password != (request.query_value("CompanyPassword") or ""):
            raise EnetError("ERROR: Invalid company password")
        for session in self.sessions.values():
            if session.operator == operator.name.upper():
                session.active = False  # a second logon by the same operator ends the first session
        if self.licences is not None:
            holding = [session for session in self.sessions.values() if session.active]
            if len(holding) >= self.licences:
                # The longest-idle member makes room only once idle past the class timeout.
                idlest = min(holding, key=lambda session: session.last_used, default=None)
                if idlest is None or not self._idle_past_timeout(idlest):
                    raise EnetError(NO_LICENCE_TEXT)
                idlest.active = False
        user_id = str(uuid.uuid4()).upper().replace("-", "") + "00"
        self.sessions[user_id] = Session(user_id, operator.name.upper(), company.company_id.upper(),
                                         last_used=self.clock())
        return user_id

    def _logoff(self, request: RecordedRequest, _match: Any) -> Response:
        def logoff(request: RecordedRequest) -> str:
            session = self.sessions.get(request.query_value("UserId") or "")
            if session is not None:
                session.active = False
            return "0"

        return self._enet(logoff, request, self.logon_wrap)

    def _session(self, request: RecordedRequest) -> Session:
        user_id = request.query_value("UserId") or ""
        session = self.sessions.get(user_id)
        if session is not None and session.active and self._idle_past_timeout(session):
            session.active = False  # timed out while idle
        if session is None or not session.active:
            self.refused_as_ended += 1
            raise EnetError(SESSION_ENDED_TEXT.format(user_id=user_id))
        session.last_used = self.clock()  # each call refreshes the session's idle time
        return session

    def _query(self, request: RecordedRequest, _match: Any) -> Response:
        return self._enet(self._do_query, request)

    def _do_query(self, request: RecordedRequest) -> str:
        root = self._xml(request.query_value("XmlIn"), "XmlIn")
        table_name = (root.findtext("TableName") or "").strip()
        self.query_count += 1
        self._run_scripts(table_name)
        session = self._session(request)
        business_object = (request.query_value("BusinessObject") or "").upper()
        if business_object != "COMFND":
            raise EnetError(BO_NOT_INSTALLED_TEXT.format(bo=business_object))
        company = self.companies[session.company]
        table = next((t for name, t in company.tables.items() if name.lower() == table_name.lower()), None)
        if table is None:
            raise EnetError(f"ERROR: Table '{table_name}' is not valid")
        schema = table.schema
        columns = [self._column(schema, column.text or "") for column in root.findall("Columns/Column")]
        columns = columns or list(schema.columns)
        where = parse_where(root.findall("Where/Expression"), schema)
        order = [self._column(schema, column.text or "") for column in root.findall("OrderBy/Column")]
        limit_text = (root.findtext("ReturnRows") or "").strip()
        limit = int(limit_text) if limit_text.isdigit() and int(limit_text) > 0 else None
        rows = self._select(table, where, order or list(schema.keys), limit)
        parts = ['<?xml version="1.0" encoding="Windows-1252"?>\n<COMFND>']
        for row in rows:
            parts.append("<Row>" + "".join(self._element(schema, column, row.get(column)) for column in columns)
                         + "</Row>")
        parts.append("</COMFND>")
        return "\n".join(parts)

    def _run_scripts(self, table: str) -> None:
        due = []
        for script in list(self._query_scripts):
            if script.table is not None and script.table.lower() != table.lower():
                continue
            if script.countdown > 1:
                script.countdown -= 1
            else:
                due.append(script)
        failure = None
        for script in due:
            if script.action == "expire":
                self._query_scripts.remove(script)
                self.expire_sessions()
                continue
            script.times -= 1
            if script.times == 0:
                self._query_scripts.remove(script)
            if script.action == "error":
                raise EnetError(script.text)
            failure = failure or Response(script.status, b"<html><body>Internal Server Error</body></html>",
                                          {"Content-Type": "text/html", **script.headers})
        if failure is not None:
            raise _Scripted(failure)

    @staticmethod
    def _element(schema: TableSchema, column: str, value: Any) -> str:
        text = comfnd_text(schema.columns[column], value)
        return f"<{column}>{escape(text)}</{column}>" if text else f"<{column}/>"

    @staticmethod
    def _column(schema: TableSchema, name: str) -> str:
        column = _column_name(schema, name)
        if column is None:
            raise EnetError(f"ERROR: Column '{name.strip()}' is not valid for table {schema.name}")
        return column

    @staticmethod
    def _xml(text: str | None, what: str) -> ET.Element:
        try:
            return ET.fromstring(text or "")
        except ET.ParseError:
            raise EnetError(f"ERROR: {what} is not valid XML") from None

    def _stored(self, schema: TableSchema, column: str, value: Any) -> Any:
        stored = typed(schema.columns[column], value, column)
        length = schema.lengths.get(column)
        return stored[:length] if isinstance(stored, str) and length else stored

    # --- selection ----------------------------------------------------------------------------------

    def _select(self, table: Table, where: Node | None, order: Sequence[str], limit: int | None,
                predicate: Callable[[Mapping[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        def sort_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
            return tuple(sort_value(row.get(column)) for column in order)

        def accepts(row: Mapping[str, Any]) -> bool:
            return evaluate(where, row) and (predicate is None or predicate(row))

        sources: list[Iterable[dict[str, Any]]] = [sorted((row for row in table.rows.values() if accepts(row)),
                                                          key=sort_key)]
        for block in table.blocks:
            if block.follows(order) and predicate is None:
                sources.append(self._block_range(block, where, order[0], accepts))
            else:
                sources.append(sorted((row for _, row in block.rows() if accepts(row)), key=sort_key))
        merged = heapq.merge(*sources, key=sort_key)
        return list(itertools.islice(merged, limit))

    @staticmethod
    def _block_range(block: SyntheticBlock, where: Node | None, column: str,
                     accepts: Callable[[Mapping[str, Any]], bool]) -> Iterator[dict[str, Any]]:
        low, high = bounds(where, column)
        start = block.first_at_least((column,), (low,)) if low is not None else 0
        stop = block.first_above((column,), (high,)) if high is not None else block.count
        return (row for _, row in block.rows(start, stop) if accepts(row))

    # --- write-backs ----------------------------------------------------------------------------------

    def _transaction(self, request: RecordedRequest, _match: Any) -> Response:
        return self._enet(self._do_transaction, request)

    def _do_transaction(self, request: RecordedRequest) -> str:
        session = self._session(request)
        business_object = (request.query_value("BusinessObject") or "").upper()
        if business_object != "PORTOI":
            raise EnetError(BO_NOT_INSTALLED_TEXT.format(bo=business_object))
        self._xml(request.query_value("XmlParameters"), "XmlParameters")
        root = self._xml(request.query_value("XmlIn"), "XmlIn")
        processed = 0
        for order in root.findall("Orders"):
            number = (order.findtext("OrderHeader/PurchaseOrder") or "").strip()
            if self.row("PorMasterHdr", number, session.company) is None:
                raise EnetError(f"ERROR: Purchase order '{number}' not on file")
            comments = [(line.findtext("Comment") or "") for line in order.findall("OrderDetails/CommentLine")
                        if (line.findtext("LineActionType") or "A").strip().upper() == "A"]
            if not self.drop_writes:
                self._add_comment_lines(session.company, number, comments)
            processed += 1
        return ('<?xml version="1.0" encoding="Windows-1252"?>\n<PostPurchaseOrders><StatusOfItems>'
                f"<ItemsProcessed>{processed:06d}</ItemsProcessed><ItemsInvalid>000000</ItemsInvalid>"
                "</StatusOfItems></PostPurchaseOrders>")

    def _add_comment_lines(self, company: str, order: str, comments: Sequence[str]) -> None:
        existing = [row for row in self._select(self.company(company).tables["PorMasterDetail"],
                                                ("cmp", "PurchaseOrder", "eq", order), ["PurchaseOrder", "Line"],
                                                None)]
        line = max((row["Line"] for row in existing), default=0)
        for comment in comments:
            line += 1
            self.put_row("PorMasterDetail", {"PurchaseOrder": order, "Line": line, "LineType": COMMENT_LINE_TYPE,
                                             "NComment": comment}, company=company)

    def _setup(self, request: RecordedRequest, _match: Any) -> Response:
        return self._enet(self._do_setup, request)

    def _do_setup(self, request: RecordedRequest) -> str:
        session = self._session(request)
        business_object = (request.query_value("BusinessObject") or "").upper()
        if business_object != "COMSFM":
            raise EnetError(BO_NOT_INSTALLED_TEXT.format(bo=business_object))
        self._xml(request.query_value("XmlParameters"), "XmlParameters")
        root = self._xml(request.query_value("XmlIn"), "XmlIn")
        for item in root.findall("Item"):
            key = {name: (item.findtext(f"Key/{name}") or "").strip() for name in ("FormType", "KeyField",
                                                                                      "FieldName")}
            if not all(key.values()):
                raise EnetError("ERROR: FormType, KeyField and FieldName are required")
            if not self.drop_writes:
                self.put_row("AdmFormData", {**key, "AlphaValue": item.findtext("AlphaValue") or ""},
                             company=session.company)
        return '<?xml version="1.0" encoding="Windows-1252"?>\n<SetupCustomForm><ItemsProcessed>1</ItemsProcessed>' \
               "</SetupCustomForm>"

    def custom_form_value(self, form_type: str, key: str, field_name: str, company: str | None = None) -> str | None:
        found = self.row("AdmFormData", (form_type, key, field_name), company)
        return found["AlphaValue"] if found else None

    def comments(self, order: str, company: str | None = None) -> list[str]:
        """The comment lines of an order, in line order."""
        with self._state:
            lines = self._select(self.company(company).tables["PorMasterDetail"],
                                 ("cmp", "PurchaseOrder", "eq", order), ["PurchaseOrder", "Line"], None)
            return [row["NComment"] for row in lines if row["LineType"] == COMMENT_LINE_TYPE]

    # --- OData --------------------------------------------------------------------------------------

    def _odata(self, request: RecordedRequest, match: Any) -> Response:
        try:
            with self._state:
                return self._do_odata(request, unquote(match.group(1)), unquote(match.group(2)))
        except ODataError as error:
            return Response.json(error.status, {"error": {"code": str(error.status), "message": error.message}})

    def _do_odata(self, request: RecordedRequest, company_id: str, table_name: str) -> Response:
        operator = self._basic_operator(request)
        if operator is None:
            return Response(401, b"", {"WWW-Authenticate": 'Basic realm="SYSPRO OData"'})
        company = self.companies.get(company_id.upper())
        table = company.tables.get(table_name) if company else None
        if table is None:
            raise ODataError(404, f"Resource not found for the segment '{table_name}'.")
        schema = table.schema
        visible = {name: kind for name, kind in schema.columns.items()
                   if self.odata_timestamp or kind != ROWVERSION}
        options = {name: values[0] for name, values in parse_qs(request.target.partition("?")[2],
                                                                keep_blank_values=True).items()}
        predicate = None
        if options.get("$filter"):
            parsed = FilterParser(options["$filter"], frozenset(visible), table_name).parse()

            def predicate(row: Mapping[str, Any]) -> bool:
                return parsed({name: odata_value(kind, row.get(name)) for name, kind in visible.items()})

        order = []
        for part in (options.get("$orderby") or "").split(","):
            name, _, direction = part.strip().partition(" ")
            if direction.strip().lower() == "desc":
                raise ODataError(501, "The fake orders ascending only.")
            if name:
                if name not in visible:
                    raise ODataError(400, f"Could not find a property named '{name}' on type '{table_name}'.")
                order.append(name)
        select = [name.strip() for name in (options.get("$select") or "").split(",") if name.strip()] or list(visible)
        for name in select:
            if name not in visible:
                raise ODataError(400, f"Could not find a property named '{name}' on type '{table_name}'.")
        top = int(options["$top"]) if options.get("$top") else None
        skip = int(options.get("$skip") or 0)
        wanted = min(top if top is not None else ODATA_PAGE_CAP, ODATA_PAGE_CAP)
        rows = self._select(table, None, order or list(schema.keys), skip + wanted + 1, predicate)[skip:]
        body: dict[str, Any] = {"@odata.context": f"{self.odata_url}/$metadata#{table_name}", "value": [
            {name: odata_json(odata_value(visible[name], row.get(name))) for name in select}
            for row in rows[:wanted]]}
        if len(rows) > wanted and (top is None or top > ODATA_PAGE_CAP):
            following = {**options, "$skip": str(skip + wanted)}
            if top is not None:
                following["$top"] = str(top - wanted)
            query = urlencode(following, safe="$,'():", quote_via=quote)
            body["@odata.nextLink"] = f"{self.odata_url}/{company_id}/{table_name}?{query}"
        return Response.json(200, body, {"OData-Version": "4.0"})

    def _basic_operator(self, request: RecordedRequest) -> Operator | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            name, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except ValueError:
            return None
        operator = self.operators.get(name.upper())
        if operator is None or operator.odata_password is None or operator.odata_password != password:
            return None
        return operator


class _Scripted(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response
