"""The example ERP as a poll-framework adapter: tickets by their change counter; replies as comments.

Every create or update of a ticket takes the next value of the ERP's change counter, so a
``number`` cursor reads each change once: strictly after the last counter read, no overlap.
The page token is the API's own ``next_page_token``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.erp.polling import NUMBER, Note, Page, PageRequest, PolledEntity, Source
from shared.outcomes import PermanentFailure
from tests.example_erp.client import ExampleClient, example_client
from tests.example_erp.connection import ExampleConnection


def _read_tickets(client: ExampleClient, entity: PolledEntity, request: PageRequest) -> Page:
    after = request.since if isinstance(request.since, int) else None
    rows, token = client.changed_tickets(after, request.token, request.size)
    return Page(rows, token)


def _ticket_fields(row: Mapping[str, Any], context: object = None) -> dict[str, Any]:
    """What rules and templates see of a ticket."""
    return {"ticket_id": row.get("id"), "title": row.get("title"), "status": row.get("status"),
            "phone": row.get("phone")}


ENTITIES: Mapping[str, PolledEntity] = {
    "Tickets": PolledEntity(name="Tickets", keys=("id",), cursor=NUMBER, cursor_field="change", read=_read_tickets,
                            record_entity="Ticket", page_size=100, fields=_ticket_fields),
}


def open_source(connection: ExampleConnection) -> Source:
    # The client is the connection's process-wide one: nothing to close after a poll.
    return Source(client=example_client(connection), entities=ENTITIES)


def write_note(connection: ExampleConnection, note: Note) -> None:
    """A reply as a comment on its ticket; the provider's message id keeps a second write out."""
    if note.record_entity != "Ticket":
        raise PermanentFailure(f"example ERP notes cannot be written on {note.record_entity!r} records")
    text = f"{note.sender} ({note.received_at:%Y-%m-%d %H:%M} UTC): {note.text}"
    example_client(connection).add_comment(note.record_key, text, note.reference)
