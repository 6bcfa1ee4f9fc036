"""Sage X3 V12 web APIs: Syracuse REST ``api1`` (Basic), GraphQL ``/xtrem/api`` (connected-app JWT), SOAP.

- Reads go through one of two APIs per connection (``api``): REST representations
  (``GET {base}/api1/x3/erp/{folder}/{CLASS}?representation={REP}.$query&count=&where=&orderBy=``,
  pages followed through ``$links.$next.$url``), or GraphQL (``POST {base}/xtrem/api`` with
  ``x-xtrem-endpoint: {folder}``, pages through ``first``/``after``). Both answer rows named by
  X3 property (the column without ``_0``), so the adapter above them does not care which.
- GraphQL calls carry an HS256 JWT signed with the connected application's secret (iss =
  client id, sub = user, aud = the URL, iat/exp), minted here and renewed before it
  expires. A 401 ``Error NN: Invalid token`` renews it once; a second refusal fails with
  what the number means.
- Notes are written through the SOAP generic web service (``CAdxWebServiceXmlCC``, Basic):
  ``read`` the record's text field, then ``modify`` it with the note appended.
- Every call goes through ``shared.http.HttpClient`` with bounded timeouts. When X3's
  web-service licence volume runs out it slows down and then stops answering; a call
  that times out every try becomes ``SageX3Unavailable`` (a ``RetryLater``) that says so.

Names that no public source confirms are gathered in the first section below: check
them on the customer's instance.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode, urljoin, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from shared.clients import PerConnection
from shared.erp.sagex3.connection import SageX3Connection, SageX3NoteTarget, SageX3Published
from shared.erp.xml_answers import XmlRefused, parse_xml
from shared.http import HttpClient, HttpFailure, RetryPolicy, is_transient_error
from shared.outcomes import PermanentFailure, RetryLater

if TYPE_CHECKING:
    import requests

    from shared.storage.secrets import SecretProvider

log = logging.getLogger(__name__)

# ==================================================================================================
# Names to check on the customer's instance (unconfirmed): none of these is in a public source.
# REST: the class and representation published for each table (standard ones may not exist;
# customers publish Y* ones). GraphQL: node and field names, enum values, pageInfo/after paging,
# and the update-stamp fields. SOAP: the publications and text fields notes are written to.
# A connection can override the REST names ("representations") and the note targets ("notes").
# ==================================================================================================

REST_DEFAULTS: Mapping[str, SageX3Published] = {
    "PORDER": SageX3Published("PORDER", "YPORDER"),  # purchase order headers
    "PORDERQ": SageX3Published("PORDERQ", "YPORDERQ"),  # purchase order lines
    "PINVOICE": SageX3Published("PINVOICE", "YPINVOICE"),  # supplier invoices
    "PAYMENTH": SageX3Published("PAYMENTH", "YPAYMENTH"),  # payments
    "BPSUPPLIER": SageX3Published("BPSUPPLIER", "YBPSUPPLIER"),  # suppliers
    "BPADDRESS": SageX3Published("BPADDRESS", "YBPADDRESS"),  # business partner addresses
    "CONTACT": SageX3Published("CONTACT", "YCONTACT"),  # contacts
}


@dataclass(frozen=True)
class GraphQLNode:
    """Where a table's rows are in the GraphQL schema, and each X3 property's path there."""

    package: str
    node: str
    fields: Mapping[str, str]  # X3 property -> dotted GraphQL path
    lines: tuple[str, Mapping[str, str]] | None = None  # a nested line collection: (field, its properties)


GRAPHQL_NODES: Mapping[str, GraphQLNode] = {
    "PORDER": GraphQLNode("x3Purchasing", "purchaseOrder", {
        "POHNUM": "id", "BPSNUM": "orderFromSupplier.code.code", "ORDDAT": "orderDate", "CUR": "currency.code",
        "TOTORD": "totalAmountExcludingTax", "TTVORD": "totalAmountIncludingTax", "APPFLG": "signatureStatus",
        "CLEFLG": "isClosed", "REVNUM": "changeNumber", "CREDATTIM": "createDateTime",
        "UPDDATTIM": "updateDateTime",
    }, lines=("purchaseOrderLines", {"POPLIN": "lineNumber", "UPDDATTIM": "updateDateTime"})),
    "PORDERQ": GraphQLNode("x3Purchasing", "purchaseOrderLine", {
        "POHNUM": "purchaseOrder.id", "POPLIN": "lineNumber", "POQSEQ": "sequenceNumber",
        "BPSNUM": "supplier.code.code", "ITMREF": "product.code", "QTYSTU": "quantityInStockUnitOrdered",
        "RCPQTYSTU": "quantityInStockUnitReceived", "LINCLEFLG": "isClosed", "EXTRCPDAT": "expectedReceiptDate",
        "UPDDATTIM": "updateDateTime",
    }),
    "PINVOICE": GraphQLNode("x3Purchasing", "purchaseInvoice", {
        "NUM": "id", "BPR": "billBySupplier.code.code", "BPRVCR": "supplierDocumentNumber", "CUR": "currency.code",
        "AMTNOT": "amountOfLinesExcludingTax", "AMTATI": "totalAmountIncludingTax",
        "STRDUDDAT": "dueDateCalculationStartDate", "ACCDAT": "accountingDate", "STA": "status",
        "PAYCUR": "paidAmount", "CREDATTIM": "createDateTime", "UPDDATTIM": "updateDateTime",
    }),
    "PAYMENTH": GraphQLNode("x3Finance", "payment", {
        "NUM": "id", "BPR": "businessPartner.code", "BPANAM": "businessPartnerName", "CUR": "currency.code",
        "AMTBAN": "bankAmount", "ACCDAT": "accountingDate", "BAN": "bank.code", "CHQNUM": "checkNumber",
        "REF": "reference", "DES": "description", "STA": "status", "CREDATTIM": "createDateTime",
        "UPDDATTIM": "updateDateTime",
    }),
    "BPSUPPLIER": GraphQLNode("x3MasterData", "supplier", {"BPSNUM": "code.code", "BPSNAM": "code.companyName"}),
    "BPADDRESS": GraphQLNode("x3MasterData", "businessPartnerAddress", {
        "BPANUM": "businessPartner.code", "BPAADD": "code", "BPAADDFLG": "isDefault", "TEL": "telephone1",
    }),
    "CONTACT": GraphQLNode("x3MasterData", "contact", {
        "BPANUM": "businessPartner.code", "CCNCRM": "code", "CNTMOB": "mobilePhone", "CNTFLG": "isMainContact",
    }),
}

# X3 local-menu values as GraphQL spells them (the reference filters isClosed:{_ne:'yes'}).
_NO_YES: Mapping[int, str] = {1: "no", 2: "yes"}
GRAPHQL_ENUMS: Mapping[str, Mapping[int, str]] = {
    "APPFLG": {1: "no", 2: "partly", 3: "totally", 4: "notManaged"},
    "CLEFLG": _NO_YES, "LINCLEFLG": _NO_YES, "BPAADDFLG": _NO_YES, "CNTFLG": _NO_YES,
}
GRAPHQL_LINES_PER_RECORD = 200

# The one GraphQL document the adapter sends; pageInfo/after are unconfirmed (first is documented).
GRAPHQL_QUERY = (
    "query Read($filter: String, $orderBy: String, $first: Int, $after: String) "
    "{ %(package)s { %(node)s { query(filter: $filter, orderBy: $orderBy, first: $first, after: $after) "
    "{ edges { node { %(selection)s } } pageInfo { endCursor hasNextPage } } } } }"
)

# Where notes go, per record entity: a SOAP publication of the object, its key, and a text field.
NOTE_TARGETS: Mapping[str, SageX3NoteTarget] = {
    "PORDER": SageX3NoteTarget("YPOH", "POHNUM", "POH0_1", "YNOTES"),
    "PINVOICE": SageX3NoteTarget("YPIH", "NUM", "PIH0_1", "YNOTES"),
    "PAYMENTH": SageX3NoteTarget("YPAY", "NUM", "PAY0_1", "YNOTES"),
    "BPSUPPLIER": SageX3NoteTarget("YBPS", "BPSNUM", "BPS0_1", "YNOTES"),
    # Customers (BPC object, key BPCNUM): a reply from a customer goes on the customer record.
    "BPCUSTOMER": SageX3NoteTarget("YBPC", "BPCNUM", "BPC0_1", "YNOTES"),
}

# Documented paths (see the reference): REST representations, GraphQL, the SOAP generic service.
REST_PREFIX = "/api1/x3/erp/"
GRAPHQL_PATH = "/xtrem/api"
SOAP_PATH = "/soap-generic/syracuse/collaboration/syracuse/CAdxWebServiceXmlCC"
SOAP_NAMESPACE = "http://www.adonix.com/WSS"
SOAP_REQUEST_CONFIG = "adxwss.optreturn=XML"


def x3_datetime_text(moment: datetime, zone_is_utc: bool) -> str:
    """A date-time as X3 filters take it: the reference's samples end in ``Z``.

    Whether X3 stores UTC is unconfirmed. The poll hands over naive times in the
    connection's ``poll.time_zone``: with UTC they are sent with ``Z``, as the samples do;
    with another zone they are sent as they are, local and without a suffix.
    """
    text = moment.replace(microsecond=0, tzinfo=None).isoformat()
    return text + "Z" if zone_is_utc else text


# ==================================================================================================
# Queries: what to read, independent of the API that reads it.
# ==================================================================================================

Op = Literal["eq", "ge", "gt"]  # the operators the reference saw X3 accept (with "and")
Value = str | int | float | Decimal | date | datetime


@dataclass(frozen=True)
class Term:
    prop: str  # an X3 property name, without _0
    op: Op
    value: Value


@dataclass(frozen=True)
class Query:
    """Rows of one table (by its X3 name) that match every term, in ``order`` (ascending)."""

    table: str
    terms: tuple[Term, ...]
    order: tuple[str, ...]


def rest_where(terms: Sequence[Term], zone_is_utc: bool) -> str:
    """``UPDDATTIM ge @2025-07-22T10:45:19Z@ and STOFCY eq 'NYMT'``."""
    return " and ".join(f"{term.prop} {term.op} {_rest_literal(term.value, zone_is_utc)}" for term in terms)


def _rest_literal(value: Value, zone_is_utc: bool) -> str:
    if isinstance(value, datetime):
        return f"@{x3_datetime_text(value, zone_is_utc)}@"
    if isinstance(value, date):
        return f"@{value.isoformat()}@"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        raise TypeError("X3 has no boolean literals; local menus are numbers")
    return str(value)


def graphql_filter(node: GraphQLNode, terms: Sequence[Term], zone_is_utc: bool) -> str:
    """The filter argument, written as the reference's sample is: ``{isClosed:{_ne:'yes'}}``."""
    tree: dict[str, Any] = {}
    for term in terms:
        target = _branch(tree, _graphql_path(node, term.prop))
        target[f"_{'gte' if term.op == 'ge' else term.op}"] = _graphql_literal(term.prop, term.value, zone_is_utc)
    return _object_text(tree)


