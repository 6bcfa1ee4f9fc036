"""Fake Sage X3 V12 (Syracuse) on loopback: REST ``api1`` representations, GraphQL, SOAP.

Behaviour modelled on the reference (ERP polling facts, section 2):

- ``GET /api1/x3/erp/{folder}/{CLASS}?representation={REP}.$query&count=N&where=...&orderBy=...``
  with HTTP Basic. ``where``: comparisons ``eq``, ``ge``, ``gt`` joined by ``and``; property
  names without ``_0``; strings in single quotes (``''`` escapes one); date-times and dates
  between ``@...@`` (with ``Z``: UTC; without: the server's own ``time_zone``); numbers.
  A property the representation lacks gives HTTP 500 with a ``$diagnoses`` body, as X3 does.
  ``orderBy``: comma-separated properties (``asc`` optional); the key breaks ties. The answer
  has ``$url``, ``$descriptor``, ``$startIndex``, ``$itemsPerPage``, ``$totalResults`` and
  ``$resources`` (``$uuid``, ``$key``, ``$url``, ``$etag`` and the properties), and
  ``$links.$next.$url`` while rows remain. What X3 puts in that link is not published; here it
  is the same query plus ``key=gt.<the last row's sort values>``, so following it resumes
  right after the last row even when rows share a stamp or change between pages.
- ``POST /xtrem/api`` (GraphQL) with ``x-xtrem-endpoint: {folder}`` and a connected
  application's HS256 JWT (checked with PyJWT: iss, signature and exp, sub, aud; 401
  ``Error 41/42/45/50: Invalid token``). Queries have the reference's shape:
  ``{ x3Purchasing { purchaseOrder { query(filter: "...", orderBy: "...", first: N, after: "...")
  { edges { node { ... } } pageInfo { endCursor hasNextPage } } } } }``, with variables. Filters
  are objects like ``{updateDateTime:{_gte:'...'},isClosed:{_ne:'yes'}}``. Node and field
  names are this fake's stand-ins for an unpublished schema (``GRAPHQL_SCHEMA``).
- ``POST /soap-generic/syracuse/collaboration/syracuse/CAdxWebServiceXmlCC`` (Basic):
  ``read`` and ``modify`` of the publications in ``PUBLICATIONS`` (the text field notes go
  to); a modify stamps ``UPDDATTIM`` as X3 would.
- Data quirks: empty strings are served as one space, empty dates as 1753-01-01.
- Failure injection: the base class's ``fail_next``/``delay_next``/``drop_next``, plus
  ``fail_nth(n, ...)`` (the n-th matching request from now, e.g. page 3) and
  ``reject_tokens(n, code)``.
- Data: ``add``, ``change`` (stamps ``UPDDATTIM``), builders for orders, lines, invoices,
  payments and suppliers, and ``fill_synthetic`` for large tables: its rows are made on
  demand from their index, so 100,000 of them cost next to no memory until read.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode
from xml.etree import ElementTree
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import jwt

from tests.fakes.server import FakeServer, RecordedRequest, Response, Route, route

EMPTY_DATE = "1753-01-01"  # SQL Server's lowest date: what an empty X3 date reads as
BLANK = " "  # X3 stores an empty string as one space
DEFAULT_COUNT = 20
MAX_COUNT = 1000
SOAP_PATH = "/soap-generic/syracuse/collaboration/syracuse/CAdxWebServiceXmlCC"
GRAPHQL_PATH = "/xtrem/api"

# --- tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSchema:
    key: tuple[str, ...]
    props: tuple[str, ...]
    dates: frozenset[str] = frozenset()
    datetimes: frozenset[str] = frozenset({"CREDATTIM", "UPDDATTIM"})
    numbers: frozenset[str] = frozenset()


SCHEMAS: Mapping[str, TableSchema] = {
    "PORDER": TableSchema(("POHNUM",), ("POHNUM", "BPSNUM", "ORDDAT", "CPY", "POHFCY", "CUR", "ORDREF", "REVNUM",
                                        "APPFLG", "CLEFLG", "RCPFLG", "TOTORD", "TTVORD", "CREUSR", "CREDATTIM",
                                        "UPDDATTIM", "YNOTES"),
                          dates=frozenset({"ORDDAT"}),
                          numbers=frozenset({"REVNUM", "APPFLG", "CLEFLG", "RCPFLG", "TOTORD", "TTVORD"})),
    "PORDERQ": TableSchema(("POHNUM", "POPLIN", "POQSEQ"),
                           ("POHNUM", "POPLIN", "POQSEQ", "BPSNUM", "ITMREF", "QTYSTU", "RCPQTYSTU", "LINCLEFLG",
                            "EXTRCPDAT", "CREDATTIM", "UPDDATTIM"),
                           dates=frozenset({"EXTRCPDAT"}),
                           numbers=frozenset({"POPLIN", "POQSEQ", "QTYSTU", "RCPQTYSTU", "LINCLEFLG"})),
    "PINVOICE": TableSchema(("NUM",), ("NUM", "BPR", "BPRVCR", "BPRDAT", "ACCDAT", "STRDUDDAT", "AMTNOT", "AMTATI",
                                       "PAYCUR", "CUR", "PAZ", "STA", "CREDATTIM", "UPDDATTIM", "YNOTES"),
                            dates=frozenset({"BPRDAT", "ACCDAT", "STRDUDDAT"}),
                            numbers=frozenset({"AMTNOT", "AMTATI", "PAYCUR", "PAZ", "STA"})),
    "PAYMENTH": TableSchema(("NUM",), ("NUM", "ACCDAT", "BAN", "BPR", "BPAINV", "BPANAM", "CUR", "AMTBAN", "CHQNUM",
                                       "DES", "REF", "STA", "CREDATTIM", "UPDDATTIM", "YNOTES"),
                            dates=frozenset({"ACCDAT"}), numbers=frozenset({"AMTBAN", "STA"})),
    "BPSUPPLIER": TableSchema(("BPSNUM",), ("BPSNUM", "BPSNAM", "CREDATTIM", "UPDDATTIM", "YNOTES")),
    "BPCUSTOMER": TableSchema(("BPCNUM",), ("BPCNUM", "BPCNAM", "CREDATTIM", "UPDDATTIM", "YNOTES")),
    "BPADDRESS": TableSchema(("BPANUM", "BPAADD"), ("BPANUM", "BPAADD", "BPAADDFLG", "TEL", "CTY", "CRY",
                                                    "CREDATTIM", "UPDDATTIM"), numbers=frozenset({"BPAADDFLG"})),
    "CONTACT": TableSchema(("BPANUM", "CCNCRM"), ("BPANUM", "CCNCRM", "CNTLNA", "CNTFNA", "CNTMOB", "CNTFLG",
                                                  "CREDATTIM", "UPDDATTIM"), numbers=frozenset({"CNTFLG"})),
}

# GraphQL stand-in schema: (package, node) -> table and a tree of field -> X3 property.
_NO_YES = {1: "no", 2: "yes"}
GRAPHQL_ENUMS: Mapping[str, Mapping[int, str]] = {
    "APPFLG": {1: "no", 2: "partly", 3: "totally", 4: "notManaged"},
    "CLEFLG": _NO_YES, "LINCLEFLG": _NO_YES, "BPAADDFLG": _NO_YES, "CNTFLG": _NO_YES,
}


@dataclass(frozen=True)
class Collection:
    """A nested list of another table's rows whose ``link`` property equals this row's ``parent``."""

    table: str
    parent: str
    link: str
    fields: Mapping[str, Any]


GRAPHQL_SCHEMA: Mapping[tuple[str, str], tuple[str, Mapping[str, Any]]] = {
    ("x3Purchasing", "purchaseOrder"): ("PORDER", {
        "id": "POHNUM", "orderFromSupplier": {"code": {"code": "BPSNUM"}}, "orderDate": "ORDDAT",
        "currency": {"code": "CUR"}, "totalAmountExcludingTax": "TOTORD", "totalAmountIncludingTax": "TTVORD",
        "signatureStatus": "APPFLG", "isClosed": "CLEFLG", "receiptStatus": "RCPFLG", "changeNumber": "REVNUM",
        "purchaseSite": "POHFCY", "createDateTime": "CREDATTIM", "updateDateTime": "UPDDATTIM",
        "purchaseOrderLines": Collection("PORDERQ", "POHNUM", "POHNUM", {
            "lineNumber": "POPLIN", "product": {"code": "ITMREF"}, "quantityInStockUnitOrdered": "QTYSTU",
            "updateDateTime": "UPDDATTIM"}),
    }),
    ("x3Purchasing", "purchaseOrderLine"): ("PORDERQ", {
        "purchaseOrder": {"id": "POHNUM"}, "lineNumber": "POPLIN", "sequenceNumber": "POQSEQ",
        "supplier": {"code": {"code": "BPSNUM"}}, "product": {"code": "ITMREF"},
        "quantityInStockUnitOrdered": "QTYSTU", "quantityInStockUnitReceived": "RCPQTYSTU", "isClosed": "LINCLEFLG",
        "expectedReceiptDate": "EXTRCPDAT", "updateDateTime": "UPDDATTIM",
    }),
    ("x3Purchasing", "purchaseInvoice"): ("PINVOICE", {
        "id": "NUM", "billBySupplier": {"code": {"code": "BPR"}}, "supplierDocumentNumber": "BPRVCR",
        "currency": {"code": "CUR"}, "amountOfLinesExcludingTax": "AMTNOT", "totalAmountIncludingTax": "AMTATI",
        "dueDateCalculationStartDate": "STRDUDDAT", "accountingDate": "ACCDAT", "status": "STA",
        "paidAmount": "PAYCUR", "createDateTime": "CREDATTIM", "updateDateTime": "UPDDATTIM",
    }),
    ("x3Finance", "payment"): ("PAYMENTH", {
        "id": "NUM", "businessPartner": {"code": "BPR"}, "businessPartnerName": "BPANAM", "currency": {"code": "CUR"},
        "bankAmount": "AMTBAN", "accountingDate": "ACCDAT", "bank": {"code": "BAN"}, "checkNumber": "CHQNUM",
        "reference": "REF", "description": "DES", "status": "STA", "createDateTime": "CREDATTIM",
        "updateDateTime": "UPDDATTIM",
    }),
    ("x3MasterData", "supplier"): ("BPSUPPLIER", {"code": {"code": "BPSNUM", "companyName": "BPSNAM"}}),
    ("x3MasterData", "businessPartnerAddress"): ("BPADDRESS", {
        "businessPartner": {"code": "BPANUM"}, "code": "BPAADD", "isDefault": "BPAADDFLG", "telephone1": "TEL",
    }),
    ("x3MasterData", "contact"): ("CONTACT", {
        "businessPartner": {"code": "BPANUM"}, "code": "CCNCRM", "mobilePhone": "CNTMOB", "isMainContact": "CNTFLG",
    }),
}


@dataclass(frozen=True)
class Publication:
    """A SOAP publication of an X3 object: its table, key, the group and the fields a modify may set."""

    table: str
    key: str
    group: str
    fields: tuple[str, ...]


PUBLICATIONS: Mapping[str, Publication] = {
    "YPOH": Publication("PORDER", "POHNUM", "POH0_1", ("POHNUM", "YNOTES")),
    "YPIH": Publication("PINVOICE", "NUM", "PIH0_1", ("NUM", "YNOTES")),
    "YPAY": Publication("PAYMENTH", "NUM", "PAY0_1", ("NUM", "YNOTES")),
    "YBPS": Publication("BPSUPPLIER", "BPSNUM", "BPS0_1", ("BPSNUM", "YNOTES")),
    "YBPC": Publication("BPCUSTOMER", "BPCNUM", "BPC0_1", ("BPCNUM", "YNOTES")),
}


@dataclass
class SyntheticBlock:
    """``count`` rows made on demand by ``make(i)``; ``key_of(i)`` gives row i's key without making it."""

    count: int
    make: Callable[[int], dict[str, Any]]
    key_of: Callable[[int], tuple[Any, ...]]
    index_of: Callable[[tuple[Any, ...]], int | None]


