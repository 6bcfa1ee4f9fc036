"""Fake Microsoft Entra ID (v2.0 endpoints) for the client-credentials flow, over HTTPS.

azure-identity refuses ``http://`` authorities, so this fake serves TLS with a trustme CA.
Point a credential at it with::

    ClientSecretCredential(tenant, client_id, secret, authority=entra.authority,
                           disable_instance_discovery=True, connection_verify=entra.ca_pem_path)

What MSAL (under azure-identity) asks for, in order: ``GET /{tenant}/v2.0/.well-known/
openid-configuration``, then ``POST /{tenant}/oauth2/v2.0/token`` with ``client_id``,
``client_secret``, ``grant_type=client_credentials``, ``scope`` and ``client_info=1``. A
second ``get_token`` for the same scope is served from the credential's cache. Without
``disable_instance_discovery=True`` MSAL asks login.microsoftonline.com itself for instance
metadata (not reachable here), so that flag is required.

Tokens are opaque random strings; ``token_info`` tells the Dynamics fake who holds a
token, for which audience (scope minus ``/.default``) and until when.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import unquote

import trustme

from tests.fakes.server import RecordedRequest, Response, Route, TlsFakeServer, route

DEFAULT_TOKEN_LIFETIME = 3599
_DEFAULT_SUFFIX = "/.default"
_TENANT = r"(?P<tenant>[^/]+)"


@dataclass(frozen=True)
class TokenInfo:
    token: str
    tenant: str
    client_id: str
    scope: str
    audience: str  # the scope without "/.default": the resource the token is for
    issued_at: float  # epoch seconds
    expires_at: float  # epoch seconds

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


class EntraError(Exception):
    """An AADSTS-style error answer."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.code = code
        self.description = description