def graphql_order(node: GraphQLNode, props: Sequence[str]) -> str:
    tree: dict[str, Any] = {}
    for prop in props:
        *parents, leaf = _graphql_path(node, prop).split(".")
        branch = tree
        for part in parents:
            branch = branch.setdefault(part, {})
        branch[leaf] = "1"
    return _object_text(tree)


def graphql_selection(node: GraphQLNode) -> str:
    tree: dict[str, Any] = {}
    for path in node.fields.values():
        _branch(tree, path)
    text = _selection_text(tree)
    if node.lines is not None:
        name, line_fields = node.lines
        inner: dict[str, Any] = {}
        for path in line_fields.values():
            _branch(inner, path)
        text += (f" {name} {{ query(first: {GRAPHQL_LINES_PER_RECORD}) {{ edges {{ node {{ "
                 f"{_selection_text(inner)} }} }} }} }}")
    return text


def graphql_row(node: GraphQLNode, data: Mapping[str, Any]) -> dict[str, Any]:
    """A GraphQL node as a row named by X3 property, local menus back as numbers."""
    row = {prop: _from_graphql(prop, _walk(data, path)) for prop, path in node.fields.items()}
    if node.lines is not None:
        name, line_fields = node.lines
        edges = _walk(data, f"{name}.query.edges") or []
        row["lines"] = [{prop: _from_graphql(prop, _walk(edge.get("node") or {}, path))
                         for prop, path in line_fields.items()} for edge in edges if isinstance(edge, dict)]
    return row


