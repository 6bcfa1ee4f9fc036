"""Fake Dynamics 365 Finance & Operations OData service (``/data``), over HTTPS.

``base_url`` plays the environment URL (``https://127.0.0.1:PORT``); tokens must come
from the given ``FakeEntra`` with audience exactly that URL (scope ``{base_url}/.default``).
Pass the Entra fake's CA (the default) so one CA file serves both fakes.

Behaviour modelled on F&O (see the F&O reference, sections 2-4):

- ``GET /data/{EntitySet}`` with ``$filter`` (``eq ne gt ge lt le``, ``and or not``,
  parentheses; string literals in single quotes with ``''`` escaping, numbers, ``true``/
  ``false``/``null``, unquoted ISO 8601 date-times, enum literals ``Ns.Enum'Value'``, and
  ``*`` wildcards in ``eq``/``ne`` string literals), ``$select``, ``$orderby``, ``$top``,
  ``$skip``, ``$count=true``, ``cross-company=true``. String comparisons ignore case, as
  F&O's SQL collation does.
- Company-specific sets (``dataAreaId`` among the keys) return only the default company's
  rows unless ``cross-company=true``; the same holds for reads by key.
- Server-driven paging: at most ``page_size`` rows per answer, then ``@odata.nextLink``
  (absolute, the other options kept verbatim, ``$skip`` advanced, ``$top`` reduced to what
  is left when the client gave one); following it verbatim yields every row once. Without
  ``$orderby`` rows come in key order, so pages are stable.
- ``GET /data/{EntitySet}(key1='v1',key2=2)``: all keys required (400 otherwise), 404
  when no row matches.
- Failure injection: ``fail_next(status=429)`` answers with ``Retry-After: 2`` and F&O's
  resource-utilization message; 503 works the same way.

- Workflow work items: ``POST /data/WorkflowWorkItems/Microsoft.Dynamics.DataEntities.Validate``
  and ``...Complete`` with ``WorkflowWorkitemInstanceID`` (Complete also ``outcome``, ``comment``);
  any other parameter name, in any other case, is refused with 400 as OData does.
  ``rename_work_item_action`` plays an environment whose ``$metadata`` names an action otherwise.

- Creates: ``POST /data/{EntitySet}`` on a set a test opened with ``accept_creates`` (document
  attachments of type Note, say: F&O's DocuRef fields ``TypeId``, ``Name``, ``Notes``, ``Restriction``);
  a property the set does not have is refused with 400, a missing key with 400, and the created
  row comes back with 201, its generated key filled in. ``created`` lists every row created.

Not modelled: ``$expand``, ``$batch``, updates and deletes, other actions, ``$metadata`` (501 or 404).
"""

from __future__ import annotations

import base64
import fnmatch
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import trustme

from tests.fakes.entra import FakeEntra
from tests.fakes.server import Handler, RecordedRequest, Response, Route, TlsFakeServer, route

F_AND_O_PAGE_SIZE = 10000
THROTTLED_MESSAGE = (
    "This request could not be processed at this time due to system experiencing high resource utilization."
)
ODATA_HEADERS = {"Content-Type": "application/json; odata.metadata=minimal", "OData-Version": "4.0"}
_FIRST_REC_ID = 5637144576
_SUPPORTED_OPTIONS = frozenset({"$filter", "$select", "$orderby", "$top", "$skip", "$count", "$format"})
_PAGING = ("$skip", "$top")
# The work item's parameter of Validate and Complete, as Microsoft documents it (case-sensitive).
WORK_ITEM_PARAMETER = "WorkflowWorkitemInstanceID"
_UNSUPPORTED_OPTIONS = frozenset({"$expand", "$search", "$apply", "$compute", "$levels", "$skiptoken"})


class ODataError(Exception):
    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


# --- values ------------------------------------------------------------------------------


def to_odata_value(value: Any) -> Any:
    """How F&O serializes a stored value: date-times as ``...Z`` strings, dates at noon UTC."""
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.strftime("%Y-%m-%dT12:00:00Z")
    if isinstance(value, Decimal):
        return float(value)
    return value