class FakeEntra(TlsFakeServer):
    """Fake Entra ID: OpenID discovery and the v2.0 token endpoint for client credentials."""

    service_name = "entra"

    def __init__(
        self, *, ca: trustme.CA | None = None, port: int = 0, token_lifetime: int = DEFAULT_TOKEN_LIFETIME
    ) -> None:
        super().__init__(ca=ca, port=port)
        self.token_lifetime = token_lifetime  # seconds, sent as expires_in
        self._clients: dict[tuple[str, str], str] = {}
        self._tokens: dict[str, TokenInfo] = {}
        self._state_lock = threading.Lock()

    @property
    def authority(self) -> str:
        """The ``authority=`` for azure-identity: ``https://127.0.0.1:PORT``."""
        return self.base_url

    def token_endpoint(self, tenant: str) -> str:
        return f"{self.base_url}/{tenant}/oauth2/v2.0/token"

    # --- set-up and inspection -----------------------------------------------------------

    def register_client(self, tenant: str, client_id: str, secret: str) -> None:
        """An app registration in ``tenant`` with a client secret (the tenant exists from now on)."""
        with self._state_lock:
            self._clients[(tenant, client_id)] = secret

    def knows_tenant(self, tenant: str) -> bool:
        with self._state_lock:
            return any(known == tenant for known, _client in self._clients)

    def token_info(self, token: str) -> TokenInfo | None:
        with self._state_lock:
            return self._tokens.get(token)

    def expire_all_tokens(self) -> None:
        """Make every issued token expired as far as resource servers (the Dynamics fake) can tell."""
        expired_at = time.time() - 1
        with self._state_lock:
            self._tokens = {token: replace(info, expires_at=expired_at) for token, info in self._tokens.items()}

    def issued_count(self, tenant: str | None = None, client_id: str | None = None) -> int:
        with self._state_lock:
            return sum(
                1
                for info in self._tokens.values()
                if (tenant is None or info.tenant == tenant) and (client_id is None or info.client_id == client_id)
            )

    def issue_token(self, tenant: str, client_id: str, scope: str) -> TokenInfo:
        """Mint a token directly (for tests that do not need the HTTP flow)."""
        now = time.time()
        info = TokenInfo(
            token=secrets.token_urlsafe(48),
            tenant=tenant,
            client_id=client_id,
            scope=scope,
            audience=scope.removesuffix(_DEFAULT_SUFFIX),
            issued_at=now,
            expires_at=now + self.token_lifetime,
        )
        with self._state_lock:
            self._tokens[info.token] = info
        return info

    # --- HTTP ----------------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        return [
            route("GET", rf"/{_TENANT}/v2\.0/\.well-known/openid-configuration", self._openid_configuration),
            route("POST", rf"/{_TENANT}/oauth2/v2\.0/token", self._token),
        ]

    def _openid_configuration(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        tenant = unquote(match["tenant"])
        if not self.knows_tenant(tenant):
            return self._error(EntraError(400, "invalid_tenant", 90002, _tenant_not_found(tenant)))
        return Response.json(200, self.openid_configuration(tenant))

    def openid_configuration(self, tenant: str) -> dict[str, object]:
        base = f"{self.base_url}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base_url}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "oid"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def _token(self, request: RecordedRequest, match: re.Match[str]) -> Response:
        tenant = unquote(match["tenant"])
        try:
            info = self._client_credentials_grant(tenant, request)
        except EntraError as error:
            return self._error(error)
        return Response.json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": info.token,
            },
            {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    def _client_credentials_grant(self, tenant: str, request: RecordedRequest) -> TokenInfo:
        grant_type = request.form_value("grant_type")
        if grant_type != "client_credentials":
            raise EntraError(400, "unsupported_grant_type", 70003, _unsupported_grant(grant_type))
        if not self.knows_tenant(tenant):
            raise EntraError(400, "invalid_request", 90002, _tenant_not_found(tenant))
        client_id = request.form_value("client_id")
        if not client_id:
            raise EntraError(400, "invalid_request", 900144, _missing_parameter("client_id"))
        with self._state_lock:
            expected_secret = self._clients.get((tenant, client_id))
        if expected_secret is None:
            raise EntraError(400, "unauthorized_client", 700016, _unknown_application(client_id, tenant))
        if not secrets.compare_digest(request.form_value("client_secret") or "", expected_secret):
            raise EntraError(401, "invalid_client", 7000215, _INVALID_SECRET)
        scope = request.form_value("scope")
        if not scope:
            raise EntraError(400, "invalid_request", 900144, _missing_parameter("scope"))
        resource_scopes = [part for part in scope.split() if part not in ("openid", "profile", "offline_access")]
        if len(resource_scopes) != 1 or not resource_scopes[0].endswith(_DEFAULT_SUFFIX):
            raise EntraError(400, "invalid_scope", 1002012, _invalid_scope(scope))
        return self.issue_token(tenant, client_id, resource_scopes[0])

    def _error(self, error: EntraError) -> Response:
        trace_id = str(uuid.uuid4())
        correlation_id = str(uuid.uuid4())
        timestamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return Response.json(
            error.status,
            {
                "error": error.error,
                "error_description": f"AADSTS{error.code}: {error.description} "
                f"Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                "error_codes": [error.code],
                "timestamp": timestamp,
                "trace_id": trace_id,
                "correlation_id": correlation_id,
                "error_uri": f"{self.base_url}/error?code={error.code}",
            },
            {"Cache-Control": "no-store, no-cache"},
        )

    def error_response(self, status: int, message: str) -> Response:
        error = "invalid_request" if status < 500 else "temporarily_unavailable"
        return self._error(EntraError(status, error, 0, message))


_INVALID_SECRET = (
    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, "
    "not the client secret ID, for a secret added to app."
)


def _tenant_not_found(tenant: str) -> str:
    return (
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the "
        "correct cloud. Check with your subscription administrator, this may happen if there are no active "
        "subscriptions for the tenant."
    )


def _missing_parameter(name: str) -> str:
    return f"The request body must contain the following parameter: '{name}'."


def _unsupported_grant(grant_type: str | None) -> str:
    return f"The provided value for the input parameter 'grant_type' is not valid: '{grant_type or ''}'."


def _unknown_application(client_id: str, tenant: str) -> str:
    return (
        f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if "
        "the application has not been installed by the administrator of the tenant or consented to by any user "
        "in the tenant."
    )


def _invalid_scope(scope: str) -> str:
    return (
        f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value "
        "with /.default suffixed to the resource identifier (application ID URI)."
    )
