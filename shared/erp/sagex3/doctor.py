"""Sage X3: one row of each entity the poll reads (REST representations or GraphQL, as configured)."""

from __future__ import annotations

from typing import Any

from shared.doctor import Check, Context, attempt, failed, passed
from shared.erp.sagex3.connection import SageX3Connection

_CREDENTIALS_FIX = {
    "rest": "check username and the secret named by password (a Syracuse user with access to the folder)",
    "graphql": "check client_id, username and the secret named by client_secret against the connected "
               "application (Administration > Connected applications)",
}


def checks(connection: SageX3Connection, context: Context) -> list[Check]:
    from shared.erp.sagex3.adapter import ENTITIES, SageX3Session
    from shared.erp.sagex3.client import SageX3Api

    http = context.http(connection.ca_bundle)
    api = SageX3Api(connection, context.secrets, http=http)
    try:
        session = SageX3Session(api, connection)
        return [one_row(session, connection, ENTITIES[entity]) for entity in connection.poll.entities
                if entity in ENTITIES]
    finally:
        api.close()
        http.close()


def one_row(session: Any, connection: SageX3Connection, entity: Any) -> Check:
    name = f"Read {entity.name}"

    def run() -> Check:
        from shared.doctor.polled import rows_read
        from shared.erp.sagex3.client import SageX3Error
        from shared.http import HttpFailure

        try:
            count = rows_read(session, entity)
        except HttpFailure as refused:
            if refused.status in (401, 403):
                return failed(name, f"HTTP {refused.status}: {refused.reason}", _CREDENTIALS_FIX[connection.api])
            if refused.status == 404:
                return failed(name, f"HTTP 404: {refused.reason}",
                              f"check base_url and folder ({connection.folder}); publish the class and "
                              "representation this entity reads, or name yours under representations")
            return failed(name, f"HTTP {refused.status}: {refused.reason}",
                          "the representation may lack a field the poll reads: compare it with the defaults in "
                          "shared/erp/sagex3/adapter.py, or set representations")
        except SageX3Error as refused:
            if "HTTP 401" in refused.reason or "token" in refused.reason:
                return failed(name, refused.reason, _CREDENTIALS_FIX[connection.api])
            if "HTTP 403" in refused.reason:
                return failed(name, refused.reason, f"give {connection.username} access to folder {connection.folder} "
                                                    "and the class this entity reads (Syracuse roles)")
            return failed(name, refused.reason, "see the detail: X3's own diagnosis names the problem")
        return passed(name, f"read {count} row{'' if count == 1 else 's'}")

    return attempt(name, connection.base_url, run, _CREDENTIALS_FIX[connection.api])
