"""callbacks: what Twilio tells us after a send, and what recipients answer.

- Status: the job's status moves forward only (a late ``sent`` never overwrites
  ``delivered``), so a repeated or out-of-order callback changes nothing and is not
  audited twice; that order is the deduplication. A late callback of a send that a replay
  replaced changes nothing either. The job is found by the job id in the
  (signed) callback URL, or by the provider id's link; when the sender stopped before
  linking, the link and the number's last contact are written here. A callback whose URL
  names its job is applied by the webhook itself (``apply_status``), queued only when
  storage is slow. The callback that makes the job final deletes its reconciliation
  follow-up, which then never comes due.
- Inbound SMS: STOP / START / HELP keywords, Verify codes, and any other reply, which
  is recorded against the record the last message to that number was about, and written
  back to that record as a note where its ERP takes notes.
- Key presses on a voice call (``<Gather>``): 1 acknowledges the alert.
- Voice messages: a recording Twilio transcribed is recorded, like an SMS reply, against the
  record the last message to the caller's number was about, and noted there with its
  transcription and the recording's link; the text is sealed in the audit and never logged.
- Outcome notes: where the record's ERP connection asks for them, a delivered or failed SMS, an
  answered call and its key press are queued as notes on the record (``shared.pipeline.notes``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from shared.channels.twilio.connection import TwilioConnection
from shared.config.loading import get_config
from shared.logs import mask_phone
from shared.model import (
    CALLBACKS,
    TWILIO_GATHER,
    TWILIO_INBOUND,
    TWILIO_STATUS,
    TWILIO_VOICE_MESSAGE,
    Envelope,
    moves_forward,
)
from shared.outcomes import PermanentFailure, RetryLater
from shared.pipeline.escalation import acknowledge_key_press, acknowledge_reply
from shared.pipeline.followups import RECONCILE_HANDLE, cancel_reconciliation, settled
from shared.pipeline.jobs import Step, change
from shared.pipeline.notes import queue_key_note, queue_note, queue_status_note
from shared.pipeline.registry import handles
from shared.pipeline.verify import check_gate, looks_like_code
from shared.storage.bus import get_bus
from shared.storage.tables import JobRow, LastContact, Stores, get_stores

log = logging.getLogger(__name__)

# Twilio's default opt-out and opt-in keywords (whole message, any case).
OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN = frozenset({"START", "UNSTOP", "YES"})
HELP = frozenset({"HELP", "INFO"})
MAX_REPLY_CHARS = 1000
UNLINKED_RETRY_SECONDS = 2.0
INBOUND_SCOPE = "twilio-inbound"


def _twilio_connection(name: str) -> TwilioConnection:
    connection = get_config().connections.get(name)
    if not isinstance(connection, TwilioConnection):
        raise PermanentFailure(f"no Twilio connection named {name!r} in the configuration")
    return connection


@handles(CALLBACKS, TWILIO_STATUS)
def record_status(envelope: Envelope) -> None:
    apply_status(get_stores(), envelope.connection, envelope.payload["params"], envelope.payload.get("job_id") or "",
                 envelope.correlation_id)


def apply_status(stores: Stores, connection: str, params: Mapping[str, str], job_id: str,
                 correlation_id: str) -> None:
    """Move the job of a status callback forward and audit it; a repeated or late one changes nothing.
    ``job_id``: the job the callback URL names ("" when it names none). RetryLater while no job is
    known for the message yet."""
    sid = params.get("MessageSid") or params.get("CallSid") or ""
    status = (params.get("MessageStatus") or params.get("CallStatus") or "").lower()
    job = _job_of_callback(stores, connection, sid, job_id)
    if job is None:
        return
    taken_as_recorded = job.fields.get("provider_id") == sid  # found without the provider-id lookup
    followup: dict[str, str] = {}  # the reconciliation follow-up this callback's write makes needless

    def decide(row: JobRow) -> dict[str, Any] | None:
        if taken_as_recorded and row.fields.get("provider_id") != sid:
            raise _NotAsRead  # the job moved on since it was read (a replay): the link decides after all
        followup.clear()
        if replaced(row, sid) or not moves_forward(row.status, status):
            return None  # a repeated or late callback: that order is the deduplication
        changes = {"status": status, "error_code": params.get("ErrorCode") or row.fields.get("error_code")}
        if not row.fields.get("provider_id"):
            changes["provider_id"] = sid  # the sender stopped before recording it on the job
        handle = row.fields.get(RECONCILE_HANDLE)
        if handle and settled(str(row.fields.get("channel") or ""), status):
            changes[RECONCILE_HANDLE] = None  # deleted below, once this write is done
            followup["handle"] = str(handle)
        return changes

    detail: dict[str, Any] = {"status": status, "provider_id": sid}
    if params.get("ErrorCode"):
        detail["error_code"] = params["ErrorCode"]
    if params.get("CallDuration"):
        detail["duration"] = params["CallDuration"]

    def step_of(job: JobRow) -> Step:
        """The job's correlation id and record, else the callback's: the step is written with the status."""
        return Step("status", connection, detail, str(job.fields.get("correlation_id") or correlation_id))

    try:
        written = change(stores, job, decide, step=step_of(job))
    except _NotAsRead:
        taken_as_recorded = False
        job = _job_of_callback(stores, connection, sid, job_id, trust_job=False)
        if job is None:
            return
        written = change(stores, job, decide, step=step_of(job))
    if written is None:
        if job.status == status:  # a repeat: its outcome note is queued again, and written once
            queue_status_note(job, status, params.get("ErrorCode") or "", correlation_id)
        return
    queue_status_note(written, status, params.get("ErrorCode") or "", correlation_id)
    if followup:
        cancel_reconciliation(followup["handle"])


def replaced(job: JobRow, sid: str) -> bool:
    """Whether ``sid`` is a send of ``job`` that a replay replaced: its late callbacks are not the job's progress."""
    return sid in (job.fields.get("previous_provider_ids") or [])


