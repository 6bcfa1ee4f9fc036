"""The Verify gate: an action that happens only after a one-time passcode is approved.

A rule with ``verify: true`` holds its job: a Twilio Verify code goes to the recipient by
SMS, the job waits as ``verifying``, and the notification is released only when a check
of the code comes back ``approved`` (from an SMS reply, or ``POST /api/twilio/verify``).
Every step is audited. Other flows (a Slack approval) open a gate the same way.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from shared.logs import mask_phone
from shared.model import NOTIFICATIONS, Envelope
from shared.pipeline.jobs import merge
from shared.storage.bus import MessageBus
from shared.storage.tables import Gate, Stores

if TYPE_CHECKING:
    from shared.pipeline.jobs import JobAttempt

CODE = re.compile(r"^\s*(\d{4,10})\s*$")


def looks_like_code(text: str) -> str | None:
    match = CODE.match(text or "")
    return match.group(1) if match else None


def start_gate(delivery: JobAttempt, channel: Any, number: str) -> None:
    """Send a code to ``number`` and park the job until it is checked."""
    if delivery.job.status == "verifying":
        return  # a code is already on its way; a second would only confuse
    # The gate opens before the code is sent: a reply may come back faster than we can record it.
    delivery.stores.gates.open(delivery.connection.name, number,
                               Gate(delivery.job_id, delivery.envelope.to_json()))
    result = channel.start_verification(number)
    delivery.update(status="verifying", verification_sid=result.sid, to=number)
    delivery.audit("verify-started", verification_sid=result.sid, to=mask_phone(number))


def check_gate(stores: Stores, bus: MessageBus, channel: Any, connection: str, number: str, code: str) -> str:
    """Check a code for the gate open on ``number``; release its job only when approved.

    Returns Twilio's verification status, or "no-gate" when nothing waits on that number.
    """
    gate = stores.gates.find(connection, number)
    if gate is None:
        return "no-gate"
    envelope = Envelope.from_json(gate.envelope_json)
    audit_detail = {"job_id": gate.job_id, "record": envelope.payload.get("record", ""), "connection": connection}
    job = stores.jobs.get(gate.job_id)
    if job is None or not job.fields.get("verified"):
        status = channel.check_verification(number, code)
        stores.audit.append(envelope.correlation_id, "verify-checked", status=status, to=mask_phone(number),
                            **audit_detail)
        if status != "approved":
            if status in ("expired", "max_attempts_reached", "canceled", "failed"):
                stores.gates.close(connection, number)
                stores.audit.append(envelope.correlation_id, "verify-failed", status=status, **audit_detail)
            return status
        # Twilio answers an approved code once: the approval is on the job before anything else,
        # so a retry after a stop here releases the job instead of asking Twilio again.
        merge(stores, gate.job_id, {"verified": True})
    stores.gates.close(connection, number)
    # A key of its own: under the original one, Service Bus duplicate detection would drop the release.
    bus.send(NOTIFICATIONS, replace(envelope, key=f"{envelope.key}|verified"))
    stores.audit.append(envelope.correlation_id, "verify-approved", **audit_detail)
    return "approved"
