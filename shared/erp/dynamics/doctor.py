"""Dynamics 365 F&O: an Entra ID token, the OData ``$metadata``, and one row of each entity read.

The entities are the poll's and those the business events of the connection's rules read
(a rule without an event can meet any of them, so then every event's).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from shared.doctor import Check, Context, attempt, failed, passed
from shared.erp.dynamics.connection import DynamicsConnection

if TYPE_CHECKING:
    from shared.erp.dynamics.client import DynamicsClient

# What Entra's AADSTS codes mean for this connection, and the fix (Microsoft's error reference).
AADSTS_FIXES: dict[str, str] = {
    "7000215": "the client secret is wrong: store the secret's Value (not its Secret ID) from App registrations > "
               "Certificates & secrets as the secret named by client_secret",
    "7000222": "the client secret has expired: add a new one under App registrations > Certificates & secrets "
               "and store its Value as the secret named by client_secret",
    "700016": "client_id is not an application in this tenant: check client_id (the Application (client) ID) "
              "and tenant_id, or consent to the app in this tenant",
    "90002": "tenant_id names no tenant: use the Directory (tenant) ID or a verified domain of your tenant",
    "900023": "tenant_id is not a valid tenant id or domain name: use the Directory (tenant) ID",
    "500011": "the resource is not known to the tenant: environment_url must be the F&O environment's URL",
    "1002012": "the scope is refused: environment_url must be the environment's root URL, without a path",
}
# "AADSTS7000215: Invalid client secret provided. ... Trace ID: ..." inside the SDK's message.
_NO_AUTHORITY = "Unable to get authority configuration"
_AADSTS = re.compile(r"AADSTS(\d+):\s*(.*?)(?:\s*Trace ID:|$)", re.S)
_STATUS_FIXES: dict[int, str] = {
    401: "F&O refused the app's token: add the client_id under System administration > Setup > Microsoft Entra "
         "ID applications, with a user whose roles may read the entities",
    403: "the F&O user mapped to the app lacks a role that reads this entity: give it one (e.g. Accounts payable "
         "clerk) in System administration > Users",
    404: "the entity is not published in this environment: check its public collection name in $metadata, or "
         "refresh the entity list (Data management > Framework parameters > Refresh entity list)",
}


def checks(connection: DynamicsConnection, context: Context) -> list[Check]:
    from shared.erp.dynamics.client import DynamicsClient

    http = context.http(connection.ca_bundle)
    client = DynamicsClient(connection, context.secrets, http=http)
    try:
        token = entra_token(client, connection)
        if not token.ok:
            return [token]
        return [token, metadata(client), *(one_row(client, entity) for entity in entities_read(connection, context))]
    finally:
        client.close()
        http.close()


def entities_read(connection: DynamicsConnection, context: Context) -> list[str]:
    """The poll's entities, then those the connection's business events read, each once."""
    from shared.erp.dynamics.events import CATALOG, spec_for

    found = list(connection.poll.entities) if connection.poll else []
    rules = context.config.rules_for(connection.name)
    specs = [spec_for(rule.event) for rule in rules if rule.event]
    if any(rule.event is None for rule in rules):
        specs += list(CATALOG.values())
    for spec in specs:
        for read in spec.reads if spec else ():
            found.append(read.entity_set)
    return list(dict.fromkeys(found))


def entra_token(client: DynamicsClient, connection: DynamicsConnection) -> Check:
    name = "Entra token"
    authority = connection.authority.rstrip("/")

    def run() -> Check:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            client.sign_in()
        except ClientAuthenticationError as refused:
            return _refused(name, str(refused), connection.tenant_id)
        return passed(name, f"a token for {client.scope} from {authority}/{connection.tenant_id}")

    return attempt(name, authority, run, "check authority, tenant_id and client_id")


def _refused(name: str, message: str, tenant: str) -> Check:
    if _NO_AUTHORITY in message:
        # MSAL reads the tenant's OpenID configuration first; Entra answers it with AADSTS90002,
        # which MSAL reports in words of its own.
        message = f"AADSTS90002: tenant '{tenant}' not found (the authority has no OpenID configuration for it)"
    found = _AADSTS.search(message)
    if found is None:
        return failed(name, message, "check tenant_id, client_id and the client secret")
    code, said = found.group(1), found.group(2)
    fix = AADSTS_FIXES.get(code, f"look up AADSTS{code} in Microsoft's Entra error reference")
    return failed(name, f"AADSTS{code}: {said}", fix)


def metadata(client: DynamicsClient) -> Check:
    name = "OData $metadata"

    def run() -> Check:
        from shared.http import HttpFailure

        try:
            document = client.metadata()
        except HttpFailure as failure:
            return _http_failed(name, failure)
        sets = document.count("<EntitySet ")
        return passed(name, f"{client.base_url}/data/$metadata answered ({sets} entity sets)")

    return attempt(name, client.base_url, run, "check environment_url")


def one_row(client: DynamicsClient, entity: str) -> Check:
    name = f"$top=1 {entity}"

    def run() -> Check:
        from shared.http import HttpFailure

        try:
            rows = list(client.query(entity, top=1))
        except HttpFailure as failure:
            return _http_failed(name, failure)
        return passed(name, f"read {len(rows)} row{'' if len(rows) == 1 else 's'}")

    return attempt(name, client.base_url, run, "check environment_url and the entity's name")


def _http_failed(name: str, failure: Exception) -> Check:
    status = getattr(failure, "status", None)
    fix = _STATUS_FIXES.get(status or 0, "see the detail; F&O's own message names the problem")
    detail = str(failure)  # HttpFailure's text names its status already
    return failed(name, detail if not status or detail.startswith(f"HTTP {status}") else f"HTTP {status}: {detail}",
                  fix)
