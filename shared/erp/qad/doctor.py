"""QAD: the login (Web UI session or token), then one row of each browse the poll uses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.doctor import Check, Context, attempt, failed, passed
from shared.erp.qad.connection import QadConnection

if TYPE_CHECKING:
    from shared.erp.qad.client import QadClient

_LOGIN_FIX = ("check username and the secret named by password (a QAD user of this tenant); with auth oauth, "
              "client_id and client_secret too")


def browses_used(connection: QadConnection) -> list[Any]:
    """The browses the configured entities read, and the supplier browse every record is completed from."""
    from shared.erp.qad.adapter import INVOICES, PURCHASE_ORDERS, RECEIPTS, SUPPLIERS

    by_entity = {"GoodsReceipts": RECEIPTS, "UnmatchedInvoices": INVOICES, "PendingPurchaseOrders": PURCHASE_ORDERS}
    used = [by_entity[entity] for entity in connection.poll.entities if entity in by_entity]
    return list({browse.name: browse for browse in [*used, SUPPLIERS]}.values())


def checks(connection: QadConnection, context: Context) -> list[Check]:
    from shared.erp.qad.client import QadClient

    client = QadClient(connection, context.secrets, http=context.http(connection.ca_bundle))
    try:
        found = login(client, connection)
        if not found.ok:
            return [found]
        return [found, *(browse_row(client, connection, browse) for browse in browses_used(connection))]
    finally:
        client.close()


def login(client: QadClient, connection: QadConnection) -> Check:
    name = "Login"

    def run() -> Check:
        from shared.erp.qad.client import QadLoginRefused

        try:
            client.log_in()
        except QadLoginRefused as refused:
            return failed(name, refused.reason, _LOGIN_FIX)
        how = "a token" if connection.auth == "oauth" else "a session"
        return passed(name, f"{connection.username} got {how} from {connection.base_url}")

    return attempt(name, connection.base_url, run, "check base_url (the tenant: …/clouderp or …/qad-central)")


def browse_row(client: QadClient, connection: QadConnection, browse: Any) -> Check:
    browse_id = client.browse_id(browse)
    name = f"Browse {browse.name}"

    def run() -> Check:
        from shared.http import HttpFailure
        from shared.outcomes import PermanentFailure

        try:
            rows = client.browse_page(browse, size=1)
        except (HttpFailure, PermanentFailure) as refused:
            return failed(name, f"{browse_id}: {refused}",
                          f"check that browse {browse_id} exists and that {connection.username} may run it; a "
                          f"renamed browse goes under browses.{browse.name}")
        return passed(name, f"{browse_id} answered {len(rows)} row{'' if len(rows) == 1 else 's'} in domain "
                            f"{connection.domain}")

    return attempt(name, connection.base_url, run, f"check browse {browse_id}")