def _ignored_as_replaced(job: JobRow, sid: str) -> bool:
    """``replaced``, said in the log: the callback that found ``job`` is then ignored."""
    if not replaced(job, sid):
        return False
    log.info("a status callback for %s, a send of job %s that a replay replaced: ignored", sid, job.job_id)
    return True


class _NotAsRead(Exception):
    """The job a callback found by its provider id no longer records that id: its link decides after all."""


def _job_of_callback(stores: Stores, connection: str, sid: str, job_id: str, trust_job: bool = True) -> JobRow | None:
    """The job a status callback is about, as read now; None to ignore the callback.

    The URL's ``job`` is signed by Twilio. A job that records ``sid`` as its provider id has its link
    and its number's last contact in place, since whoever records the provider id (the send, the
    adoption of an earlier send, a callback that repairs a missing link) writes those first: it is
    taken as it is (``trust_job``), without the provider-id lookup. Otherwise the provider id's link
    decides, and without one the job named in the URL is linked now (the sender stopped before linking).
    """
    # As this process last wrote it (the send, an earlier callback) when it can: the status is then
    # written under that ETag, and read again only if another instance changed the job meanwhile.
    named = (stores.jobs.recent(job_id) or stores.jobs.get(job_id)) if job_id else None
    if trust_job and named is not None and named.fields.get("provider_id") == sid:
        return named
    link = stores.contacts.job_of_sid(connection, sid)
    if link is not None:
        job = named if named is not None and link.job_id == named.job_id else stores.jobs.get(link.job_id)
        if job is not None and _ignored_as_replaced(job, sid):
            return None
        if job is not None and not job.fields.get("provider_id"):
            # This callback records the provider id: a link in ``providerids`` was written apart from its last
            # contact, and the sender may have stopped between the two, so the contact is written first (an
            # upsert, as the sender's).
            _remember_contact(stores, connection, job)
        return job
    if named is not None and named.remembered:
        named = stores.jobs.get(named.job_id)  # what to link is decided on the job as it is now
    return _link_job_named_in_url(stores, connection, sid, named)


def _link_job_named_in_url(stores: Stores, connection: str, sid: str, job: JobRow | None) -> JobRow | None:
    """The job named by the callback URL's ``job``, linked to ``sid`` now; None to ignore the callback.

    Without ``job`` (or before its job exists) Twilio may have called back before the sender
    linked the sid: wait a little.
    """
    if job is None:
        raise RetryLater(UNLINKED_RETRY_SECONDS, f"no job is linked to {sid} (yet)")
    if _ignored_as_replaced(job, sid):
        return None
    if job.fields.get("provider_id") not in (None, "", sid):
        # An earlier try of this job that was not adopted: its progress is not the job's.
        log.warning("a status callback for %s, which is not the message or call of job %s", sid, job.job_id)
        return None
    _remember_contact(stores, connection, job, sid)  # upserts: repeating them is harmless
    return job


def _remember_contact(stores: Stores, connection: str, job: JobRow, sid: str = "") -> None:
    """The job as the last contact of its number, so that a reply lands on its record; with ``sid``, its message
    or call linked to it in the same write."""
    stores.contacts.remember(connection, str(job.fields.get("to") or ""), LastContact(
        job.job_id, job.fields.get("record", ""), job.fields.get("correlation_id", "")), sid=sid)


