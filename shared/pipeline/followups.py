"""Scheduled follow-ups per job: one delayed message that comes due and checks what became of a send.

One message kind (``job.followup``, on the notifications queue) serves two checks, named by its
``followup`` field:

- ``reconcile``: Twilio's status callbacks do get lost. Each SMS or call sent schedules one follow-up,
  due ``reconcile_after_minutes`` later (per Twilio connection; 0 turns it off). Its handle is kept on the
  job (``RECONCILE_HANDLE``), written with the send, and the status callback that makes the job final
  deletes the follow-up with it: one queue operation, and nothing comes due. When that delete finds nothing
  (due already, taken, the queue unreachable), the follow-up comes due and the job is read; a job already
  final costs that one read and nothing else. A job still ``queued``,
  ``accepted`` or ``sent`` (calls: ``queued``, ``ringing``, ``in-progress``) has its message or call
  fetched from Twilio by its SID, and what Twilio says is recorded as a status callback would be
  (forward only), audited ``status`` with ``source: reconciliation``. A send Twilio still reports as
  unsettled is asked about again, ``RECONCILE_ROUNDS`` times at most.
- ``escalation``: the next step of a rule's escalation policy (``shared.pipeline.escalation``).

A follow-up carries when it is due (``due_at``). A queue that cannot hide a message that long brings it
back early; it is then sent again for the rest of the wait, as a quiet-hours hold is. Nothing polls tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.channels.twilio.connection import TwilioConnection
from shared.config.loading import get_config
from shared.model import JOB_FOLLOWUP, NOTIFICATIONS, Envelope, moves_forward, parse_utc_time
from shared.outcomes import PermanentFailure, describe
from shared.pipeline.jobs import Step, change
from shared.pipeline.registry import handles
from shared.storage.bus import MAX_DELAY_SECONDS, MessageBus, get_bus
from shared.storage.tables import JobRow, Stores, get_stores

log = logging.getLogger(__name__)

Check = Callable[[Envelope], None]
_checks: dict[str, Check] = {}

# A follow-up back this little before it is due is taken as due (queue delays are whole seconds).
EARLY_TOLERANCE_SECONDS = 1.0
RECONCILE = "reconcile"
# On a job: the handle of its first reconciliation follow-up, while that may still be waiting.
RECONCILE_HANDLE = "reconcile_handle"
# How often one send is asked about while Twilio still reports it unsettled (no carrier receipt yet).
RECONCILE_ROUNDS = 3
# Statuses a send leaves on its own; a job still in one when its follow-up comes due may have lost callbacks.
UNSETTLED: Mapping[str, frozenset[str]] = {
    "sms": frozenset({"scheduled", "accepted", "queued", "sending", "sent"}),
    "voice": frozenset({"queued", "initiated", "ringing", "in-progress"}),
}


def followup(kind: str) -> Callable[[Check], Check]:
    """Register the check a follow-up of ``kind`` runs when it comes due."""
    def register(check: Check) -> Check:
        _checks[kind] = check
        return check

    return register


def schedule(bus: MessageBus, kind: str, connection: str, key: str, payload: Mapping[str, Any],
             correlation_id: str, due_at: datetime) -> None:
    """Put a follow-up of ``kind`` on the notifications queue, hidden until ``due_at``. ``key`` names it
    (the broker's duplicate detection drops a second one with the same key)."""
    _send_until(bus, _followup_envelope(kind, connection, key, payload, correlation_id, due_at), due_at)


def _followup_envelope(kind: str, connection: str, key: str, payload: Mapping[str, Any], correlation_id: str,
                       due_at: datetime) -> Envelope:
    return Envelope(JOB_FOLLOWUP, connection, key, {**payload, "followup": kind, "due_at": due_at.isoformat()},
                    correlation_id)


def _send_until(bus: MessageBus, envelope: Envelope, due_at: datetime) -> None:
    bus.send(NOTIFICATIONS, envelope, _wait_until(due_at))


def _wait_until(due_at: datetime) -> float:
    """The delay of a message due at ``due_at``, within what a queue can hide a message for."""
    return min(max((due_at - datetime.now(UTC)).total_seconds(), 0.0), MAX_DELAY_SECONDS)


def due_at_of(envelope: Envelope) -> datetime | None:
    raw = envelope.payload.get("due_at")
    try:
        return parse_utc_time(raw) if isinstance(raw, str) and raw else None
    except ValueError:
        return None


@handles(NOTIFICATIONS, JOB_FOLLOWUP)
def run_followup(envelope: Envelope) -> None:
    due = due_at_of(envelope)
    if due is not None and (due - datetime.now(UTC)).total_seconds() > EARLY_TOLERANCE_SECONDS:
        # Back before it is due (a queue holds a message a week at most): wait again for the rest, under a
        # message id of its own (the broker would drop a second message with the first one's).
        _send_until(get_bus(), replace(envelope, attempt=0, deferrals=envelope.deferrals + 1), due)
        return
    kind = str(envelope.payload.get("followup", ""))
    check = _checks.get(kind)
    if check is None:
        raise PermanentFailure(f"no check for a follow-up of kind {kind!r}")
    check(envelope)


# --- reconciliation ------------------------------------------------------------------------------


def schedule_reconciliation(connection: TwilioConnection, envelope: Envelope, sid: str) -> str | None:
    """After an SMS or call was sent: ask Twilio about it later, should its callbacks be lost. The follow-up's
    handle, for the job (``RECONCILE_HANDLE``), or None when none was scheduled."""
    minutes = connection.reconcile_after_minutes
    if minutes <= 0:
        return None
    payload = envelope.payload
    job_id = str(payload["job_id"])
    details = {"job_id": job_id, "channel": payload.get("channel"), "record": payload.get("record", ""),
               "provider_id": sid, "round": 1}
    due = datetime.now(UTC) + timedelta(minutes=minutes)
    followup_envelope = _followup_envelope(RECONCILE, connection.name, f"{job_id}|reconcile|{sid}|1", details,
                                           envelope.correlation_id, due)
    try:
        return get_bus().schedule(NOTIFICATIONS, followup_envelope, _wait_until(due))
    except Exception as error:  # noqa: BLE001 - the send is done: a retry could not schedule it either
        log.warning("job %s: its reconciliation was not scheduled (%s); its callbacks alone will settle it",
                    job_id, describe(error))
        return None


def settled(channel: str, status: str) -> bool:
    """Whether a send in ``status`` is final: nothing a reconciliation could learn of it."""
    return status not in UNSETTLED["voice" if channel == "voice" else "sms"]


def cancel_reconciliation(handle: str) -> None:
    """The reconciliation follow-up of a job that became final, deleted before it comes due. Should the
    delete not be done (the bus says why at debug), the follow-up comes due and finds the job final."""
    get_bus().cancel(NOTIFICATIONS, handle)


@followup(RECONCILE)
def reconcile(envelope: Envelope) -> None:
    """A job still unsettled when its follow-up comes due: what Twilio says of it now, recorded."""
    payload, stores = envelope.payload, get_stores()
    channel = "voice" if payload.get("channel") == "voice" else "sms"
    job = stores.jobs.get(str(payload.get("job_id", "")))
    if job is None or job.status not in UNSETTLED[channel]:
        return  # final already (its callbacks arrived), or never sent: one read, nothing else
    connection = get_config().connections.get(envelope.connection)
    if not isinstance(connection, TwilioConnection):
        raise PermanentFailure(f"no Twilio connection named {envelope.connection!r} in the configuration")
    from shared.channels.twilio.client import twilio_channel

    sid = str(job.fields.get("provider_id") or payload.get("provider_id") or "")
    found = twilio_channel(connection).fetch_status(sid, voice=channel == "voice")
    record_reconciled(stores, connection.name, job, found.sid, found.status.lower(), found.error_code,
                      envelope.correlation_id)
    rounds = int(payload.get("round") or 1)
    if found.status.lower() in UNSETTLED[channel] and rounds < RECONCILE_ROUNDS:
        due = datetime.now(UTC) + timedelta(minutes=connection.reconcile_after_minutes)
        schedule(get_bus(), RECONCILE, connection.name, f"{job.job_id}|reconcile|{sid}|{rounds + 1}",
                 {**payload, "round": rounds + 1}, envelope.correlation_id, due)


def record_reconciled(stores: Stores, connection: str, job: JobRow, sid: str, status: str, error_code: str,
                      correlation_id: str) -> None:
    """Twilio's status on the job as a status callback would put it: forward only, audited once per move."""
    def decide(row: JobRow) -> dict[str, Any] | None:
        if not moves_forward(row.status, status):
            return None  # a callback got there first, or Twilio says nothing new
        return {"status": status, "error_code": error_code or row.fields.get("error_code")}

    detail: dict[str, Any] = {"status": status, "provider_id": sid, "source": "reconciliation"}
    if error_code:
        detail["error_code"] = error_code
    change(stores, job, decide, step=Step("status", connection, detail,
                                          str(job.fields.get("correlation_id") or correlation_id)))