def _graphql_path(node: GraphQLNode, prop: str) -> str:
    try:
        return node.fields[prop]
    except KeyError:
        raise ValueError(f"{node.package}.{node.node} has no GraphQL field for {prop}") from None


def _branch(tree: dict[str, Any], path: str) -> dict[str, Any]:
    branch = tree
    for part in path.split("."):
        branch = branch.setdefault(part, {})
    return branch


def _graphql_literal(prop: str, value: Value, zone_is_utc: bool) -> str:
    if isinstance(value, int) and prop in GRAPHQL_ENUMS:
        value = GRAPHQL_ENUMS[prop].get(value, str(value))
    if isinstance(value, datetime):
        value = x3_datetime_text(value, zone_is_utc)
    elif isinstance(value, date):
        value = value.isoformat()
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def _from_graphql(prop: str, value: Any) -> Any:
    names = GRAPHQL_ENUMS.get(prop)
    if names is not None and isinstance(value, str):
        return next((number for number, name in names.items() if name == value), value)
    return value


def _object_text(tree: Mapping[str, Any]) -> str:
    parts = [f"{name}:{_object_text(value) if isinstance(value, dict) else value}" for name, value in tree.items()]
    return "{" + ",".join(parts) + "}"


def _selection_text(tree: Mapping[str, Any]) -> str:
    return " ".join(f"{name} {{ {_selection_text(sub)} }}" if sub else name for name, sub in tree.items())


