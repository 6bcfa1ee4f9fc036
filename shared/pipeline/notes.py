"""Replies written back to the ERP: a supplier's SMS becomes a timestamped note on the record.

An inbound reply is recorded against the record the last message to that number was
about. When that record belongs to an ERP whose adapter can write notes, an ``erp.note``
is queued (keyed by the provider's message id), and this stage writes it once: the claim
is owned by a token the note carries, so its own retried attempts pass and a second
queueing of the same reply does not. A connection that cannot take notes although its kind
does (SYSPRO read through OData only) gets the reply audited ``note-not-written`` with the
reason instead.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from shared import kinds
from shared.config.loading import get_config
from shared.erp.polling import Note, note_writer, notes_unavailable
from shared.model import CALLBACKS, ERP_NOTE, Envelope
from shared.outcomes import PermanentFailure
from shared.pipeline.registry import handles
from shared.storage.bus import MessageBus
from shared.storage.tables import LastContact, Stores, get_stores

log = logging.getLogger(__name__)

NOTE_SCOPE = "note"


def split_record(record: str) -> tuple[str, str, str] | None:
    """``connection|entity|key`` (the key may hold further ``|``) as its three parts."""
    parts = record.split("|", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


def writes_notes(kind: str) -> bool:
    found = kinds.ERPS.get(kind)
    return found is not None and found.notes


def queue_note(bus: MessageBus, last: LastContact | None, text: str, sender: str, message_id: str,
               correlation_id: str, *, stores: Stores | None = None) -> bool:
    """Queue the reply as a note on the record ``last`` was about, if that ERP takes notes.

    A connection whose kind takes notes but which cannot (its configuration says why) gets the reply
    audited on the record as ``note-not-written`` with that reason, so the operator sees it was not lost.
    """
    parts = split_record(last.record) if last else None
    if last is None or parts is None or not text or not message_id:
        return False
    connection = get_config().connections.get(parts[0])
    if connection is None or not writes_notes(connection.kind):
        return False
    unavailable = notes_unavailable(connection)
    if unavailable:
        (stores or get_stores()).audit.append(correlation_id, "note-not-written", connection=connection.name,
                                              record=last.record, job_id=last.job_id, reference=message_id,
                                              reason=unavailable)
        return False
    bus.send(CALLBACKS, Envelope(ERP_NOTE, connection.name, f"note|{message_id}", {
        "record_entity": parts[1], "record_key": parts[2], "text": text, "sender": sender,
        "reference": message_id, "received_at": datetime.now(UTC).isoformat(),
        "job_id": last.job_id,
        # Owns the claim below: this note's own retries pass it, a second queueing of it does not.
        "claim_owner": uuid.uuid4().hex,
    }, correlation_id=correlation_id))
    return True


@handles(CALLBACKS, ERP_NOTE)
def write_reply_note(envelope: Envelope) -> None:
    config, stores = get_config(), get_stores()
    connection = config.connections.get(envelope.connection)
    writer = note_writer(connection.kind) if connection is not None else None
    if connection is None or writer is None:
        raise PermanentFailure(f"{envelope.connection!r} is not an ERP connection that takes notes")
    payload = envelope.payload
    record = f"{connection.name}|{payload['record_entity']}|{payload['record_key']}"
    if not stores.dedup.claim(NOTE_SCOPE, envelope.key, owner=payload.get("claim_owner") or envelope.correlation_id):
        _audit(stores, envelope, record, "duplicate", reference=payload["reference"])
        return
    note = Note(record_entity=payload["record_entity"], record_key=payload["record_key"], text=payload["text"],
                received_at=datetime.fromisoformat(payload["received_at"]), sender=payload["sender"],
                reference=payload["reference"])
    try:
        writer.write_note(connection, note)
    except PermanentFailure as failure:
        _audit(stores, envelope, record, "note-failed", reason=str(failure))
        raise
    _audit(stores, envelope, record, "note-written", reference=note.reference)


def _audit(stores: Stores, envelope: Envelope, record: str, step: str, **detail: Any) -> None:
    stores.audit.append(envelope.correlation_id, step, connection=envelope.connection, record=record,
                        job_id=envelope.payload.get("job_id", ""), **detail)
