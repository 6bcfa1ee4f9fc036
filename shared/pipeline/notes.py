"""Replies written back to the ERP: a supplier's SMS becomes a timestamped note on the record.

An inbound reply is recorded against the record the last message to that number was
about. When that record belongs to an ERP whose adapter can write notes, an ``erp.note``
is queued (keyed by the provider's message id), and this stage writes it once: the claim
is owned by a token the note carries, so its own retried attempts pass and a second
queueing of the same reply does not. A connection that cannot take notes although its kind
does (SYSPRO read through OData only) gets the reply audited ``note-not-written`` with the
reason instead.

Outcome notes (an ERP connection's ``outcome_notes``): an alert's SMS delivered or failed, its call
answered and the key pressed, become notes on the record too, through the same stage. Each is keyed
by its job and outcome, so a repeated callback or a retry writes it once. A record we wrote to is
remembered (``shared.pipeline.echoes``), so the change stamp our write moved is not news to the next poll.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared import kinds
from shared.config.loading import get_config
from shared.config.model import ConfigError
from shared.erp.polling import Note, note_writer, notes_unavailable
from shared.logs import mask_phone
from shared.model import CALLBACKS, ERP_NOTE, Envelope
from shared.outcomes import PermanentFailure
from shared.pipeline.echoes import remember_write
from shared.pipeline.registry import handles
from shared.storage.bus import MessageBus, get_bus
from shared.storage.tables import JobRow, LastContact, Stores, get_stores

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
    unavailable = notes_unavailable(connection) or _replies_unwanted(connection)
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
                reference=payload["reference"], outcome=bool(payload.get("outcome")))
    try:
        writer.write_note(connection, note)
    except PermanentFailure as failure:
        _audit(stores, envelope, record, "note-failed", reason=str(failure))
        raise
    # Before the audit: a retry after a failure here writes the note no second time (the ERP side finds it).
    remember_write(stores, connection.name, note.record_entity, note.record_key)
    detail = {"outcome": payload["outcome"]} if payload.get("outcome") else {}
    _audit(stores, envelope, record, "note-written", reference=note.reference, **detail)


def _audit(stores: Stores, envelope: Envelope, record: str, step: str, **detail: Any) -> None:
    stores.audit.append(envelope.correlation_id, step, connection=envelope.connection, record=record,
                        job_id=envelope.payload.get("job_id", ""), **detail)


def _replies_unwanted(connection: Any) -> str | None:
    """Why replies are not noted on this connection's records: an ERP whose adapter notes replies only
    when ``outcome_notes`` names them (Dynamics), and this one does not. None when they are."""
    if not getattr(note_writer(connection.kind), "REPLIES_ONLY_AS_OUTCOMES", False):
        return None
    wanted = getattr(connection, "outcome_notes", None)
    return None if wanted is not None and wanted.wants("reply") else \
        f"{connection.name}: replies are written back only when outcome_notes names reply"


# --- outcome notes ---------------------------------------------------------------------------------

# Twilio statuses as the outcomes a connection's ``outcome_notes.on`` names.
OUTCOME_OF_STATUS = {"delivered": "delivered", "read": "delivered", "failed": "failed", "undelivered": "failed",
                     "busy": "failed", "no-answer": "failed", "canceled": "failed", "completed": "answered"}
CHANNEL_NAMES = {"sms": "SMS", "voice": "call", "email": "email"}
STATUS_WORDS = {"undelivered": "failed", "read": "delivered", "completed": "answered", "no-answer": "not answered",
                "busy": "not answered (busy)"}


def queue_status_note(job: JobRow, status: str, error_code: str, correlation_id: str) -> bool:
    """Queue the outcome a status callback brings (an SMS delivered, a call answered or not) as a note on
    the job's record, where its connection wants that outcome noted. Queued again for a repeated callback:
    the write stage writes it once."""
    outcome = OUTCOME_OF_STATUS.get(status)
    if outcome is None:
        return False
    reason = f" (error {error_code})" if error_code and outcome == "failed" else ""
    shown = STATUS_WORDS.get(status, status)
    return _queue_outcome(job, outcome, correlation_id,
                          lambda who, at: f"{who} {shown} {at}{reason}")


def queue_key_note(job: JobRow, digits: str, correlation_id: str) -> bool:
    """Queue a key pressed on an alert's call as a note: "call to +1*******34 answered 10:02, key 1 pressed"."""
    pressed = f", key {digits} pressed" if digits else ""
    return _queue_outcome(job, "answered", correlation_id,
                          lambda who, at: f"{who} answered {at}{pressed}")


def _queue_outcome(job: JobRow, outcome: str, correlation_id: str,
                   say: Callable[[str, str], str]) -> bool:
    """One note per job and outcome: a call's key press and its completion are one "answered", the first
    to come; an SMS's delivered and read one "delivered"."""
    parts = split_record(str(job.fields.get("record") or ""))
    connection = _connection_named(parts[0]) if parts else None
    wanted = getattr(connection, "outcome_notes", None)
    if parts is None or connection is None or wanted is None or not wanted.wants(outcome):
        return False
    if note_writer(connection.kind) is None or notes_unavailable(connection):
        return False
    now = datetime.now(UTC)
    channel = str(job.fields.get("channel") or "sms")
    who = f"{CHANNEL_NAMES.get(channel, channel)} to {mask_phone(str(job.fields.get('to') or ''))}"
    text = say(who, _clock(now, connection))
    reference = f"{job.job_id[:12]}-{outcome}"
    get_bus().send(CALLBACKS, Envelope(ERP_NOTE, connection.name, f"outcome|{job.job_id}|{outcome}", {
        "record_entity": parts[1], "record_key": parts[2], "text": text, "sender": "",
        "reference": reference, "received_at": now.isoformat(), "job_id": job.job_id, "outcome": outcome,
        "claim_owner": uuid.uuid4().hex,
    }, correlation_id=str(job.fields.get("correlation_id") or correlation_id)))
    return True


def _connection_named(name: str) -> Any:
    """The connection a job's record belongs to; None without a configuration to read it from (a status
    is still applied to its job: the outcome note is what is left out)."""
    try:
        return get_config().connections.get(name)
    except ConfigError as error:
        log.warning("no outcome note for a record of %s: %s", name, error.errors[0] if error.errors else error)
        return None


def _clock(moment: datetime, connection: Any) -> str:
    """``10:02 UTC``: the time of day in the ERP's own time zone (its poll's), as people there read it."""
    poll = getattr(connection, "poll", None)
    local = moment.astimezone(poll.zone) if poll is not None else moment
    return f"{local:%H:%M} {local.tzname()}"
