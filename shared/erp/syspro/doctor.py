"""SYSPRO: one row of each table the poll reads when the connection reads through the OData service,
and a logon and a logoff through e.net wherever e.net is set.

A logon by the poll's operator ends that operator's other e.net session: a poll running at that
moment logs on again by itself (its next call finds the session ended).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.doctor import Check, Context, attempt, failed, passed
from shared.erp.syspro.connection import SysproConnection

if TYPE_CHECKING:
    from shared.erp.syspro.client import EnetSession, ODataReader

_LOGON_FIX = ("check operator, the secret named by password, company_id and company_password against SYSPRO's "
              "Operator Maintenance; the operator needs e.net access")


def checks(connection: SysproConnection, context: Context) -> list[Check]:
    """The OData reads when the poll reads through OData; a logon and logoff wherever e.net is set (it
    writes the notes, and reads when OData does not)."""
    from shared.erp.syspro.connection import has_enet

    http = context.http(connection.ca_bundle)
    found: list[Check] = []
    try:
        if connection.api == "odata":
            from shared.erp.syspro.client import ODataReader

            reader = ODataReader(connection, context.secrets, http)
            found += [odata_read(reader, connection, table) for table in tables_read(connection)]
        if has_enet(connection):
            from shared.erp.syspro.client import EnetSession

            session = EnetSession(connection, context.secrets, http)
            logged_on = logon(session, connection)
            found += [logged_on, logoff(session, connection)] if logged_on.ok else [logged_on]
        return found
    finally:
        http.close()


def tables_read(connection: SysproConnection) -> list[str]:
    from shared.erp.syspro.adapter import SPECS

    return list(dict.fromkeys(SPECS[entity].table for entity in connection.poll.entities if entity in SPECS))


def logon(session: EnetSession, connection: SysproConnection) -> Check:
    name = "e.net Logon"

    def run() -> Check:
        from shared.erp.syspro.client import SysproError
        from shared.outcomes import RetryLater

        try:
            session.logon()
        except SysproError as refused:
            return failed(name, refused.reason, _LOGON_FIX)
        except RetryLater as later:
            if "licen" in later.reason.lower():
                return failed(name, later.reason, "every e.net licence seat is taken: end idle sessions in "
                                                  "SYSPRO (e.net Solutions > Sessions) or add seats")
            raise
        return passed(name, f"operator {connection.operator} logged on to company {connection.company_id}")

    return attempt(name, connection.base_url or "", run, "check base_url (…/SYSPROWCFService/Rest)")


def logoff(session: EnetSession, connection: SysproConnection) -> Check:
    name = "e.net Logoff"

    def run() -> Check:
        session.logoff(quiet=False)
        return passed(name, "the session ended (its licence seat is free)")

    return attempt(name, connection.base_url or "", run, "the session holds a licence seat until it times out; "
                                                   "check the e.net service's log")


def odata_read(reader: ODataReader, connection: SysproConnection, table: str) -> Check:
    name = f"OData {table}"
    url = connection.odata_url or connection.base_url or ""

    def run() -> Check:
        from shared.erp.syspro.adapter import SPECS
        from shared.erp.syspro.client import TableQuery
        from shared.http import HttpFailure

        columns = next(spec.columns for spec in SPECS.values() if spec.table == table)
        try:
            rows = reader.rows(TableQuery(table, columns, (), 1))
        except HttpFailure as refused:
            if refused.status == 401:
                return failed(name, "HTTP 401: the OData service refused the operator",
                              "check operator and the secret named by odata_password (the operator's OData "
                              "password in Operator Maintenance)")
            if refused.status == 404:
                return failed(name, f"HTTP 404: no table {table} for company {connection.company_id}",
                              "check odata_url (…/SYSPRO8Odata/SYSPROOData) and company_id")
            raise
        return passed(name, f"read {len(rows)} row{'' if len(rows) == 1 else 's'}")

    return attempt(name, url, run, "check odata_url, company_id and the OData service")