def parse_datetime(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _edm_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "Edm.Boolean"
    if isinstance(value, int):
        return "Edm.Int64"
    if isinstance(value, float):
        return "Edm.Decimal"
    if isinstance(value, datetime):
        return "Edm.DateTimeOffset"
    return "Edm.String"


# --- $filter -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # "(" ")" "," "string" "number" "datetime" "word"
    text: str
    value: Any = None


_TOKEN_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("space", re.compile(r"\s+")),
    ("punct", re.compile(r"[(),]")),
    ("string", re.compile(r"'((?:[^']|'')*)'")),
    ("enum", re.compile(r"[A-Za-z_][\w.]*'((?:[^']|'')*)'")),
    (
        "datetime",
        re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})"),
    ),
    ("date", re.compile(r"\d{4}-\d{2}-\d{2}(?![\dT])")),
    ("number", re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?(?![\w.])")),
    ("word", re.compile(r"[A-Za-z_][\w]*")),
]
_COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_ARITHMETIC = frozenset({"add", "sub", "mul", "div", "divby", "mod"})


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        for kind, pattern in _TOKEN_PATTERNS:
            found = pattern.match(text, position)
            if found is None:
                continue
            position = found.end()
            token = _make_token(kind, found)
            if token is not None:
                tokens.append(token)
            break
        else:
            raise ODataError(400, f"Syntax error at position {position} in '{text}'.")
    return tokens


def _make_token(kind: str, found: re.Match[str]) -> Token | None:
    text = found.group(0)
    if kind == "space":
        return None
    if kind == "punct":
        return Token(text, text)
    if kind in ("string", "enum"):
        return Token("string", text, found.group(1).replace("''", "'"))
    if kind == "datetime":
        return Token("datetime", text, parse_datetime(text))
    if kind == "date":
        return Token("datetime", text, datetime.fromisoformat(text).replace(tzinfo=UTC))
    if kind == "number":
        digits = text.rstrip("mMdDfFlL")
        is_integral = re.fullmatch(r"-?\d+", digits) is not None
        return Token("number", text, int(digits) if is_integral else float(digits))
    return Token("word", text)


Predicate = Callable[[Mapping[str, Any]], bool]
Operand = Callable[[Mapping[str, Any]], Any]


class FilterParser:
    """Recursive descent: or < and < not < comparison < (group | operand)."""

    def __init__(self, text: str, fields: frozenset[str], type_name: str) -> None:
        self._text = text
        self._tokens = tokenize(text)
        self._position = 0
        self._fields = fields
        self._type_name = type_name

    def parse(self) -> Predicate:
        predicate = self._or()
        if self._peek() is not None:
            raise ODataError(400, f"Syntax error at '{self._peek().text}' in '{self._text}'.")  # type: ignore[union-attr]
        return predicate

    def _peek(self) -> Token | None:
        return self._tokens[self._position] if self._position < len(self._tokens) else None

    def _next(self) -> Token:
        token = self._peek()
        if token is None:
            raise ODataError(400, f"Unexpected end of the filter '{self._text}'.")
        self._position += 1
        return token

    def _accept_word(self, *words: str) -> str | None:
        token = self._peek()
        if token is not None and token.kind == "word" and token.text in words:
            self._position += 1
            return token.text
        return None

    def _or(self) -> Predicate:
        left = self._and()
        while self._accept_word("or"):
            right = self._and()
            left = _either(left, right)
        return left

    def _and(self) -> Predicate:
        left = self._not()
        while self._accept_word("and"):
            right = self._not()
            left = _both(left, right)
        return left

    def _not(self) -> Predicate:
        if self._accept_word("not"):
            inner = self._not()
            return lambda row: not inner(row)
        return self._comparison()

    def _comparison(self) -> Predicate:
        token = self._peek()
        if token is not None and token.kind == "(":
            self._next()
            inner = self._or()
            if self._next().kind != ")":
                raise ODataError(400, f"')' expected in '{self._text}'.")
            return inner
        left = self._operand()
        operator = self._next()
        if operator.kind == "word" and operator.text in ("has", "in"):
            raise ODataError(400, f"The '{operator.text}' operator is not supported.")
        if operator.kind == "word" and operator.text in _ARITHMETIC:
            raise ODataError(501, f"The fake does not implement arithmetic operator '{operator.text}'.")
        if operator.kind != "word" or operator.text not in _COMPARISONS:
            raise ODataError(400, f"Syntax error at '{operator.text}' in '{self._text}'.")
        right = self._operand()
        return _comparison(operator.text, left, right)

    def _operand(self) -> Operand:
        token = self._next()
        if token.kind in ("string", "number", "datetime"):
            literal = token.value
            return lambda _row: literal
        if token.kind == "word" and token.text in ("true", "false"):
            truth = token.text == "true"
            return lambda _row: truth
        if token.kind == "word" and token.text == "null":
            return lambda _row: None
        if token.kind == "word":
            follower = self._peek()
            if follower is not None and follower.kind == "(":
                raise ODataError(501, f"The fake does not implement the function '{token.text}'.")
            if token.text not in self._fields:
                raise ODataError(400, f"Could not find a property named '{token.text}' on type '{self._type_name}'.")
            name = token.text
            return lambda row: row.get(name)
        raise ODataError(400, f"Syntax error at '{token.text}' in '{self._text}'.")