def _walk(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


# ==================================================================================================
# Errors
# ==================================================================================================


class SageX3Error(PermanentFailure):
    """A refusal that trying again will not cure: credentials, names, a query X3 rejects."""


class SageX3Unavailable(RetryLater):
    """X3 did not answer in time, every try: perhaps its web-service licence volume is used up."""


UNAVAILABLE_RETRY_SECONDS = 300.0
TOKEN_ERRORS: Mapping[int, str] = {
    41: "the issuer (iss, the client id) is not a connected application",
    42: "the subject (sub, the user) is not the user allowed for this connected application",
    45: "the audience (aud) is not the URL the connected application was set up with",
    50: "the signature does not match the secret, or the token has expired (check the secret and the clocks)",
}
_TOKEN_ERROR = re.compile(r"Error\s+(\d+)\s*:\s*([^\"\\<]{0,200})")
_MAX_MESSAGE = 300


def x3_message(response: requests.Response | None) -> str:
    """What X3 said: ``$diagnoses`` messages, GraphQL ``errors``, a SOAP fault, or the start of the text."""
    if response is None:
        return ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        found = [str(item.get("$message") or item.get("message") or "")
                 for item in (body.get("$diagnoses") or body.get("errors") or []) if isinstance(item, dict)]
        text = "; ".join(message for message in found if message) or str(body.get("$message") or "")
        if text:
            return text[:_MAX_MESSAGE]
    fault = re.search(r"<faultstring>(.*?)</faultstring>", response.text or "", re.DOTALL)
    return (fault.group(1) if fault else (response.text or "")).strip()[:_MAX_MESSAGE]


# ==================================================================================================
# The JWT of a connected application
# ==================================================================================================


def hs256_jwt(claims: Mapping[str, Any], secret: str) -> str:
    """A compact JWS signed with HMAC-SHA256 (RFC 7515/7519), by PyJWT."""
    import jwt

    return jwt.encode(dict(claims), secret, algorithm="HS256")


class TokenMinter:
    """Mints the connected application's bearer token and renews it before it expires. Thread-safe.

    Claims: iss (client id), sub (user), aud (URL), iat, exp, and a unique jti.
    """

    def __init__(self, *, client_id: str, user: str, audience: str, secret: Callable[[], str],
                 lifetime: int, clock: Callable[[], float] = time.time) -> None:
        self._claims = {"iss": client_id, "sub": user, "aud": audience}
        self._secret, self._lifetime, self._clock = secret, lifetime, clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._mint()
            return self._token  # type: ignore[return-value]

    def renew(self, refused: str | None = None) -> str:
        """A new token, unless another thread already replaced the refused one."""
        with self._lock:
            if self._token is None or self._token == refused:
                self._mint()
            return self._token  # type: ignore[return-value]

    def _mint(self) -> None:
        now = int(self._clock())
        # jti (RFC 7519) makes a renewed token differ from the refused one even within the same second.
        claims = {**self._claims, "iat": now, "exp": now + self._lifetime, "jti": uuid.uuid4().hex}
        self._token = hs256_jwt(claims, self._secret())
        # Renewed with a fifth of its life left (at most a minute): a token never expires in flight.
        self._renew_at = now + self._lifetime - min(60, self._lifetime / 5)


# ==================================================================================================
# The client
# ==================================================================================================


@dataclass(frozen=True)
class SoapResult:
    status: int  # 1: done; 0: refused (see messages)
    messages: tuple[str, ...]
    result: ElementTree.Element | None  # the resultXml document, parsed

    def fields(self) -> dict[str, str]:
        """``FLD NAME -> text`` of the result (the first of each name)."""
        found: dict[str, str] = {}
        if self.result is not None:
            for element in self.result.iter("FLD"):
                found.setdefault(element.get("NAME", ""), element.text or "")
        return found


@dataclass
class _Names:
    rest: Mapping[str, SageX3Published] = field(default_factory=dict)
    notes: Mapping[str, SageX3NoteTarget] = field(default_factory=dict)


class SageX3Api:
    """One X3 connection over HTTP: one page of a query at a time, and SOAP calls. Thread-safe."""

    def __init__(self, connection: SageX3Connection, secrets: SecretProvider, *, http: HttpClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.connection = connection
        self._secrets = secrets
        self._base = connection.base_url.rstrip("/")
        self._origin = _origin(self._base)
        self._zone_is_utc = connection.poll.time_zone == "UTC"
        self._verify: bool | str = connection.ca_bundle or True
        self._owns_http = http is None
        self._http = http or HttpClient(_policy(connection.timeout_seconds), verify=self._verify)
        self.names = _Names({**REST_DEFAULTS, **connection.representations}, {**NOTE_TARGETS, **connection.notes})
        self.graphql_url = self._base + GRAPHQL_PATH
        self._minter: TokenMinter | None = None
        if connection.api == "graphql":
            self._minter = TokenMinter(client_id=connection.client_id or "", user=connection.username,
                                       audience=connection.token_audience or self.graphql_url,
                                       secret=self._client_secret, lifetime=connection.token_lifetime_seconds,
                                       clock=clock)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    # --- reads ---------------------------------------------------------------------------------

    def page(self, query: Query, size: int, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``query``: its rows (named by X3 property) and the token of the next page, if any."""
        if self.connection.api == "graphql":
            return self._graphql_page(query, size, token)
        return self._rest_page(query, size, token)

    def _rest_page(self, query: Query, size: int, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        published = self._published(query.table)
        url = self._checked_next(token) if token else self._rest_url(published, query, size)
        response = self._send("GET", url, f"{published.cls} ({published.representation})",
                              headers={"Accept": "application/json", "Authorization": self._basic()})
        body = _json_object(response, "the REST answer")
        resources = body.get("$resources")
        if not isinstance(resources, list):
            raise SageX3Error(f"Sage X3 answered {published.cls} without a $resources list")
        rows = [{name: value for name, value in item.items() if not name.startswith("$")}
                for item in resources if isinstance(item, dict)]
        next_link = _walk(body, "$links.$next.$url")
        return rows, (next_link if isinstance(next_link, str) and next_link else None)

    def _rest_url(self, published: SageX3Published, query: Query, size: int) -> str:
        options = {"representation": f"{published.representation}.$query", "count": str(size),
                   "where": rest_where(query.terms, self._zone_is_utc) or None,
                   "orderBy": ",".join(query.order) or None}
        text = urlencode({name: value for name, value in options.items() if value is not None},
                         quote_via=quote, safe="$@',:")
        return f"{self._base}{REST_PREFIX}{quote(self.connection.folder)}/{quote(published.cls)}?{text}"

    def _checked_next(self, link: str) -> str:
        url = urljoin(self._base + "/", link)
        # The link will carry the password: it must stay on this server and under this folder's API.
        if _origin(url) != self._origin or not urlsplit(url).path.startswith(
                f"{REST_PREFIX}{quote(self.connection.folder)}/"):
            raise SageX3Error(f"Sage X3 gave a next-page link outside {self._base}{REST_PREFIX}: not followed")
        return url

    def _graphql_page(self, query: Query, size: int, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        node = GRAPHQL_NODES[query.table]
        variables = {"filter": graphql_filter(node, query.terms, self._zone_is_utc) if query.terms else None,
                     "orderBy": graphql_order(node, query.order) if query.order else None,
                     "first": size, "after": token}
        text = GRAPHQL_QUERY % {"package": node.package, "node": node.node, "selection": graphql_selection(node)}
        data = self.graphql(text, variables, f"{node.package}.{node.node}")
        found = _walk(data, f"{node.package}.{node.node}.query")
        if not isinstance(found, dict) or not isinstance(found.get("edges"), list):
            raise SageX3Error(f"Sage X3 answered {node.package}.{node.node} without query.edges")
        rows = [graphql_row(node, edge.get("node") or {}) for edge in found["edges"] if isinstance(edge, dict)]
        info = found.get("pageInfo") or {}
        cursor = info.get("endCursor")
        more = bool(info.get("hasNextPage")) and isinstance(cursor, str) and bool(cursor)
        return rows, (cursor if more else None)

    def graphql(self, text: str, variables: Mapping[str, Any], what: str) -> dict[str, Any]:
        """``data`` of one GraphQL request; a refused token is renewed once."""
        assert self._minter is not None, "a GraphQL call on a REST connection"
        token = self._minter.token()
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {token}", "x-xtrem-endpoint": self.connection.folder,
                       "Accept": "application/json"}
            try:
                # A query changes nothing, so resending it after a timeout is harmless.
                response = self._send("POST", self.graphql_url, what, headers=headers, idempotent=True,
                                      json={"query": text, "variables": dict(variables)}, token_refusal=True)
            except _TokenRefused as refused:
                if attempt == 2:
                    raise SageX3Error(f"Sage X3 refused the connected application's token twice: "
                                      f"{refused.explanation}") from None
                log.info("Sage X3 %s refused the token (%s); renewing it once", self._base, refused.code)
                if refused.code == 50:
                    self._forget_cached_secret(self.connection.client_secret)  # perhaps rotated
                token = self._minter.renew(token)
                continue
            body = _json_object(response, "the GraphQL answer")
            if body.get("errors"):
                raise SageX3Error(f"Sage X3 refused the GraphQL query for {what}: {x3_message(response)}")
            data = body.get("data")
            if not isinstance(data, dict):
                raise SageX3Error(f"Sage X3 answered the GraphQL query for {what} without data")
            return data
        raise AssertionError("unreachable")

    # --- SOAP ----------------------------------------------------------------------------------

    def soap(self, operation: Literal["read", "modify"], public_name: str, keys: Sequence[tuple[str, str]],
             object_xml: str | None = None) -> SoapResult:
        """Call the SOAP generic web service; ``read`` and ``modify`` repeat harmlessly, so both are retried."""
        connection = self.connection
        if connection.password is None or not connection.soap_pool_alias:
            raise SageX3Error(f"{connection.name}: writing to Sage X3 needs password and soap_pool_alias")
        envelope = soap_envelope(operation, language=connection.soap_language, pool=connection.soap_pool_alias,
                                 public_name=public_name, keys=keys, object_xml=object_xml)
        response = self._send("POST", self._base + SOAP_PATH, f"SOAP {operation} {public_name}", idempotent=True,
                              data=envelope.encode("utf-8"),
                              headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""',
                                       "Authorization": self._basic()})
        return parse_soap_result(response.content, operation)

    # --- requests ------------------------------------------------------------------------------

    def _send(self, method: str, url: str, what: str, *, token_refusal: bool = False,
              **kwargs: Any) -> requests.Response:
        kwargs.setdefault("verify", self._verify)
        try:
            return self._http.request(method, url, **kwargs)
        except HttpFailure as failure:
            cause = failure.__cause__
            if failure.status is None and cause is not None and is_transient_error(cause):
                raise SageX3Unavailable(UNAVAILABLE_RETRY_SECONDS, _unanswered(self._base, what, failure,
                                                                               self.connection.timeout_seconds),
                                        None) from failure
            if failure.status == 401:
                if token_refusal:
                    raise _TokenRefused(x3_message(failure.response)) from failure
                self._forget_cached_secret(self.connection.password)
                raise SageX3Error(f"Sage X3 refused user {self.connection.username!r} (HTTP 401) for {what}: "
                                  f"check the user and its password secret") from failure
            if failure.status in (400, 404):
                # A name X3 does not know, or a query it cannot read: asking again will not change that.
                raise SageX3Error(f"Sage X3 refused {what} (HTTP {failure.status}): "
                                  f"{x3_message(failure.response) or failure.reason}; check the names") from failure
            raise _explained(failure, what) from failure

    def _published(self, table: str) -> SageX3Published:
        return self.names.rest[table]

    def _basic(self) -> str:
        if self.connection.password is None:
            raise SageX3Error(f"{self.connection.name}: this call needs the user's password")
        secret = self._secrets.get(self.connection.password.name).reveal()
        raw = f"{self.connection.username}:{secret}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _client_secret(self) -> str:
        assert self.connection.client_secret is not None
        return self._secrets.get(self.connection.client_secret.name).reveal()

    def _forget_cached_secret(self, ref: Any) -> None:
        invalidate = getattr(self._secrets, "invalidate", None)  # CachedSecretProvider has it
        if ref is not None and callable(invalidate):
            invalidate(ref.name)


def _policy(timeout_seconds: int) -> RetryPolicy:
    # Few tries: a server out of licence volume answers none of them, and each one waits the full timeout.
    return RetryPolicy(max_attempts=3, connect_timeout=min(10.0, timeout_seconds), read_timeout=float(timeout_seconds))


class _TokenRefused(Exception):
    def __init__(self, message: str) -> None:
        found = _TOKEN_ERROR.search(message)
        self.code = int(found.group(1)) if found else None
        meaning = TOKEN_ERRORS.get(self.code or 0, "")
        said = found.group(0).strip() if found else (message or "HTTP 401")
        self.explanation = f"{said} ({meaning})" if meaning else said
        super().__init__(self.explanation)


def _explained(failure: HttpFailure, what: str) -> HttpFailure:
    said = x3_message(failure.response)
    hint = ""
    if failure.status == 500:
        hint = " (X3 answers 500 when where names a property the representation lacks: check the names)"
    reason = f"Sage X3 {what}: {failure.reason}{': ' + said if said else ''}{hint}"
    return HttpFailure(failure.status, reason, failure.response)


def _unanswered(base: str, what: str, failure: HttpFailure, timeout: int) -> str:
    return (f"Sage X3 at {_origin_text(base)} did not answer {what} ({failure.reason}; {timeout} s per try). "
            "When the web-service licence volume (WSSIZELIMIT) is used up, X3 slows down and then stops "
            "answering: check the license_web_* events in Syracuse")


def _json_object(response: requests.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise SageX3Error(f"{what} is not JSON (HTTP {response.status_code})") from None
    if not isinstance(body, dict):
        raise SageX3Error(f"{what} is not a JSON object")
    return body


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port)


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}" + (f":{port}" if port else "")


# --- SOAP bodies -------------------------------------------------------------------------------------


def soap_envelope(operation: str, *, language: str, pool: str, public_name: str,
                  keys: Sequence[tuple[str, str]], object_xml: str | None) -> str:
    items = "".join(f"<item><key>{escape(name)}</key><value>{escape(value)}</value></item>" for name, value in keys)
    body = (f"<callContext><codeLang>{escape(language)}</codeLang><poolAlias>{escape(pool)}</poolAlias>"
            f"<poolId></poolId><requestConfig>{escape(SOAP_REQUEST_CONFIG)}</requestConfig></callContext>"
            f"<publicName>{escape(public_name)}</publicName><objectKeys>{items}</objectKeys>")
    if object_xml is not None:
        body += f"<objectXml>{escape(object_xml)}</objectXml>"
    return ('<?xml version="1.0" encoding="utf-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            f'xmlns:wss="{SOAP_NAMESPACE}"><soapenv:Header/><soapenv:Body>'
            f"<wss:{operation}>{body}</wss:{operation}></soapenv:Body></soapenv:Envelope>")


def object_xml(group: str, values: Mapping[str, str]) -> str:
    """``<PARAM><GRP ID="..."><FLD NAME="...">text</FLD></GRP></PARAM>``, the objectXml of a modify."""
    fields = "".join(f'<FLD NAME="{escape(name)}">{escape(text)}</FLD>' for name, text in values.items())
    return f'<PARAM><GRP ID="{escape(group)}">{fields}</GRP></PARAM>'


def parse_soap_result(content: bytes, operation: str) -> SoapResult:
    try:
        document = parse_xml(content)
    except XmlRefused as error:
        raise SageX3Error(f"the SOAP {operation} answer is not XML we read ({error})") from None
    status_text = _local(document, "status")
    messages = tuple((element.text or "").strip() for element in document.iter() if _name(element) == "message")
    result_text = _local(document, "resultXml")
    result = None
    if result_text and result_text.strip():
        try:
            result = parse_xml(result_text.strip())
        except XmlRefused as error:
            raise SageX3Error(f"the SOAP {operation} resultXml is not XML we read ({error})") from None
    try:
        status = int((status_text or "0").strip())
    except ValueError:
        status = 0
    return SoapResult(status, tuple(message for message in messages if message), result)


def _name(element: ElementTree.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def _local(document: ElementTree.Element, name: str) -> str | None:
    return next((element.text for element in document.iter() if _name(element) == name), None)


# --- one client per connection ---------------------------------------------------------------------


def _new_api(connection: SageX3Connection) -> SageX3Api:
    from shared.storage.secrets import get_secret_provider

    return SageX3Api(connection, get_secret_provider())


_clients: PerConnection[SageX3Api] = PerConnection(_new_api)


def sagex3_api(connection: SageX3Connection) -> SageX3Api:
    """The process-wide client of this connection (by name): its pool and token are shared."""
    return _clients.get(connection)


def reset_sagex3_clients() -> None:
    _clients.reset()