@handles(CALLBACKS, TWILIO_INBOUND)
def record_inbound(envelope: Envelope) -> None:
    params = envelope.payload["params"]
    connection = _twilio_connection(envelope.connection)
    number, body = params.get("From", ""), (params.get("Body") or "").strip()
    stores = get_stores()
    message_sid = params.get("MessageSid", "")
    # Twilio posts again what it thinks went unanswered: one SMS is acted on once.
    if message_sid and not stores.dedup.claim(INBOUND_SCOPE, message_sid, owner=envelope.correlation_id):
        _audit_reply(stores, envelope, connection.name, number, "duplicate", message_sid=message_sid)
        return
    keyword = body.upper()
    if keyword in OPT_OUT or keyword in OPT_IN:
        opted_out = keyword in OPT_OUT
        stores.opt_outs.record(connection.name, number, opted_out, keyword)
        _audit_reply(stores, envelope, connection.name, number, "opted-out" if opted_out else "opted-in",
                     keyword=keyword)
        return
    if keyword in HELP:
        _audit_reply(stores, envelope, connection.name, number, "help", keyword=keyword)
        return
    code = looks_like_code(body)
    if code and stores.gates.find(connection.name, number) is not None:
        from shared.channels.twilio.client import twilio_channel

        check_gate(stores, get_bus(), twilio_channel(connection), connection.name, number, code)
        return
    text = body[:MAX_REPLY_CHARS]
    last = _audit_reply(stores, envelope, connection.name, number, "reply", text=text, message_sid=message_sid)
    queue_note(get_bus(), last, text, mask_phone(number), message_sid,
               last.correlation_id if last else envelope.correlation_id, stores=stores)
    acknowledge_reply(stores, connection.name, number, body, last.job_id if last else "", message_sid)


@handles(CALLBACKS, TWILIO_VOICE_MESSAGE)
def record_voice_message(envelope: Envelope) -> None:
    params = envelope.payload["params"]
    connection = _twilio_connection(envelope.connection)
    number, recording_sid = params.get("From", ""), params.get("RecordingSid", "")
    stores = get_stores()
    # Twilio posts the transcription again when it thinks we did not take it: one message, noted once.
    if not stores.dedup.claim(INBOUND_SCOPE, recording_sid, owner=envelope.correlation_id):
        _audit_reply(stores, envelope, connection.name, number, "duplicate", recording_sid=recording_sid)
        return
    transcribed = (params.get("TranscriptionStatus") or "completed").lower() == "completed"
    text = " ".join((params.get("TranscriptionText") or "").split())[:MAX_REPLY_CHARS] if transcribed else ""
    recording = params.get("RecordingUrl", "")
    last = _audit_reply(stores, envelope, connection.name, number, "voice-message", text=text,
                        recording_sid=recording_sid, recording_url=recording,
                        transcription=params.get("TranscriptionStatus") or "completed")
    queue_note(get_bus(), last, voice_note_text(text, recording), mask_phone(number), recording_sid,
               last.correlation_id if last else envelope.correlation_id, stores=stores)


def voice_note_text(transcription: str, recording_url: str) -> str:
    """The note a voice message leaves: what Twilio heard, and where the recording is."""
    heard = transcription or "(no transcription)"
    return f"Voice message: {heard} Recording: {recording_url}" if recording_url else f"Voice message: {heard}"


def _audit_reply(stores: Stores, envelope: Envelope, connection: str, number: str, step: str,
                 **detail: Any) -> LastContact | None:
    """Record an answer against what the last message to that number was about; that last contact."""
    last = stores.contacts.last(connection, number)
    stores.audit.append(last.correlation_id if last else envelope.correlation_id, step, connection=connection,
                        record=last.record if last else "", job_id=last.job_id if last else "",
                        **{"from": mask_phone(number), **detail})
    return last


@handles(CALLBACKS, TWILIO_GATHER)
def record_key_press(envelope: Envelope) -> None:
    params: Mapping[str, str] = envelope.payload["params"]
    job_id = envelope.payload.get("job_id", "")
    stores = get_stores()
    job = stores.jobs.get(job_id)
    if job is None:
        log.warning("a key press for job %s, which does not exist", job_id)
        return
    digits = params.get("Digits", "")
    stores.audit.append(job.fields.get("correlation_id", envelope.correlation_id),
                        "acknowledged" if digits == "1" else "key-pressed", connection=envelope.connection,
                        record=job.fields.get("record", ""), job_id=job_id, digits=digits,
                        provider_id=params.get("CallSid", ""))
    queue_key_note(job, digits, envelope.correlation_id)
    if digits == "1":
        acknowledge_key_press(stores, envelope.connection, job, params.get("CallSid", "") or job_id)