@dataclass
class _Table:
    name: str
    schema: TableSchema
    rows: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    blocks: list[SyntheticBlock] = field(default_factory=list)
    version: int = 0

    def each(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        """Every row with a reference to read it back: explicit rows win over synthetic ones of the same key."""
        for key, row in self.rows.items():
            yield ("x", key), row
        for number, block in enumerate(self.blocks):
            for index in range(block.count):
                if not self.rows or block.key_of(index) not in self.rows:
                    yield ("s", number, index), block.make(index)

    def fetch(self, ref: tuple[Any, ...]) -> dict[str, Any]:
        return self.rows[ref[1]] if ref[0] == "x" else self.blocks[ref[1]].make(ref[2])

    def get(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        if key in self.rows:
            return self.rows[key]
        for block in self.blocks:
            index = block.index_of(key)
            if index is not None and 0 <= index < block.count:
                return block.make(index)
        return None


class FakeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- values ---------------------------------------------------------------------------------------

_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?$")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}$")


def _sort_value(value: Any, zone: ZoneInfo) -> tuple[int, float, str]:
    """One comparable shape for every column: blanks first, then numbers, then (canonical) text."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return (0, 0.0, "")
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return (1, float(value), "")
    text = str(value)
    if _DATETIME.match(text):
        return (1, 0.0, _parse_datetime(text, zone).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return (1, 0.0, text)


def _parse_datetime(text: str, zone: ZoneInfo) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


# --- the REST where language -----------------------------------------------------------------------

_WHERE_TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<moment>@[^@]*@)|(?P<number>-?\d+(?:\.\d+)?)"
                          r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*))")
_WHERE_OPS = ("eq", "ge", "gt")

Predicate = Callable[[Mapping[str, Any]], bool]


def parse_where(text: str, props: Iterable[str], zone: ZoneInfo) -> Predicate:
    """``A ge @...@ and B eq 'x'`` as a predicate; a property not in ``props`` is a 500, as in X3."""
    known = set(props)
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        found = _WHERE_TOKEN.match(text, position)
        if found is None or found.end() == position:
            if not text[position:].strip():
                break
            raise FakeError(400, f"Syntax error in where at position {position}: {text!r}")
        kind = found.lastgroup or ""
        tokens.append((kind, found.group(kind)))
        position = found.end()
    terms: list[Predicate] = []
    index = 0
    while index < len(tokens):
        if len(tokens) - index < 3:
            raise FakeError(400, f"Incomplete where clause: {text!r}")
        (prop_kind, prop), (op_kind, op), literal = tokens[index:index + 3]
        if prop_kind != "word" or op_kind != "word" or op not in _WHERE_OPS:
            raise FakeError(400, f"Syntax error in where near {prop!r} {op!r}")
        if prop not in known:
            raise FakeError(500, f"Property {prop} does not exist")
        terms.append(_comparison(prop, op, literal, zone))
        index += 3
        if index < len(tokens):
            if tokens[index] != ("word", "and"):
                raise FakeError(400, f"Syntax error in where near {tokens[index][1]!r} (this fake reads 'and' only)")
            index += 1
    return lambda row: all(term(row) for term in terms)


def _comparison(prop: str, op: str, literal: tuple[str, str], zone: ZoneInfo) -> Predicate:
    kind, raw = literal
    convert: Callable[[Any], Any]
    if kind == "string":
        wanted: Any = raw[1:-1].replace("''", "'")
        convert = _as_text
    elif kind == "number":
        wanted = float(raw)
        convert = _as_float
    elif kind == "moment":
        inner = raw[1:-1]
        if _DATE.match(inner):
            wanted, convert = inner, _as_day
        elif _DATETIME.match(inner):
            wanted, convert = _parse_datetime(inner, zone), partial(_as_moment, zone=zone)
        else:
            raise FakeError(400, f"Not a date or date-time: {raw}")
    else:
        raise FakeError(400, f"Expected a value after {prop} {op}, found {raw!r}")
    return _compare(prop, op, wanted, convert)


def _compare(prop: str, op: str, wanted: Any, convert: Callable[[Any], Any]) -> Predicate:
    def test(row: Mapping[str, Any]) -> bool:
        value = convert(row.get(prop))
        if value is None:
            return False
        if op == "eq":
            return value == wanted
        if op in ("ge", "_gte"):
            return value >= wanted
        if op in ("gt", "_gt"):
            return value > wanted
        if op == "_ne":
            return value != wanted
        if op == "_lt":
            return value < wanted
        if op == "_lte":
            return value <= wanted
        return value == wanted

    return test


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _as_day(value: Any) -> str | None:
    return str(value)[:10] if value else None


def _as_moment(value: Any, zone: ZoneInfo) -> datetime | None:
    return _parse_datetime(str(value), zone) if value and _DATETIME.match(str(value)) else None


def _as_float(value: Any) -> float | None:
    try:
        return None if value is None or (isinstance(value, str) and not value.strip()) else float(value)
    except (TypeError, ValueError):
        return None


# --- a GraphQL subset -------------------------------------------------------------------------------

_GQL_TOKEN = re.compile(r'[\s,]*(?:(?P<punct>[{}()\[\]:!=$])|(?P<string>"(?:[^"\\]|\\.)*")|'
                        r"(?P<number>-?\d+(?:\.\d+)?)|(?P<name>[_A-Za-z][_0-9A-Za-z]*))")


@dataclass
class GqlField:
    name: str
    args: dict[str, Any]
    selections: list[GqlField]


class GqlParser:
    """Operations with variables, fields with arguments and selection sets: what the adapter sends."""

    def __init__(self, text: str, variables: Mapping[str, Any]) -> None:
        self._tokens = self._lex(text)
        self._index = 0
        self._variables = variables

    @staticmethod
    def _lex(text: str) -> list[tuple[str, str]]:
        tokens, position = [], 0
        while position < len(text):
            found = _GQL_TOKEN.match(text, position)
            if found is None or found.end() == position:
                if not text[position:].strip(" \t\r\n,"):
                    break
                raise FakeError(400, f"Syntax Error: unexpected character at {position}")
            kind = found.lastgroup or ""
            tokens.append((kind, found.group(kind)))
            position = found.end()
        return tokens

    def document(self) -> list[GqlField]:
        if self._peek() == ("name", "query"):
            self._next()
            if self._peek()[0] == "name":
                self._next()
            if self._peek() == ("punct", "("):
                self._skip_variable_definitions()
        return self._selection_set()

    def _peek(self) -> tuple[str, str]:
        return self._tokens[self._index] if self._index < len(self._tokens) else ("end", "")

    def _next(self) -> tuple[str, str]:
        token = self._peek()
        if token[0] == "end":
            raise FakeError(400, "Syntax Error: unexpected end of the document")
        self._index += 1
        return token

    def _expect(self, punct: str) -> None:
        if self._next() != ("punct", punct):
            raise FakeError(400, f"Syntax Error: expected {punct!r}")

    def _skip_variable_definitions(self) -> None:
        depth = 0
        while True:
            kind, value = self._next()
            if (kind, value) == ("punct", "("):
                depth += 1
            elif (kind, value) == ("punct", ")"):
                depth -= 1
                if depth == 0:
                    return

    def _selection_set(self) -> list[GqlField]:
        self._expect("{")
        fields = []
        while self._peek() != ("punct", "}"):
            fields.append(self._field())
        self._next()
        return fields

    def _field(self) -> GqlField:
        kind, name = self._next()
        if kind != "name":
            raise FakeError(400, f"Syntax Error: expected a field name, found {name!r}")
        args: dict[str, Any] = {}
        if self._peek() == ("punct", "("):
            self._next()
            while self._peek() != ("punct", ")"):
                arg_kind, arg = self._next()
                if arg_kind != "name":
                    raise FakeError(400, f"Syntax Error: expected an argument name, found {arg!r}")
                self._expect(":")
                args[arg] = self._value()
            self._next()
        selections = self._selection_set() if self._peek() == ("punct", "{") else []
        return GqlField(name, args, selections)

    def _value(self) -> Any:
        kind, text = self._next()
        if (kind, text) == ("punct", "$"):
            return self._variables.get(self._next()[1])
        if kind == "string":
            return json.loads(text)
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(text, text)
        raise FakeError(400, f"Syntax Error: unexpected {text!r}")


_OBJECT_TOKEN = re.compile(r"\s*(?:(?P<punct>[{}:,\[\]])|(?P<string>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
                           r"|(?P<number>-?\d+(?:\.\d+)?)|(?P<name>[_$A-Za-z][_$0-9A-Za-z]*))")


def parse_object(text: str) -> Any:
    """A filter/orderBy argument: a JavaScript-style object with bare keys and quoted strings."""
    tokens, position = [], 0
    while position < len(text):
        found = _OBJECT_TOKEN.match(text, position)
        if found is None or found.end() == position:
            if not text[position:].strip():
                break
            raise FakeError(400, f"Invalid filter at {position}: {text!r}")
        kind = found.lastgroup or ""
        tokens.append((kind, found.group(kind)))
        position = found.end()
    value, end = _object_value(tokens, 0)
    if end != len(tokens):
        raise FakeError(400, f"Invalid filter: {text!r}")
    return value


def _object_value(tokens: list[tuple[str, str]], index: int) -> tuple[Any, int]:
    kind, text = tokens[index]
    if (kind, text) == ("punct", "{"):
        result: dict[str, Any] = {}
        index += 1
        while tokens[index] != ("punct", "}"):
            key = tokens[index][1].strip("'\"")
            if tokens[index + 1] != ("punct", ":"):
                raise FakeError(400, "Invalid filter: ':' expected")
            result[key], index = _object_value(tokens, index + 2)
            if tokens[index] == ("punct", ","):
                index += 1
        return result, index + 1
    if kind == "string":
        return re.sub(r"\\(.)", r"\1", text[1:-1]), index + 1
    if kind == "number":
        return (float(text) if "." in text else int(text)), index + 1
    if kind == "name":
        return {"true": True, "false": False, "null": None}.get(text, text), index + 1
    raise FakeError(400, f"Invalid filter near {text!r}")


# --- the server ---------------------------------------------------------------------------------------


@dataclass
class ConnectedApp:
    client_id: str
    secret: str
    user: str
    audience: str


class FakeSageX3(FakeServer):
    service_name = "fake-sagex3"

    def __init__(self, *, folder: str = "SEED", user: str = "admin", password: str = "x3-password",
                 pool_alias: str = "SEED", time_zone: str = "UTC", port: int = 0) -> None:
        super().__init__(port=port)
        self.folder, self.user, self.password, self.pool_alias = folder, user, password, pool_alias
        self.zone = ZoneInfo(time_zone)
        self._data = threading.RLock()
        self._tables = {name: _Table(name, schema) for name, schema in SCHEMAS.items()}
        # (class in the URL, representation) -> table
        self._published: dict[tuple[str, str], str] = {(name, f"Y{name}"): name for name in SCHEMAS}
        self._apps: dict[str, ConnectedApp] = {}
        self._token_rejections: list[int] = []
        self._hidden_fields: set[str] = set()
        self._cache: OrderedDict[tuple[Any, ...], tuple[int, list[tuple[Any, ...]], list[Any]]] = OrderedDict()
        self._indexes: dict[tuple[str, str], tuple[int, dict[Any, list[Any]]]] = {}

    def routes(self) -> Sequence[Route]:
        return [
            route("GET", r"/api1/x3/erp/(?P<folder>[^/]+)/(?P<cls>[A-Za-z0-9_]+)", self._rest),
            route("POST", GRAPHQL_PATH, self._graphql),
            route("POST", SOAP_PATH, self._soap),
        ]

    def error_response(self, status: int, message: str) -> Response:
        return Response.json(status, {"$diagnoses": [{"$severity": "error", "$message": message}]})

    # --- setup -------------------------------------------------------------------------------------

    @property
    def graphql_url(self) -> str:
        return self.base_url + GRAPHQL_PATH

    def publish(self, cls: str, representation: str, table: str) -> None:
        """Make ``table`` readable as ``{cls}?representation={representation}`` (custom names)."""
        with self._data:
            self._published[(cls, representation)] = table

    def unpublish(self, table: str) -> None:
        with self._data:
            for name in [name for name, target in self._published.items() if target == table]:
                del self._published[name]

    def register_application(self, client_id: str, secret: str, user: str, audience: str | None = None) -> None:
        """A connected application: its client id and secret, its one allowed user, the URL it was set up with."""
        self._apps[client_id] = ConnectedApp(client_id, secret, user, audience or self.graphql_url)

    def hide_graphql_field(self, name: str) -> None:
        """Answer GraphQL as a schema without field ``name`` would (an older or customised X3)."""
        self._hidden_fields.add(name)

    def reject_tokens(self, n: int = 1, code: int = 50) -> None:
        """Refuse the next ``n`` GraphQL requests with ``Error {code}: Invalid token`` whatever they carry."""
        with self._data:
            self._token_rejections.extend([code] * n)

    def fail_nth(self, n: int, status: int = 500, match: str | Callable[[RecordedRequest], bool] | None = None,
                 times: int = 1, headers: Mapping[str, str] | None = None) -> None:
        """Answer ``status`` to the ``n``-th matching request from now (say, page 3), ``times`` times in a row.

        ``times`` > 1 also fails the client's retries of that request.
        """
        from tests.fakes.server import request_filter

        accepts = request_filter(match)
        seen = [0]

        def nth(request: RecordedRequest) -> bool:
            if not accepts(request):
                return False
            seen[0] += 1
            return n <= seen[0] < n + times

        self.fail_next(times, status=status, headers=headers, match=nth)

    # --- data ----------------------------------------------------------------------------------------

    def stamp(self, moment: datetime) -> str:
        """How this server writes a date-time: UTC with ``Z``, or local without a suffix."""
        local = moment.astimezone(self.zone) if moment.tzinfo else moment
        text = local.replace(microsecond=0, tzinfo=None).isoformat()
        return text + "Z" if self.zone.key == "UTC" else text

    def stored(self, table: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Values as X3 stores them: every property present, blanks as one space, no date as 1753-01-01."""
        schema = SCHEMAS[table]
        row: dict[str, Any] = {}
        for prop in schema.props:
            value = values.get(prop)
            if isinstance(value, datetime):
                value = self.stamp(value)
            elif isinstance(value, date):
                value = value.isoformat()
            elif isinstance(value, Decimal):
                value = float(value)
            if value is None or value == "":
                value = self._empty(schema, prop)
            row[prop] = value
        unknown = set(values) - set(schema.props)
        if unknown:
            raise ValueError(f"{table} has no {', '.join(sorted(unknown))}")
        return row

    def _empty(self, schema: TableSchema, prop: str) -> Any:
        if prop in schema.datetimes:
            return f"{EMPTY_DATE}T00:00:00" + ("Z" if self.zone.key == "UTC" else "")
        if prop in schema.dates:
            return EMPTY_DATE
        return 0 if prop in schema.numbers else BLANK

    def add(self, table: str, *rows: Mapping[str, Any]) -> None:
        """Insert or replace rows (values as Python types; stamps default to now)."""
        now = datetime.now(UTC)
        with self._data:
            store = self._tables[table]
            for values in rows:
                full = {"CREDATTIM": now, "UPDDATTIM": values.get("CREDATTIM", now), **values}
                row = self.stored(table, full)
                store.rows[tuple(row[name] for name in store.schema.key)] = row
            store.version += 1

    def change(self, table: str, key: Any, at: datetime | None = None, **values: Any) -> dict[str, Any]:
        """Update a row as X3 does: the values, and UPDDATTIM = ``at`` (default now). Returns the new row."""
        with self._data:
            store = self._tables[table]
            key_tuple = key if isinstance(key, tuple) else (key,)
            current = store.get(key_tuple)
            if current is None:
                raise KeyError(f"{table} {key!r} does not exist")
            row = dict(current)
            for prop, value in self.stored(table, {**values}).items():
                if prop in values:
                    row[prop] = value
            row["UPDDATTIM"] = self.stamp(at or datetime.now(UTC))
            store.rows[key_tuple] = row
            store.version += 1
            return row

    def record(self, table: str, key: Any) -> dict[str, Any] | None:
        with self._data:
            row = self._tables[table].get(key if isinstance(key, tuple) else (key,))
            return dict(row) if row is not None else None

    def add_supplier(self, code: str, name: str, *, mobile: str | None = None, phone: str | None = None) -> None:
        """A supplier with its default address (TEL) and, when ``mobile`` is given, a main contact (CNTMOB)."""
        self.add("BPSUPPLIER", {"BPSNUM": code, "BPSNAM": name})
        self.add("BPADDRESS", {"BPANUM": code, "BPAADD": "MAIN", "BPAADDFLG": 2, "TEL": phone, "CRY": "US"})
        if mobile is not None:
            self.add("CONTACT", {"BPANUM": code, "CCNCRM": f"C-{code}", "CNTLNA": name, "CNTMOB": mobile,
                                 "CNTFLG": 2})

    def add_customer(self, code: str, name: str) -> None:
        """A customer record (BPCUSTOMER), which notes can go on."""
        self.add("BPCUSTOMER", {"BPCNUM": code, "BPCNAM": name})

    def add_order(self, number: str, *, supplier: str = "S001", updated: datetime, created: datetime | None = None,
                  signed: int = 1, closed: int = 1, amount: float = 1000.0, currency: str = "USD",
                  revision: int = 0, **extra: Any) -> None:
        self.add("PORDER", {"POHNUM": number, "BPSNUM": supplier, "ORDDAT": (created or updated).date(),
                            "CPY": "US01", "POHFCY": "US011", "CUR": currency, "REVNUM": revision, "APPFLG": signed,
                            "CLEFLG": closed, "RCPFLG": 1, "TOTORD": amount, "TTVORD": round(amount * 1.08, 2),
                            "CREUSR": "ADMIN", "CREDATTIM": created or updated, "UPDDATTIM": updated, **extra})

    def add_line(self, order: str, line: int, *, expected: date, supplier: str = "S001", quantity: float = 10,
                 received: float = 0, closed: int = 1, updated: datetime | None = None, item: str = "BMS001",
                 sequence: int = 1) -> None:
        self.add("PORDERQ", {"POHNUM": order, "POPLIN": line, "POQSEQ": sequence, "BPSNUM": supplier,
                             "ITMREF": item, "QTYSTU": quantity, "RCPQTYSTU": received, "LINCLEFLG": closed,
                             "EXTRCPDAT": expected, "UPDDATTIM": updated or datetime.now(UTC)})

    def add_invoice(self, number: str, *, supplier: str = "S001", updated: datetime, due: date | None,
                    amount: float = 500.0, paid: float = 0.0, currency: str = "USD",
                    created: datetime | None = None, **extra: Any) -> None:
        self.add("PINVOICE", {"NUM": number, "BPR": supplier, "BPRVCR": f"SUP-{number}",
                              "BPRDAT": (created or updated).date(), "ACCDAT": (created or updated).date(),
                              "STRDUDDAT": due, "AMTNOT": round(amount / 1.08, 2), "AMTATI": amount, "PAYCUR": paid,
                              "CUR": currency, "PAZ": 1, "STA": 3, "CREDATTIM": created or updated,
                              "UPDDATTIM": updated, **extra})

    def add_payment(self, number: str, *, supplier: str = "S001", supplier_name: str = "", updated: datetime,
                    amount: float = 250.0, currency: str = "USD", **extra: Any) -> None:
        self.add("PAYMENTH", {"NUM": number, "ACCDAT": updated.date(), "BAN": "BANK01", "BPR": supplier,
                              "BPAINV": "MAIN", "BPANAM": supplier_name, "CUR": currency, "AMTBAN": amount,
                              "CHQNUM": "", "DES": "", "REF": f"REF-{number}", "STA": 9, "CREDATTIM": updated,
                              "UPDDATTIM": updated, **extra})

    def fill_synthetic(self, table: str, count: int, *, start: datetime, per_second: int = 1,
                       supplier: str = "S001", prefix: str = "SYN") -> None:
        """``count`` rows of ``table`` (PORDER, PINVOICE or PAYMENTH) made on demand from their index.

        Row i is keyed ``{prefix}{i:08d}`` and stamped ``start + i // per_second`` seconds, so
        ``per_second`` rows share each stamp. Nothing is stored per row until a row is changed.
        """
        key_name = SCHEMAS[table].key[0]
        base = self._synthetic_base(table, supplier)
        stamps: dict[int, str] = {}

        def stamp_of(index: int) -> str:
            second = index // per_second
            if second not in stamps:
                if len(stamps) > 4096:
                    stamps.clear()
                stamps[second] = self.stamp(start + timedelta(seconds=second))
            return stamps[second]

        def make(index: int) -> dict[str, Any]:
            moment = stamp_of(index)
            return {**base, key_name: f"{prefix}{index:08d}", "CREDATTIM": moment, "UPDDATTIM": moment}

        def index_of(key: tuple[Any, ...]) -> int | None:
            value = str(key[0])
            digits = value[len(prefix):]
            return int(digits) if value.startswith(prefix) and digits.isdigit() else None

        with self._data:
            store = self._tables[table]
            store.blocks.append(SyntheticBlock(count, make, lambda index: (f"{prefix}{index:08d}",), index_of))
            store.version += 1

    def _synthetic_base(self, table: str, supplier: str) -> dict[str, Any]:
        today = datetime.now(UTC).date()
        values: dict[str, dict[str, Any]] = {
            "PORDER": {"BPSNUM": supplier, "ORDDAT": today, "CPY": "US01", "POHFCY": "US011", "CUR": "USD",
                       "REVNUM": 0, "APPFLG": 1, "CLEFLG": 1, "RCPFLG": 1, "TOTORD": 100.0, "TTVORD": 108.0},
            "PINVOICE": {"BPR": supplier, "STRDUDDAT": today + timedelta(days=60), "AMTNOT": 100.0, "AMTATI": 108.0,
                         "PAYCUR": 0.0, "CUR": "USD", "PAZ": 1, "STA": 3},
            "PAYMENTH": {"BPR": supplier, "BPANAM": "", "CUR": "USD", "AMTBAN": 108.0, "STA": 9},
        }
        if table not in values:
            raise ValueError(f"synthetic rows are made for PORDER, PINVOICE and PAYMENTH, not {table}")
        return self.stored(table, values[table])

    # --- selecting rows ----------------------------------------------------------------------------------

    def _select(self, table: str, condition: str, predicate: Predicate,
                order: Sequence[str]) -> tuple[list[tuple[Any, ...]], list[Any]]:
        """Matching rows as (sort values, reference), sorted, ties broken by the key; cached until data changes."""
        store = self._tables[table]
        cache_key = (table, condition, tuple(order))
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] == store.version:
            self._cache.move_to_end(cache_key)
            return cached[1], cached[2]
        columns = [*order, *(name for name in store.schema.key if name not in order)]
        found = [(tuple(_sort_value(row.get(name), self.zone) for name in columns), ref)
                 for ref, row in store.each() if predicate(row)]
        found.sort(key=lambda item: item[0])
        sorts, refs = [item[0] for item in found], [item[1] for item in found]
        self._cache[cache_key] = (store.version, sorts, refs)
        while len(self._cache) > 8:
            self._cache.popitem(last=False)
        return sorts, refs

    # --- REST --------------------------------------------------------------------------------------------

    def _rest(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        if not self._basic_ok(request):
            return Response(401, b"Unauthorized", {"WWW-Authenticate": 'Basic realm="Syracuse"'})
        folder, cls = unquote(match.group("folder")), match.group("cls")
        if folder != self.folder:
            return self.error_response(404, f"Endpoint {folder} not found")
        representation, _, facet = (request.query_value("representation") or "").partition(".")
        with self._data:
            table = self._published.get((cls, representation))
            if table is None:
                return self.error_response(404, f"Class {cls} with representation {representation} not found")
            if facet != "$query":
                return self.error_response(400, f"Facet {facet!r} is not modelled by this fake")
            try:
                return self._rest_page(request, table, cls)
            except FakeError as error:
                return self.error_response(error.status, error.message)

    def _rest_page(self, request: RecordedRequest, table: str, cls: str) -> Response:
        schema = SCHEMAS[table]
        where = request.query_value("where") or ""
        predicate = parse_where(where, schema.props, self.zone) if where.strip() else (lambda _row: True)
        order = [part.split()[0] for part in (request.query_value("orderBy") or "").split(",") if part.strip()]
        unknown = [name for name in order if name not in schema.props]
        if unknown:
            raise FakeError(500, f"Property {unknown[0]} does not exist")
        if any(len(part.split()) > 1 and part.split()[1].lower() != "asc"
               for part in (request.query_value("orderBy") or "").split(",") if part.strip()):
            raise FakeError(400, "Descending order is not modelled by this fake")
        count = min(int(request.query_value("count") or DEFAULT_COUNT), MAX_COUNT)
        sorts, refs = self._select(table, where, predicate, order)
        start = 0
        after = request.query_value("key") or ""
        if after.startswith("gt."):
            start = bisect.bisect_right(sorts, _sort_key(json.loads(after[3:])))
        page_refs = refs[start:start + count]
        store = self._tables[table]
        resources = [self._resource(cls, schema, store.fetch(ref)) for ref in page_refs]
        body: dict[str, Any] = {
            "$url": self.base_url + request.target, "$descriptor": f"prototype {cls}.$query",
            "$startIndex": start + 1, "$itemsPerPage": count, "$totalResults": len(refs), "$resources": resources,
        }
        if start + count < len(refs):
            body["$links"] = {"$next": {"$url": self._next_url(request, sorts[start + count - 1])}}
        return Response.json(200, body)

    def _resource(self, cls: str, schema: TableSchema, row: Mapping[str, Any]) -> dict[str, Any]:
        key = "~".join(str(row[name]) for name in schema.key)
        return {"$uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{cls}/{key}")), "$key": key,
                "$url": f"{self.base_url}/api1/x3/erp/{self.folder}/{cls}('{quote(key)}')",
                "$etag": str(row.get("UPDDATTIM")), **{name: row.get(name) for name in schema.props}}

    def _next_url(self, request: RecordedRequest, last: tuple[Any, ...]) -> str:
        params = [(name, value) for name, value in parse_qsl(request.target.partition("?")[2], keep_blank_values=True)
                  if name != "key"]
        params.append(("key", "gt." + json.dumps(last, separators=(",", ":"))))
        return f"{self.base_url}{request.path}?{urlencode(params, quote_via=quote, safe='$@,:')}"

    def _basic_ok(self, request: RecordedRequest) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return (user, password) == (self.user, self.password)

    # --- GraphQL -----------------------------------------------------------------------------------------

    def _graphql(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        refused = self._token_problem(request)
        if refused is not None:
            return self.error_response(401, f"Error {refused}: Invalid token")
        if request.headers.get("x-xtrem-endpoint") != self.folder:
            return Response.json(400, {"errors": [{"message": "Unknown or missing x-xtrem-endpoint"}]})
        body = request.json if isinstance(request.json, dict) else {}
        try:
            fields = GqlParser(str(body.get("query") or ""), body.get("variables") or {}).document()
            with self._data:
                data = {item.name: self._package(item) for item in fields}
        except FakeError as error:
            return Response.json(400 if error.status < 500 else 200, {"errors": [{"message": error.message}]})
        return Response.json(200, {"data": data})

    def _token_problem(self, request: RecordedRequest) -> int | None:
        with self._data:
            if self._token_rejections:
                return self._token_rejections.pop(0)
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return 50
        token = header[7:]
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return 50
        app = self._apps.get(str(claims.get("iss")))
        if app is None:
            return 41
        try:
            jwt.decode(token, app.secret, algorithms=["HS256"],
                       options={"verify_aud": False, "require": ["exp", "iat", "iss", "sub", "aud"]})
        except jwt.InvalidTokenError:
            return 50
        if claims.get("sub") != app.user:
            return 42
        if claims.get("aud") != app.audience:
            return 45
        return None

    def _package(self, item: GqlField) -> dict[str, Any]:
        nodes = {node for package, node in GRAPHQL_SCHEMA if package == item.name}
        if not nodes:
            raise FakeError(400, f"Cannot query field '{item.name}' on type 'Query'.")
        result = {}
        for node_field in item.selections:
            if node_field.name not in nodes:
                raise FakeError(400, f"Cannot query field '{node_field.name}' on type '{item.name}'.")
            table, tree = GRAPHQL_SCHEMA[(item.name, node_field.name)]
            result[node_field.name] = self._node_operations(node_field, table, tree)
        return result

    def _node_operations(self, item: GqlField, table: str, tree: Mapping[str, Any]) -> dict[str, Any]:
        result = {}
        for operation in item.selections:
            if operation.name != "query":
                raise FakeError(400, f"Cannot query field '{operation.name}' (this fake answers 'query' only).")
            result["query"] = self._connection(operation, table, tree)
        return result

    def _connection(self, item: GqlField, table: str, tree: Mapping[str, Any],
                    rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        first = int(item.args.get("first") or DEFAULT_COUNT)
        if rows is None:
            condition = str(item.args.get("filter") or "")
            predicate = _filter_predicate(parse_object(condition), tree, self.zone) if condition else lambda _r: True
            order = _order_props(parse_object(str(item.args.get("orderBy") or "{}")), tree)
            sorts, refs = self._select(table, "gql:" + condition, predicate, order)
            after = item.args.get("after")
            start = bisect.bisect_right(sorts, _sort_key(_decode_cursor(after))) if after else 0
            store = self._tables[table]
            page = [(sorts[index], store.fetch(refs[index])) for index in range(start, min(start + first, len(refs)))]
            more = start + first < len(refs)
        else:
            page = [((), row) for row in rows[:first]]
            more = len(rows) > first
        self._check_connection(item, tree)
        result: dict[str, Any] = {}
        for part in item.selections:
            if part.name == "edges":
                result["edges"] = [self._edge(part, tree, sort, row) for sort, row in page]
            elif part.name == "pageInfo":
                end = _encode_cursor(page[-1][0]) if page else None
                info = {"endCursor": end, "hasNextPage": more}
                result["pageInfo"] = {sub.name: info.get(sub.name) for sub in part.selections}
            else:
                raise FakeError(400, f"Cannot query field '{part.name}' on a connection.")
        return result

    def _check_connection(self, item: GqlField, tree: Mapping[str, Any]) -> None:
        """Validate a selection against the schema before running it, rows or no rows, as GraphQL does."""
        for part in item.selections:
            for sub in part.selections if part.name == "edges" else []:
                if sub.name == "node":
                    self._check_object(sub.selections, tree)

    def _check_object(self, selections: list[GqlField], tree: Mapping[str, Any]) -> None:
        for part in selections:
            spec = tree.get(part.name) if part.name not in self._hidden_fields else None
            if spec is None:
                raise FakeError(400, f"Cannot query field '{part.name}'.")
            if isinstance(spec, dict):
                self._check_object(part.selections, spec)
            elif isinstance(spec, Collection):
                for operation in part.selections:
                    self._check_connection(operation, spec.fields)

    def _edge(self, item: GqlField, tree: Mapping[str, Any], sort: tuple[Any, ...],
              row: Mapping[str, Any]) -> dict[str, Any]:
        edge: dict[str, Any] = {}
        for part in item.selections:
            if part.name == "node":
                edge["node"] = self._object(part.selections, tree, row)
            elif part.name == "cursor":
                edge["cursor"] = _encode_cursor(sort)
            else:
                raise FakeError(400, f"Cannot query field '{part.name}' on an edge.")
        return edge

    def _object(self, selections: list[GqlField], tree: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for part in selections:
            spec = tree.get(part.name) if part.name not in self._hidden_fields else None
            if spec is None:
                raise FakeError(400, f"Cannot query field '{part.name}'.")
            if isinstance(spec, str):
                result[part.name] = _to_graphql(spec, row.get(spec))
            elif isinstance(spec, Collection):
                lines = self._children(spec, row.get(spec.parent))
                operations = {sub.name: self._connection(sub, spec.table, spec.fields, lines)
                              for sub in part.selections if sub.name == "query"}
                result[part.name] = operations
            else:
                result[part.name] = self._object(part.selections, spec, row)
        return result

    def _children(self, spec: Collection, parent: Any) -> list[dict[str, Any]]:
        """The rows of ``spec.table`` that belong to ``parent``, in key order (an index kept until data changes)."""
        store = self._tables[spec.table]
        cached = self._indexes.get((spec.table, spec.link))
        if cached is None or cached[0] != store.version:
            _, refs = self._select(spec.table, "", lambda _row: True, [])
            index: dict[Any, list[Any]] = {}
            for ref in refs:
                index.setdefault(store.fetch(ref).get(spec.link), []).append(ref)
            cached = self._indexes[(spec.table, spec.link)] = (store.version, index)
        return [store.fetch(ref) for ref in cached[1].get(parent, [])]

    # --- SOAP ---------------------------------------------------------------------------------------------

    def _soap(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        if not self._basic_ok(request):
            return Response(401, b"Unauthorized", {"WWW-Authenticate": 'Basic realm="Syracuse"'})
        try:
            document = ElementTree.fromstring(request.body)
        except ElementTree.ParseError:
            return _soap_fault("The request is not XML")
        body = next((element for element in document if _local(element) == "Body"), None)
        call = next(iter(body), None) if body is not None else None
        if call is None:
            return _soap_fault("No operation in the SOAP body")
        operation = _local(call)
        values = {_local(element): element for element in call}
        pool = _find_text(values.get("callContext"), "poolAlias")
        if pool != self.pool_alias:
            return _soap_answer(operation, 0, [f"Pool {pool!r} does not exist"])
        public_name = (values.get("publicName").text or "") if values.get("publicName") is not None else ""
        publication = PUBLICATIONS.get(public_name)
        if publication is None:
            return _soap_answer(operation, 0, [f"Web service {public_name} is not published"])
        keys = {_find_text(item, "key"): _find_text(item, "value") for item in (values.get("objectKeys") or [])}
        key = keys.get(publication.key)
        with self._data:
            row = self._tables[publication.table].get((key,))
            if row is None:
                return _soap_answer(operation, 0, [f"Record {key} does not exist"])
            if operation == "read":
                return _soap_answer(operation, 1, [], _result_xml(publication, row))
            if operation == "modify":
                return self._modify(publication, key or "", values.get("objectXml"))
        return _soap_fault(f"Operation {operation} is not modelled by this fake")

    def _modify(self, publication: Publication, key: str, object_xml: ElementTree.Element | None) -> Response:
        try:
            param = ElementTree.fromstring((object_xml.text or "") if object_xml is not None else "")
        except ElementTree.ParseError:
            return _soap_answer("modify", 0, ["objectXml is not XML"])
        updates: dict[str, str] = {}
        for group in param.iter("GRP"):
            if group.get("ID") != publication.group:
                return _soap_answer("modify", 0, [f"Group {group.get('ID')} does not exist"])
            for element in group.iter("FLD"):
                name = element.get("NAME", "")
                if name not in publication.fields:
                    return _soap_answer("modify", 0, [f"Field {name} does not exist"])
                updates[name] = element.text or ""
        row = self.change(publication.table, key, **updates)
        return _soap_answer("modify", 1, [], _result_xml(publication, row))


# --- helpers ----------------------------------------------------------------------------------------------


def _sort_key(value: Any) -> tuple[Any, ...]:
    return tuple(tuple(item) for item in value)


def _encode_cursor(sort: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(json.dumps(sort, separators=(",", ":")).encode()).decode()


def _decode_cursor(cursor: Any) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(str(cursor).encode()))
    except (ValueError, TypeError):
        raise FakeError(400, f"Invalid cursor {cursor!r}") from None


def _to_graphql(prop: str, value: Any) -> Any:
    names = GRAPHQL_ENUMS.get(prop)
    if names is not None and isinstance(value, int | float):
        return names.get(int(value), str(value))
    return value


def _order_props(order: Any, tree: Mapping[str, Any]) -> list[str]:
    props: list[str] = []
    for name, direction in (order or {}).items():
        spec = tree.get(name)
        if spec is None:
            raise FakeError(400, f"Cannot order by unknown field '{name}'.")
        if isinstance(spec, dict):
            props += _order_props(direction, spec)
        elif isinstance(spec, str):
            if direction != 1:
                raise FakeError(400, "Descending order is not modelled by this fake")
            props.append(spec)
        else:
            raise FakeError(400, f"Cannot order by '{name}'.")
    return props


def _filter_predicate(condition: Any, tree: Mapping[str, Any], zone: ZoneInfo) -> Predicate:
    tests: list[Predicate] = []
    for name, value in (condition or {}).items():
        spec = tree.get(name)
        if spec is None:
            raise FakeError(400, f"Cannot filter on unknown field '{name}'.")
        if isinstance(spec, dict):
            tests.append(_filter_predicate(value, spec, zone))
        elif isinstance(spec, str):
            operations = value if isinstance(value, dict) else {"_eq": value}
            for operator, literal in operations.items():
                if operator not in ("_eq", "_ne", "_gt", "_gte", "_lt", "_lte"):
                    raise FakeError(400, f"Unknown filter operator '{operator}'.")
                tests.append(_graphql_comparison(spec, operator, literal, zone))
        else:
            raise FakeError(400, f"Cannot filter on '{name}'.")
    return lambda row: all(test(row) for test in tests)


def _graphql_comparison(prop: str, operator: str, literal: Any, zone: ZoneInfo) -> Predicate:
    names = GRAPHQL_ENUMS.get(prop)
    if names is not None and isinstance(literal, str):
        literal = next((number for number, name in names.items() if name == literal), literal)
    convert: Callable[[Any], Any]
    if isinstance(literal, str) and _DATETIME.match(literal):
        wanted: Any = _parse_datetime(literal, zone)
        convert = partial(_as_moment, zone=zone)
    elif isinstance(literal, str) and _DATE.match(literal):
        wanted, convert = literal, _as_day
    elif isinstance(literal, int | float):
        wanted, convert = float(literal), _as_float
    else:
        wanted, convert = literal, _as_text
    op = "eq" if operator == "_eq" else operator
    return _compare(prop, op, wanted, convert)


def _local(element: ElementTree.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def _find_text(element: ElementTree.Element | None, name: str) -> str | None:
    if element is None:
        return None
    found = next((child for child in element.iter() if _local(child) == name), None)
    return found.text if found is not None else None


def _result_xml(publication: Publication, row: Mapping[str, Any]) -> str:
    fields = "".join(f'<FLD NAME="{name}">{escape(str(row.get(name, "")))}</FLD>' for name in publication.fields)
    return f'<RESULT><GRP ID="{publication.group}">{fields}</GRP></RESULT>'


def _soap_answer(operation: str, status: int, messages: list[str], result_xml: str = "") -> Response:
    listed = "".join(f"<messages><message>{escape(text)}</message><type>3</type></messages>" for text in messages)
    body = (f'<?xml version="1.0" encoding="utf-8"?><soapenv:Envelope '
            f'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:wss="http://www.adonix.com/WSS">'
            f"<soapenv:Body><wss:{operation}Response><{operation}Return>{listed}"
            f"<resultXml>{escape(result_xml)}</resultXml><status>{status}</status><technicalInfos/>"
            f"</{operation}Return></wss:{operation}Response></soapenv:Body></soapenv:Envelope>")
    return Response(200, body.encode("utf-8"), {"Content-Type": "text/xml; charset=utf-8"})


def _soap_fault(message: str) -> Response:
    body = ('<?xml version="1.0" encoding="utf-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><soapenv:Fault>'
            f"<faultcode>soapenv:Server</faultcode><faultstring>{escape(message)}</faultstring>"
            "</soapenv:Fault></soapenv:Body></soapenv:Envelope>")
    return Response(500, body.encode("utf-8"), {"Content-Type": "text/xml; charset=utf-8"})


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a fake with synthetic rows from a process of its own (benchmarks, memory tests).

    ``python -m tests.fakes.sagex3 --table PORDER --rows 100000 --start 2026-11-22T00:00:00Z``
    prints the base URL on one line, then serves until its standard input closes.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--table", default="PORDER", choices=("PORDER", "PINVOICE", "PAYMENTH"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--start", default=None, help="stamp of row 0 (ISO 8601); default: now minus rows seconds")
    parser.add_argument("--per-second", type=int, default=1)
    parser.add_argument("--supplier", default="S001")
    options = parser.parse_args(argv)
    start = (datetime.fromisoformat(options.start.replace("Z", "+00:00")) if options.start
             else datetime.now(UTC) - timedelta(seconds=options.rows // options.per_second))
    fake = FakeSageX3().start()
    try:
        fake.add_supplier(options.supplier, "Synthetic Supplies", mobile="+14155550100")
        fake.fill_synthetic(options.table, options.rows, start=start, per_second=options.per_second,
                            supplier=options.supplier)
        print(fake.base_url, flush=True)
        sys.stdin.read()
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