def _either(left: Predicate, right: Predicate) -> Predicate:
    return lambda row: left(row) or right(row)


def _both(left: Predicate, right: Predicate) -> Predicate:
    return lambda row: left(row) and right(row)


_OPERATOR_KINDS = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}


def _comparison(operator: str, left: Operand, right: Operand) -> Predicate:
    def compare(row: Mapping[str, Any]) -> bool:
        return compare_values(operator, left(row), right(row))

    return compare


def compare_values(operator: str, left: Any, right: Any) -> bool:
    """OData comparison with F&O's case-insensitive strings and ``*`` wildcards in eq/ne."""
    if left is None or right is None:
        if operator == "eq":
            return left is None and right is None
        if operator == "ne":
            return not (left is None and right is None)
        return False
    left, right = _coerce_pair(operator, left, right)
    if operator in ("eq", "ne") and isinstance(left, str) and ("*" in right or "*" in left):
        pattern, text = (right, left) if "*" in right else (left, right)
        matched = fnmatch.fnmatchcase(text.casefold(), pattern.casefold().replace("[", "[[]").replace("?", "[?]"))
        return matched if operator == "eq" else not matched
    if isinstance(left, str):
        left, right = left.casefold(), right.casefold()
    return {
        "eq": left == right,
        "ne": left != right,
        "gt": left > right,
        "ge": left >= right,
        "lt": left < right,
        "le": left <= right,
    }[operator]


def _coerce_pair(operator: str, left: Any, right: Any) -> tuple[Any, Any]:
    """Line both sides up as one type, or fail as OData does for incompatible operand types."""
    if isinstance(left, datetime) or isinstance(right, datetime):
        left_moment = left if isinstance(left, datetime) else parse_datetime(str(left))
        right_moment = right if isinstance(right, datetime) else parse_datetime(str(right))
        if left_moment is not None and right_moment is not None:
            return left_moment, right_moment
    elif isinstance(left, bool) == isinstance(right, bool) and (
        (isinstance(left, int | float) and isinstance(right, int | float))
        or (isinstance(left, str) and isinstance(right, str))
        or (isinstance(left, bool) and isinstance(right, bool))
    ):
        return left, right
    raise ODataError(
        400,
        "A binary operator with incompatible types was detected. Found operand types "
        f"'{_edm_type(left)}' and '{_edm_type(right)}' for operator kind '{_OPERATOR_KINDS[operator]}'.",
    )


# --- keys --------------------------------------------------------------------------------

_KEY_PART = re.compile(r"\s*(?:(?P<name>[A-Za-z_]\w*)\s*=\s*)?(?P<literal>'(?:[^']|'')*'|[^,]+?)\s*(?:,|$)")


def parse_key_segment(segment: str) -> list[tuple[str | None, Any]]:
    """``dataAreaId='usmf',InvoiceNumber='O''Neil'`` -> [(name, value), ...]; a lone literal has no name."""
    parts: list[tuple[str | None, Any]] = []
    position = 0
    while position < len(segment):
        found = _KEY_PART.match(segment, position)
        if found is None or found.end() == position:
            raise ODataError(400, f"Bad Request - Error in query syntax: key '({segment})'.")
        parts.append((found["name"], _key_literal(found["literal"])))
        position = found.end()
    return parts


