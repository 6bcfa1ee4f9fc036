"""Dynamics 365 F&O OData client: reads entities by key and streams queries page by page.

- One Entra ID client-secret credential per client: azure-identity caches the token and
  renews it before expiry, so calls do not fetch tokens. A 401 from F&O (token revoked,
  expired early) builds a fresh credential and retries the call once.
- Every call goes through ``shared.http.HttpClient``: timeouts, and 429/503 wait exactly
  what ``Retry-After`` says (30 s when F&O leaves it out, Microsoft's guidance), inline for
  short waits, ``RetryLater`` for long ones.
- A semaphore caps concurrent requests per client, far below F&O's 52 per user.

azure-identity and requests are imported on first use, not here: the Functions host
imports this module on cold start.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from shared.clients import PerConnection
from shared.erp.dynamics.connection import DEFAULT_AUTHORITY, DynamicsConnection
from shared.http import HttpClient, HttpFailure, RetryPolicy

if TYPE_CHECKING:
    import requests
    from azure.identity import ClientSecretCredential

    from shared.storage.secrets import SecretProvider

log = logging.getLogger(__name__)

# Microsoft's F&O retry sample waits 30 s when a 429 carries no Retry-After.
DYNAMICS_DEFAULT_RETRY_AFTER = 30.0
DEFAULT_MAX_CONCURRENCY = 8
F_AND_O_CONCURRENT_REQUEST_LIMIT = 52
ODATA_HEADERS: Mapping[str, str] = {
    "OData-Version": "4.0",
    "OData-MaxVersion": "4.0",
    "Accept": "application/json",
}
_UNAUTHORIZED = 401
_NOT_FOUND = 404
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
# Kept literal in query strings: OData syntax characters that are legal there, for readable URLs.
_QUERY_SAFE = "$,'():"
_MAX_ERROR_MESSAGE = 300


class ODataPagingError(RuntimeError):
    """The service answered with a nextLink that cannot be followed (repeats the page or leaves the host)."""


# --- literals ----------------------------------------------------------------------------


def odata_string(value: str) -> str:
    """A quoted OData string literal: ``O'Neil`` -> ``'O''Neil'``.

    F&O reads ``*`` inside an ``eq``/``ne`` string literal as a wildcard; there is no escape for it.
    """
    return "'" + value.replace("'", "''") + "'"


def odata_datetime(moment: datetime) -> str:
    """An unquoted ``Edm.DateTimeOffset`` literal in UTC for ``$filter``: ``2024-05-01T00:00:00Z``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        # Naive times are ambiguous: the ERP's zone, the server's or UTC would each match other rows.
        raise ValueError("odata_datetime needs a timezone-aware datetime")
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def key_literal(value: str | int) -> str:
    """One key value as it appears in the URL path: strings quoted and percent-encoded, ints bare."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        # F&O has no boolean keys (NoYes is an enum); True would otherwise become 1.
        raise TypeError(f"an OData key value must be a str or an int, not {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    # Everything but unreserved characters and the quotes is encoded: '/', '#', '?', '%',
    # spaces and the key syntax itself (',', '=', '(', ')') would otherwise change the path.
    return quote(odata_string(value), safe="'")


def key_segment(keys: Mapping[str, str | int]) -> str:
    """``(dataAreaId='usmf',VendorAccountNumber='US-101')`` for the URL path."""
    if not keys:
        raise ValueError("an entity read needs at least one key field")
    parts = [f"{_identifier(name, 'key field')}={key_literal(value)}" for name, value in keys.items()]
    return "(" + ",".join(parts) + ")"


def _identifier(name: str, what: str) -> str:
    # Names go into the path unencoded, so only plain OData identifiers are allowed.
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a valid OData {what} name: {name!r}")
    return name


def _query_string(options: Mapping[str, str | None]) -> str:
    present = {name: value for name, value in options.items() if value is not None}
    # quote (not quote_plus): '+' is not a space to every OData server.
    return urlencode(present, safe=_QUERY_SAFE, quote_via=quote)


def _select_option(select: tuple[str, ...]) -> str | None:
    if isinstance(select, str):
        raise TypeError("select must be a tuple of field names, not a string")
    return ",".join(_identifier(name, "field") for name in select) or None


# --- the client --------------------------------------------------------------------------


class DynamicsClient:
    """Reads one F&O environment over OData as the connection's Entra ID app. Thread-safe."""

    def __init__(
        self,
        connection: DynamicsConnection,
        secrets: SecretProvider,
        *,
        http: HttpClient | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        if not 1 <= max_concurrency < F_AND_O_CONCURRENT_REQUEST_LIMIT:
            raise ValueError(f"max_concurrency must be from 1 to {F_AND_O_CONCURRENT_REQUEST_LIMIT - 1}")
        self.connection = connection
        self._secrets = secrets
        self._base_url = connection.environment_url.rstrip("/")
        # The audience is the environment URL itself; a slash before /.default fails at Entra.
        self.scope = f"{self._base_url}/.default"
        self._verify: bool | str = connection.ca_bundle or True
        self._owns_http = http is None
        self._http = http or HttpClient(
            RetryPolicy(default_retry_after=DYNAMICS_DEFAULT_RETRY_AFTER), verify=self._verify
        )
        self._slots = threading.BoundedSemaphore(max_concurrency)
        # Guards the credential and serialises get_token, so concurrent first calls fetch one token.
        self._credential_lock = threading.Lock()
        self._credential: ClientSecretCredential | None = None

    @property
    def base_url(self) -> str:
        return self._base_url

    # --- public reads ------------------------------------------------------------------------

    def read_entity(
        self,
        entity_set: str,
        keys: Mapping[str, str | int],
        select: tuple[str, ...] = (),
        cross_company: bool = True,
    ) -> dict[str, Any] | None:
        """The row with these keys (all of them, ``dataAreaId`` included), or None when there is none.

        The row keeps ``@odata.etag``; ``@odata.context`` is dropped.
        """
        path = f"{self._base_url}/data/{_identifier(entity_set, 'entity set')}{key_segment(keys)}"
        url = self._with_query(path, {"$select": _select_option(select), **_company_option(cross_company)})
        try:
            row = self._get_json(url)
        except HttpFailure as failure:
            if failure.status == _NOT_FOUND:
                return None
            raise
        row.pop("@odata.context", None)
        return row

    def query(
        self,
        entity_set: str,
        *,
        filter: str | None = None,
        select: tuple[str, ...] = (),
        orderby: str | None = None,
        top: int | None = None,
        cross_company: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """Rows of ``entity_set``, fetched one server page at a time as the caller iterates.

        ``filter`` is OData ``$filter`` text; build literals with ``odata_string`` and
        ``odata_datetime``. Server paging is followed through ``@odata.nextLink`` as given.
        """
        if top is not None and top < 0:
            raise ValueError("top must not be negative")
        options = {
            "$filter": filter or None,
            "$select": _select_option(select),
            "$orderby": orderby or None,
            "$top": None if top is None else str(top),
            **_company_option(cross_company),
        }
        return self._pages(self.query_url(entity_set, options))

    def query_url(self, entity_set: str, options: Mapping[str, str | None]) -> str:
        """The URL of a query's first page, from OData system query options (``$filter``, ...)."""
        return self._with_query(f"{self._base_url}/data/{_identifier(entity_set, 'entity set')}", options)

    def page(self, url: str) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a query: its rows and the checked ``@odata.nextLink`` (None on the last page)."""
        page = self._get_json(url)
        rows = page.get("value")
        if not isinstance(rows, list):
            raise ODataPagingError(f"the answer for {_path_of(url)} has no 'value' list")
        next_link = page.get("@odata.nextLink")
        if next_link is not None:
            self._check_next_link(url, next_link)
        return rows, next_link

    def create(self, entity_set: str, row: Mapping[str, Any]) -> dict[str, Any] | None:
        """POST a new row to ``entity_set``; the created row F&O answers with, if any. Not retried after it
        may have been carried out: the caller looks for the row before trying again."""
        response = self._call("POST", f"{self._base_url}/data/{_identifier(entity_set, 'entity set')}", row)
        try:
            answer = response.json() if response.content else None
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    def run_action(self, entity_set: str, action: str, parameters: Mapping[str, Any], *,
                   keys: Mapping[str, str | int] | None = None) -> dict[str, Any] | None:
        """POST an OData bound action (``Microsoft.Dynamics.DataEntities.<action>``); its JSON answer, if any.

        Actions are not retried after they may have run (a read timeout, a 5xx): the caller
        decides, knowing what the action does.
        """
        target = f"{self._base_url}/data/{_identifier(entity_set, 'entity set')}"
        if keys:
            target += f"({key_segment(keys)})"
        response = self._call("POST", f"{target}/Microsoft.Dynamics.DataEntities.{_identifier(action, 'action')}",
                              parameters)
        if not response.content:
            return None
        try:
            answer = response.json()
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else {"value": answer}

    def sign_in(self) -> None:
        """Get a token now (ClientAuthenticationError with Entra's AADSTS code when refused)."""
        self._token()

    def metadata(self) -> str:
        """The service's ``$metadata`` document (CSDL XML): its entity sets and actions."""
        response = self._call("GET", f"{self._base_url}/data/$metadata")
        return response.text

    def close(self) -> None:
        with self._credential_lock:
            self._drop_credential()
        if self._owns_http:
            self._http.close()

    # --- paging --------------------------------------------------------------------------------

    def _pages(self, url: str) -> Iterator[dict[str, Any]]:
        # A generator: one page is held at a time, however many rows the query matches.
        next_link: str | None = url
        while next_link is not None:
            rows, next_link = self.page(next_link)
            yield from rows

    def _check_next_link(self, current: str, next_link: Any) -> None:
        if not isinstance(next_link, str) or not next_link:
            raise ODataPagingError(f"the answer for {_path_of(current)} has an unusable @odata.nextLink")
        if next_link == current:
            # Following it would request the same page forever.
            raise ODataPagingError(f"@odata.nextLink repeats the page just read ({_path_of(current)})")
        if _origin(next_link) != _origin(self._base_url):
            # The link would receive the bearer token: only the environment itself may.
            raise ODataPagingError(f"@odata.nextLink leaves the environment: {_origin(next_link)}")

    # --- requests ------------------------------------------------------------------------------

    def _with_query(self, path: str, options: Mapping[str, str | None]) -> str:
        query = _query_string(options)
        return f"{path}?{query}" if query else path

    def _get_json(self, url: str) -> dict[str, Any]:
        response = self._get(url)
        try:
            body = response.json()
        except ValueError as error:
            raise HttpFailure(response.status_code, "the OData answer is not JSON", response) from error
        if not isinstance(body, dict):
            raise HttpFailure(response.status_code, "the OData answer is not a JSON object", response)
        return body

    def _get(self, url: str) -> requests.Response:
        return self._call("GET", url)

    def _call(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> requests.Response:
        token, credential = self._token()
        try:
            return self._send(method, url, token, body)
        except HttpFailure as failure:
            if failure.status != _UNAUTHORIZED:
                raise
            log.info("Dynamics %s answered 401; renewing the token once", self._base_url)
        # The cached token was refused (revoked, or expired early): a new credential forgets it.
        # A 401 means the request was not carried out, so sending it again is safe even for a POST.
        token = self._renewed_token(credential)
        return self._send(method, url, token, body)

    def _send(self, method: str, url: str, token: str, body: Mapping[str, Any] | None) -> requests.Response:
        headers = {**ODATA_HEADERS, "Authorization": f"Bearer {token}"}
        extra: dict[str, Any] = {} if body is None else {"json": dict(body)}
        with self._slots:
            try:
                return self._http.request(method, url, headers=headers, verify=self._verify, **extra)
            except HttpFailure as failure:
                detail = odata_error_message(failure.response)
                if detail is None:
                    raise
                raise HttpFailure(failure.status, f"{failure.reason}: {detail}", failure.response) from failure

    # --- tokens --------------------------------------------------------------------------------

    def _token(self) -> tuple[str, ClientSecretCredential]:
        with self._credential_lock:
            credential = self._current_credential()
            return self._token_from(credential), credential

    def _renewed_token(self, refused_by: ClientSecretCredential) -> str:
        with self._credential_lock:
            # Several threads can hit the same 401; only the first replaces the credential.
            if self._credential is refused_by:
                self._drop_credential()
            return self._token_from(self._current_credential())

    def _token_from(self, credential: ClientSecretCredential) -> str:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return credential.get_token(self.scope).token
        except ClientAuthenticationError:
            # Perhaps the secret was rotated: read it again on the next call instead of repeating the refusal.
            self._drop_credential()
            self._forget_cached_secret()
            raise

    def _current_credential(self) -> ClientSecretCredential:
        if self._credential is None:
            self._credential = self._new_credential()
        return self._credential

    def _new_credential(self) -> ClientSecretCredential:
        from azure.identity import ClientSecretCredential

        connection = self.connection
        secret = self._secrets.get(connection.client_secret.name)
        authority = connection.authority.rstrip("/")
        return ClientSecretCredential(
            connection.tenant_id,
            connection.client_id,
            secret.reveal(),
            authority=authority,
            # Instance discovery asks login.microsoftonline.com; other authorities answer for themselves.
            disable_instance_discovery=authority != DEFAULT_AUTHORITY,
            connection_verify=self._verify,
        )

    def _drop_credential(self) -> None:
        credential, self._credential = self._credential, None
        if credential is not None:
            credential.close()

    def _forget_cached_secret(self) -> None:
        invalidate = getattr(self._secrets, "invalidate", None)  # CachedSecretProvider has it
        if callable(invalidate):
            invalidate(self.connection.client_secret.name)


def _company_option(cross_company: bool) -> dict[str, str | None]:
    return {"cross-company": "true" if cross_company else None}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port)


def _path_of(url: str) -> str:
    # Error messages name the resource, not the query (filters can hold customer data).
    return urlsplit(url).path


def odata_error_message(response: requests.Response | None) -> str | None:
    """``code: message`` from an OData error body (``{"error": {"code", "message"}}``), if there is one."""
    if response is None:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    message = str(error.get("message") or "").strip()
    code = str(error.get("code") or "").strip()
    text = f"{code}: {message}" if code and message else code or message
    return text[:_MAX_ERROR_MESSAGE] or None


# --- one client per connection -----------------------------------------------------------

def _new_dynamics_client(connection: DynamicsConnection) -> DynamicsClient:
    from shared.storage.secrets import get_secret_provider

    return DynamicsClient(connection, get_secret_provider())


_clients: PerConnection[DynamicsClient] = PerConnection(_new_dynamics_client)


def dynamics_client(connection: DynamicsConnection) -> DynamicsClient:
    """The process-wide client of this connection (by name), so its token and pool are shared."""
    return _clients.get(connection)


def reset_dynamics_clients() -> None:
    _clients.reset()


# --- workflow work items -----------------------------------------------------------------------
# Microsoft documents the pattern (Validate the work item, then Complete it with an outcome and a
# comment): the actions Validate and Complete bound to WorkflowWorkItems, the work item named by the
# parameter WorkflowWorkitemInstanceID (Power Automate's "WorkflowWorkitem-complete"). The names live in
# the connection's ``workflow`` settings (``WorkflowSettings``), so an environment whose $metadata
# spells them otherwise is set up without a code change.


def work_item_is_open(client: DynamicsClient, instance_id: str) -> bool:
    """Validate: whether the work item still waits for its assignee (not completed or recalled)."""
    names = client.connection.workflow
    answer = client.run_action(names.entity_set, names.validate_action, {names.work_item_parameter: instance_id})
    return bool(answer and answer.get("value") is True)


def complete_work_item(client: DynamicsClient, instance_id: str, outcome: str, comment: str) -> None:
    """Complete the work item with ``outcome`` (e.g. Approve, Reject) and ``comment``."""
    names = client.connection.workflow
    client.run_action(names.entity_set, names.complete_action, {
        names.work_item_parameter: instance_id, names.outcome_parameter: outcome, names.comment_parameter: comment})
