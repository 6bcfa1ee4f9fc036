"""The Dynamics fallback poll as a poll-framework adapter: OData rows by ``ModifiedDateTime``;
approval decisions written back to workflow work items; and, where a connection asks for them,
outcome notes (and replies) as document attachments of type Note on the record's document.

Business events are the normal path; entities whose events are not activated are polled.
F&O's OData date-times are UTC, and server paging is followed through ``@odata.nextLink``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from shared.erp.dynamics.client import (
    DynamicsClient,
    complete_work_item,
    dynamics_client,
    odata_datetime,
    odata_string,
    work_item_is_open,
)
from shared.erp.dynamics.connection import DynamicsConnection
from shared.erp.dynamics.events import POLLED, polled_fact
from shared.erp.dynamics.events import PolledEntity as ODataEntity
from shared.erp.polling import TIME, FindFact, Finding, Note, Page, PageRequest, PolledEntity, RecordFields, Source
from shared.outcomes import PermanentFailure


def _read_page(client: DynamicsClient, entity: PolledEntity, request: PageRequest) -> Page:
    spec = POLLED[entity.name]
    url = request.token or client.query_url(spec.entity_set, _first_page_options(spec, request.since))
    rows, next_link = client.page(url)
    return Page(rows, next_link)


def _first_page_options(spec: ODataEntity, since: Any) -> dict[str, str | None]:
    if not isinstance(since, datetime | date):
        raise ValueError(f"a Dynamics poll needs a date-time lower bound, not {since!r}")
    moment = since if isinstance(since, datetime) else datetime(since.year, since.month, since.day)
    select = tuple(dict.fromkeys((*spec.keys, spec.stamp_field, *spec.fields)))
    return {
        "$filter": f"{spec.stamp_field} ge {odata_datetime(moment.replace(tzinfo=UTC))}",
        "$orderby": f"{spec.stamp_field} asc",
        "$select": ",".join(select),
        "cross-company": "true",
    }


def _record_fields(spec: ODataEntity) -> RecordFields:
    def fields(row: Mapping[str, Any], context: object = None) -> dict[str, Any]:
        renamed = {target: row.get(source) for source, target in spec.fields.items()}
        return {**{name: value for name, value in row.items() if not name.startswith("@")}, **renamed}

    return fields


def _fact(spec: ODataEntity) -> FindFact:
    def find(connection: str, row: Mapping[str, Any], record: Mapping[str, Any]) -> Finding | None:
        found = polled_fact(spec, connection, row, record)
        return Finding(*found) if found else None

    return find


ENTITIES: Mapping[str, PolledEntity] = {
    name: PolledEntity(name=name, keys=spec.keys, cursor=TIME, cursor_field=spec.stamp_field, read=_read_page,
                       record_entity=spec.record_entity, record_key=spec.record_key, fields=_record_fields(spec),
                       fact=_fact(spec) if spec.fact else None)
    for name, spec in POLLED.items()
}


def open_source(connection: DynamicsConnection) -> Source:
    # The client is the process-wide one of this connection: its token is shared, so nothing to close.
    return Source(client=dynamics_client(connection), entities=ENTITIES)


def decision_open(connection: DynamicsConnection, item: str) -> bool:
    """Whether the work item still waits for its assignee (not completed or recalled elsewhere)."""
    return work_item_is_open(dynamics_client(connection), item)


def write_decision(connection: DynamicsConnection, item: str, outcome: str, comment: str) -> None:
    """Complete the work item with the outcome (Approve, Reject) and a comment saying who and how."""
    complete_work_item(dynamics_client(connection), item, outcome, comment)


NOTE_NAME = "Alert outcome"
# Replies become notes on Dynamics records only where outcome_notes names them (F&O took none before).
REPLIES_ONLY_AS_OUTCOMES = True


def notes_unavailable(connection: DynamicsConnection) -> str | None:
    """Dynamics records take notes only where the connection turned outcome notes on."""
    wanted = connection.outcome_notes
    if wanted is None or not wanted.enabled:
        return f"{connection.name}: outcome notes are off for this Dynamics connection"
    return None


def write_note(connection: DynamicsConnection, note: Note) -> None:
    """The note as a document attachment of type Note on the record's document, written once: an attachment
    already carrying the note's reference (a try whose answer was lost) is not written again."""
    names = connection.attachments
    company, _, document = note.record_key.partition("|")
    if not company or not document:
        raise PermanentFailure(f"{connection.name}: {note.record_key!r} is not a company|document key")
    client = dynamics_client(connection)
    name = f"{NOTE_NAME} {note.reference}"[:60] if note.outcome else f"SMS reply {note.reference}"[:60]
    if _attachment_exists(client, connection, company, name):
        return
    client.create(names.entity_set, {
        names.company_field: company, names.entity_field: note.record_entity, names.key_field: document,
        names.type_field: names.note_type, names.name_field: name, names.text_field: _note_text(note),
        names.restriction_field: names.restriction})


def _attachment_exists(client: DynamicsClient, connection: DynamicsConnection, company: str, name: str) -> bool:
    names = connection.attachments
    found = client.query(names.entity_set, top=1, select=(names.name_field,),
                         filter=f"{names.company_field} eq {odata_string(company)} and "
                                f"{names.name_field} eq {odata_string(name)}")
    return next(iter(found), None) is not None


def _note_text(note: Note) -> str:
    if note.outcome:
        return note.text
    return f"SMS reply from {note.sender} at {note.received_at:%Y-%m-%d %H:%M} UTC: {note.text}"