def _key_literal(text: str) -> Any:
    tokens = tokenize(text)
    if len(tokens) != 1 or tokens[0].kind not in ("string", "number", "datetime", "word"):
        raise ODataError(400, f"Bad Request - Error in query syntax: key value {text}.")
    token = tokens[0]
    if token.kind == "word":
        if token.text in ("true", "false"):
            return token.text == "true"
        raise ODataError(400, f"Bad Request - Error in query syntax: key value {text}.")
    return token.value


# --- entity sets -------------------------------------------------------------------------


@dataclass
class StoredRow:
    rec_id: int
    values: dict[str, Any]
    etag: str


@dataclass
class EntitySet:
    name: str
    keys: tuple[str, ...]
    entity_type: str
    rows: list[StoredRow]
    properties: frozenset[str] = frozenset()  # declared for sets that take creates; else read off the rows
    generated_key: str = ""  # a key F&O fills in on create (a document id)

    @property
    def company_specific(self) -> bool:
        return "dataAreaId" in self.keys

    @property
    def qualified_type(self) -> str:
        return f"Microsoft.Dynamics.DataEntities.{self.entity_type}"

    def fields(self) -> frozenset[str]:
        names: set[str] = set(self.keys) | set(self.properties)
        for row in self.rows:
            names.update(row.values)
        return frozenset(names)


def _etag(rec_id: int) -> str:
    # F&O etags are weak and wrap base64 of a version string like "'1,5637144576'".
    opaque = base64.b64encode(f"'1,{rec_id}'".encode()).decode("ascii")
    return f'W/"{opaque}"'


def _entity_type_name(entity_set: str) -> str:
    return entity_set[:-1] if entity_set.endswith("s") else entity_set


@dataclass(frozen=True)
class CollectionQuery:
    """The parsed query options of one collection request."""

    predicate: Predicate | None
    select: tuple[str, ...] | None
    order: tuple[tuple[str, bool], ...]  # (field, descending)
    top: int | None
    skip: int
    count: bool
    cross_company: bool


class FakeDynamics(TlsFakeServer):
    """Fake F&O OData: company-aware reads of the entity sets a test adds, with paging."""

    service_name = "dynamics"

    def __init__(
        self,
        entra: FakeEntra,
        *,
        ca: trustme.CA | None = None,
        port: int = 0,
        default_company: str = "usmf",
        page_size: int = F_AND_O_PAGE_SIZE,
    ) -> None:
        super().__init__(ca=ca if ca is not None else entra.ca, port=port)
        self.entra = entra
        self.default_company = default_company  # the calling user's company in F&O
        self.page_size = page_size
        self._sets: dict[str, EntitySet] = {}
        self._data_lock = threading.Lock()
        self._next_rec_id = _FIRST_REC_ID
        self._allowed_clients: frozenset[str] | None = None
        self._work_items: dict[str, str] = {}  # instance id -> "open" / "completed" / "recalled"
        self.completions: list[dict[str, Any]] = []  # every Complete the fake carried out
        self.created: list[tuple[str, dict[str, Any]]] = []  # every row a POST created: (entity set, row)
        # The bound actions this environment serves, by name -> what each does (Microsoft's names by default).
        self.work_item_actions: dict[str, str] = {"Validate": "Validate", "Complete": "Complete"}

    @property
    def environment_url(self) -> str:
        return self.base_url

    @property
    def audience(self) -> str:
        """The token audience F&O expects: the environment URL, no trailing slash."""
        return self.base_url

    @property
    def scope(self) -> str:
        return f"{self.base_url}/.default"

    # --- set-up ----------------------------------------------------------------------------

    def add_entities(
        self, entity_set: str, rows: Iterable[Mapping[str, Any]], keys: Sequence[str], *, entity_type: str | None = None
    ) -> None:
        """Add rows to ``entity_set`` (created on first use with these ``keys``)."""
        with self._data_lock:
            stored = self._sets.get(entity_set)
            if stored is None:
                stored = EntitySet(entity_set, tuple(keys), entity_type or _entity_type_name(entity_set), [])
                self._sets[entity_set] = stored
            elif stored.keys != tuple(keys):
                raise ValueError(f"{entity_set} already has keys {stored.keys}")
            for row in rows:
                missing = [key for key in stored.keys if key not in row]
                if missing:
                    raise ValueError(f"{entity_set} row lacks key fields {missing}: {row!r}")
                values = {name: to_odata_value(value) for name, value in row.items()}
                stored.rows.append(StoredRow(self._next_rec_id, values, _etag(self._next_rec_id)))
                self._next_rec_id += 1

    def entities(self, entity_set: str) -> list[dict[str, Any]]:
        """Copies of the stored rows, all companies."""
        with self._data_lock:
            stored = self._sets.get(entity_set)
            return [dict(row.values) for row in stored.rows] if stored else []

    def clear_entities(self, entity_set: str | None = None) -> None:
        with self._data_lock:
            if entity_set is None:
                self._sets.clear()
            else:
                self._sets.pop(entity_set, None)

    def accept_creates(self, entity_set: str, keys: Sequence[str], properties: Iterable[str], *,
                       generated_key: str = "") -> None:
        """Let ``entity_set`` take new rows by POST, with these properties (keys among them or not);
        ``generated_key`` is filled in by the service when the body leaves it out."""
        with self._data_lock:
            self._sets[entity_set] = EntitySet(entity_set, tuple(keys), _entity_type_name(entity_set), [],
                                               frozenset({*keys, *properties}), generated_key)

    def add_work_item(self, instance_id: str, state: str = "open") -> None:
        """A workflow work item waiting for its assignee ("open"), or already "completed"/"recalled"."""
        with self._data_lock:
            self._work_items[instance_id] = state

    def work_item_state(self, instance_id: str) -> str | None:
        with self._data_lock:
            return self._work_items.get(instance_id)

    def allow_clients(self, *client_ids: str) -> None:
        """Only these Entra apps are registered in F&O (others get 401); none given = any app."""
        self._allowed_clients = frozenset(client_ids) or None

    # --- HTTP ------------------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        return [
            route("GET", r"/data/?", self._guarded(self._service_document)),
            route("GET", r"/data/(?:\$|%24)metadata", self._guarded(self._metadata)),
            route("GET", r"/data/(?P<set>[A-Za-z_]\w*)", self._guarded(self._collection)),
            route("GET", r"/data/(?P<set>[A-Za-z_]\w*)\((?P<keys>.*)\)", self._guarded(self._single)),
            route("POST", r"/data/WorkflowWorkItems/Microsoft\.Dynamics\.DataEntities\.(?P<action>\w+)",
                  self._guarded(self._work_item_action)),
            route("POST", r"/data/(?P<set>[A-Za-z_]\w*)", self._guarded(self._create)),
        ]

    def _create(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        """POST a new row: only to a set that takes creates, only its properties; 201 with the row."""
        entity_set = self._entity_set(match["set"])
        if not entity_set.properties:
            raise ODataError(405, f"The entity set '{entity_set.name}' does not accept new rows here.")
        body = request.json if isinstance(request.json, dict) else None
        if body is None:
            raise ODataError(400, "The request body must be a JSON object.")
        unknown = sorted(set(body) - entity_set.properties)
        if unknown:
            raise ODataError(400, f"The property '{unknown[0]}' does not exist on type '{entity_set.qualified_type}'.")
        row = {name: to_odata_value(value) for name, value in body.items()}
        if entity_set.generated_key and not row.get(entity_set.generated_key):
            row[entity_set.generated_key] = str(uuid.uuid4())
        missing = [key for key in entity_set.keys if row.get(key) in (None, "")]
        if missing:
            raise ODataError(400, f"The key property '{missing[0]}' is required.")
        with self._data_lock:
            stored = StoredRow(self._next_rec_id, row, _etag(self._next_rec_id))
            self._next_rec_id += 1
            entity_set.rows.append(stored)
            self.created.append((entity_set.name, dict(row)))
        created = {"@odata.context": self._context_url(entity_set, None, single=True), **self._shape(stored, None)}
        return self._odata_json(201, created, {"ETag": stored.etag})

    def _work_item_action(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        """Validate and Complete, bound to WorkflowWorkItems, with the parameter names of Microsoft's
        documentation (the Dynamics reference, 2.4); OData names are case-sensitive, as F&O reads them."""
        body = request.json if isinstance(request.json, dict) else None
        if body is None:
            raise ODataError(400, "The request body must be a JSON object of action parameters.")
        served = match.group("action")
        action = self.work_item_actions.get(served)
        if action is None:
            raise ODataError(404, f"Resource not found for the segment 'Microsoft.Dynamics.DataEntities.{served}'.")
        allowed = {WORK_ITEM_PARAMETER} | ({"outcome", "comment"} if action == "Complete" else set())
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ODataError(400, f"The parameter '{unknown[0]}' in the request payload is not a valid parameter "
                                  f"for the operation '{served}'.")
        if WORK_ITEM_PARAMETER not in body:
            raise ODataError(400, f"The parameter '{WORK_ITEM_PARAMETER}' is required.")
        instance_id = str(body[WORK_ITEM_PARAMETER])
        with self._data_lock:
            state = self._work_items.get(instance_id)
            if state is None:
                raise ODataError(400, f"Work item {instance_id} was not found.")
            if action == "Validate":
                return Response.json(200, {"@odata.context": f"{self.base_url}/data/$metadata#Edm.Boolean",
                                           "value": state == "open"})
            if state != "open":
                raise ODataError(400, f"Work item {instance_id} is {state} and cannot be completed.")
            if not body.get("outcome"):
                raise ODataError(400, "The parameter 'outcome' is required.")
            self._work_items[instance_id] = "completed"
            self.completions.append(dict(body))
            return Response(204)

    def rename_work_item_action(self, documented: str, served: str) -> None:
        """An environment whose $metadata names the action ``documented`` (Validate, Complete) ``served``."""
        with self._data_lock:
            self.work_item_actions = {name: meaning for name, meaning in self.work_item_actions.items()
                                      if meaning != documented} | {served: documented}

    def _guarded(self, handler: Handler) -> Handler:
        def answer(request: RecordedRequest, match: re.Match[str]) -> Response:
            refusal = self._refuse_unauthorized(request)
            if refusal is not None:
                return refusal
            try:
                return handler(request, match)
            except ODataError as error:
                return self._odata_error(error.status, error.message, error.code)

        return answer

    def not_found(self, request: RecordedRequest) -> Response:
        refusal = self._refuse_unauthorized(request)
        if refusal is not None:
            return refusal
        segment = request.path.rstrip("/").rsplit("/", 1)[-1]
        return self._odata_error(404, f"Resource not found for the segment '{unquote(segment)}'.")

    def _refuse_unauthorized(self, request: RecordedRequest) -> Response | None:
        reason = self._token_problem(request.headers.get("Authorization", ""))
        if reason is None:
            return None
        response = self._odata_error(401, reason, "Unauthorized")
        return Response(401, response.body, {**response.headers, "WWW-Authenticate": "Bearer"})

    def _token_problem(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "Authorization has been denied for this request: no bearer token."
        info = self.entra.token_info(token.strip())
        if info is None:
            return "Authorization has been denied for this request: unknown token."
        if info.expired:
            return "Authorization has been denied for this request: the token has expired."
        if info.audience != self.audience:
            return f"Authorization has been denied for this request: token audience '{info.audience}' is not valid."
        if self._allowed_clients is not None and info.client_id not in self._allowed_clients:
            return "Authorization has been denied for this request: the application is not registered."
        return None

    def _service_document(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        with self._data_lock:
            names = sorted(self._sets)
        return self._odata_json(
            200,
            {
                "@odata.context": f"{self.base_url}/data/$metadata",
                "value": [{"name": name, "kind": "EntitySet", "url": name} for name in names],
            },
        )

    def _metadata(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        """A CSDL document naming each entity set, its type and keys (F&O's is far larger)."""
        with self._data_lock:
            sets = sorted(self._sets.values(), key=lambda entity_set: entity_set.name)
        types = "".join(
            f'<EntityType Name="{entity_set.entity_type}"><Key>'
            + "".join(f'<PropertyRef Name="{key}"/>' for key in entity_set.keys)
            + "</Key>"
            + "".join(f'<Property Name="{name}" Type="Edm.String"/>' for name in sorted(entity_set.fields()))
            + "</EntityType>"
            for entity_set in sets)
        container = "".join(f'<EntitySet Name="{entity_set.name}" EntityType="{entity_set.qualified_type}"/>'
                            for entity_set in sets)
        document = ('<?xml version="1.0" encoding="utf-8"?>'
                    '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx"><edmx:DataServices>'
                    '<Schema Namespace="Microsoft.Dynamics.DataEntities" xmlns="http://docs.oasis-open.org/odata/ns/edm">'
                    f'{types}<EntityContainer Name="Resources">{container}</EntityContainer></Schema>'
                    '</edmx:DataServices></edmx:Edmx>')
        return Response(200, document.encode("utf-8"), {"Content-Type": "application/xml", "OData-Version": "4.0"})

    def _collection(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        entity_set = self._entity_set(match["set"])
        query = self._collection_query(request, entity_set)
        with self._data_lock:
            rows = list(entity_set.rows)
        matched = [row for row in rows if self._visible(row, entity_set, query.cross_company)]
        if query.predicate is not None:
            matched = [row for row in matched if query.predicate(row.values)]
        matched = _ordered(matched, entity_set, query.order)
        window_end = None if query.top is None else query.skip + query.top
        window = matched[query.skip : window_end]
        page = window[: self.page_size]
        payload: dict[str, Any] = {"@odata.context": self._context_url(entity_set, query.select)}
        if query.count:
            payload["@odata.count"] = len(matched)
        payload["value"] = [self._shape(row, query.select) for row in page]
        if len(window) > len(page):
            payload["@odata.nextLink"] = self._next_link(request, entity_set, query, len(page))
        return self._odata_json(200, payload)

    def _single(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        entity_set = self._entity_set(match["set"])
        wanted = self._key_values(entity_set, unquote(match["keys"]))
        cross_company = _is_true(request.query_value("cross-company"))
        select = self._select(request.query_value("$select"), entity_set)
        with self._data_lock:
            rows = list(entity_set.rows)
        for row in rows:
            if not self._visible(row, entity_set, cross_company):
                continue
            if all(_key_equal(row.values.get(name), value) for name, value in wanted.items()):
                body = {"@odata.context": self._context_url(entity_set, select, single=True)}
                body.update(self._shape(row, select))
                return self._odata_json(200, body, {"ETag": row.etag})
        raise ODataError(404, f"Resource not found for the segment '{entity_set.name}'.")

    # --- query handling -----------------------------------------------------------------------

    def _entity_set(self, name: str) -> EntitySet:
        with self._data_lock:
            stored = self._sets.get(name)
        if stored is None:
            raise ODataError(404, f"Resource not found for the segment '{name}'.")
        return stored

    def _collection_query(self, request: RecordedRequest, entity_set: EntitySet) -> CollectionQuery:
        for name in request.query:
            if name in _UNSUPPORTED_OPTIONS:
                raise ODataError(501, f"The fake does not implement the query option '{name}'.")
            if name.startswith("$") and name not in _SUPPORTED_OPTIONS:
                raise ODataError(400, f"The query parameter '{name}' is not supported.")
        filter_text = request.query_value("$filter")
        predicate = None
        if filter_text:
            predicate = FilterParser(filter_text, entity_set.fields(), entity_set.qualified_type).parse()
        return CollectionQuery(
            predicate=predicate,
            select=self._select(request.query_value("$select"), entity_set),
            order=self._order(request.query_value("$orderby"), entity_set),
            top=_non_negative(request.query_value("$top"), "$top"),
            skip=_non_negative(request.query_value("$skip"), "$skip") or 0,
            count=_is_true(request.query_value("$count")),
            cross_company=_is_true(request.query_value("cross-company")),
        )

    def _select(self, text: str | None, entity_set: EntitySet) -> tuple[str, ...] | None:
        if not text or text.strip() == "*":
            return None
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        fields = entity_set.fields()
        for name in names:
            if name not in fields:
                raise ODataError(
                    400, f"Could not find a property named '{name}' on type '{entity_set.qualified_type}'."
                )
        return names

    def _order(self, text: str | None, entity_set: EntitySet) -> tuple[tuple[str, bool], ...]:
        if not text:
            return ()
        order: list[tuple[str, bool]] = []
        fields = entity_set.fields()
        for clause in text.split(","):
            parts = clause.split()
            if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
                raise ODataError(400, f"Syntax error in $orderby '{text}'.")
            if parts[0] not in fields:
                raise ODataError(
                    400, f"Could not find a property named '{parts[0]}' on type '{entity_set.qualified_type}'."
                )
            order.append((parts[0], len(parts) == 2 and parts[1] == "desc"))
        return tuple(order)

    def _key_values(self, entity_set: EntitySet, segment: str) -> dict[str, Any]:
        parts = parse_key_segment(segment)
        if len(parts) == 1 and parts[0][0] is None and len(entity_set.keys) == 1:
            return {entity_set.keys[0]: parts[0][1]}
        if len(parts) != len(entity_set.keys):
            raise ODataError(
                400,
                "The number of keys specified in the URI does not match number of key properties for the "
                f"resource '{entity_set.qualified_type}'.",
            )
        named = {name: value for name, value in parts if name is not None}
        if set(named) != set(entity_set.keys):
            raise ODataError(
                400,
                f"The key in the request URI is not valid for resource '{entity_set.qualified_type}'. Ensure that "
                "the names and number of key properties match the declared or inherited key properties for the "
                f"resource '{entity_set.qualified_type}'.",
            )
        return named

    def _visible(self, row: StoredRow, entity_set: EntitySet, cross_company: bool) -> bool:
        if cross_company or not entity_set.company_specific:
            return True
        return str(row.values.get("dataAreaId", "")).casefold() == self.default_company.casefold()

    def _shape(self, row: StoredRow, select: tuple[str, ...] | None) -> dict[str, Any]:
        shaped: dict[str, Any] = {"@odata.etag": row.etag}
        if select is None:
            shaped.update(row.values)
        else:
            shaped.update({name: row.values.get(name) for name in row.values if name in select})
            shaped.update({name: None for name in select if name not in row.values})
        return shaped

    def _context_url(self, entity_set: EntitySet, select: tuple[str, ...] | None, single: bool = False) -> str:
        projection = f"({','.join(select)})" if select else ""
        return f"{self.base_url}/data/$metadata#{entity_set.name}{projection}{'/$entity' if single else ''}"

    def _next_link(self, request: RecordedRequest, entity_set: EntitySet, query: CollectionQuery, served: int) -> str:
        raw_query = request.target.partition("?")[2]
        # Keep the client's other options byte for byte; only the paging window moves.
        kept = [piece for piece in raw_query.split("&") if piece and unquote(piece.split("=")[0]) not in _PAGING]
        kept.append(f"$skip={query.skip + served}")
        if query.top is not None:
            kept.append(f"$top={query.top - served}")
        return f"{self.base_url}/data/{entity_set.name}?{'&'.join(kept)}"

    # --- answers -----------------------------------------------------------------------------

    def _odata_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
        return Response.json(status, payload, {**ODATA_HEADERS, **(headers or {})})

    def _odata_error(self, status: int, message: str, code: str = "") -> Response:
        return self._odata_json(status, {"error": {"code": code, "message": message}})

    def error_response(self, status: int, message: str) -> Response:
        return self._odata_error(status, message)

    def default_error_message(self, status: int) -> str:
        if status == 429:
            return THROTTLED_MESSAGE
        if status == 503:
            return "The service is unavailable."
        return super().default_error_message(status)


def _ordered(rows: list[StoredRow], entity_set: EntitySet, order: tuple[tuple[str, bool], ...]) -> list[StoredRow]:
    # Stable sorts applied from the last clause to the first give a multi-key order.
    result = sorted(rows, key=lambda row: tuple(_sort_key(row.values.get(key)) for key in entity_set.keys))
    for name, descending in reversed(order):
        result.sort(key=lambda row, field=name: _sort_key(row.values.get(field)), reverse=descending)
    return result


def _sort_key(value: Any) -> tuple[int, Any]:
    # Nulls first (SQL Server order); strings without case; mixed types kept apart.
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        moment = parse_datetime(value) if re.match(r"\d{4}-\d{2}-\d{2}T", value) else None
        return (3, moment.timestamp()) if moment is not None else (4, value.casefold())
    return (5, repr(value))


def _key_equal(stored: Any, wanted: Any) -> bool:
    if isinstance(stored, str) and isinstance(wanted, str):
        return stored.casefold() == wanted.casefold()
    if isinstance(wanted, datetime) and isinstance(stored, str):
        return parse_datetime(stored) == wanted
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return stored is wanted
    return isinstance(stored, int | float) and isinstance(wanted, int | float) and stored == wanted


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


def _non_negative(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ODataError(400, f"Invalid value '{value}' for {option} query option found.")
    return int(value)
