"""SMS and voice calls through Twilio: one job, one message or call, never two.

The job is claimed (``dispatching``, ETag-conditional: of two deliveries one sends). A job that
already reached Twilio is never sent again. After an ambiguous failure (Twilio may have created
the message or call before the connection broke) or a delivery that went silent, the next
attempt first asks Twilio whether the message or call exists, and adopts it when it does.

Status callbacks carry the job id in their URL, and a send is linked to its job (provider
id, last contact) before the job row records it: a stop between the two steps never
leaves a callback without its job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from shared.channels.twilio.connection import TwilioConnection
from shared.config.model import Rule
from shared.logs import mask_phone
from shared.model import Envelope, now_iso
from shared.outcomes import RetryLater
from shared.pipeline.consent import suppression, withdrawal_for
from shared.pipeline.followups import RECONCILE_HANDLE, schedule_reconciliation
from shared.pipeline.jobs import (
    AMBIGUOUS_RECHECK_SECONDS,
    JobAttempt,
    Step,
    deadline_of,
    open_claimed_job,
    open_job,
    reached_provider,
    record_send,
)
from shared.pipeline.pacing import pace_sms
from shared.settings import public_url
from shared.storage.tables import JobRow, LastContact, Stores
from shared.templates import Template, fit_sms, voice_twiml
from shared.templates import render as render_template

# Twilio stamps date_created with its own clock: look back this much further than our dispatch start.
CLOCK_SKEW_SECONDS = 60.0


class Delivery(JobAttempt):
    """One attempt at one SMS or call job."""

    connection: TwilioConnection
    # This delivery waited for its send slot already (a first delivery whose job existed after all).
    paced = False

    def run(self) -> None:
        from shared.channels.twilio.client import twilio_channel
        from shared.phones import InvalidNumber, normalize_number

        status = self.job.status
        if reached_provider(self.job):
            self.audit("duplicate", reason=f"job already {status}; not sent again")
            return
        try:
            number = normalize_number(str(self.payload.get("to", "")), self.connection.default_region)
        except InvalidNumber as exc:
            self.finish("failed", "failed", reason=str(exc), to=mask_phone(str(self.payload.get("to", ""))))
            return
        withdrawn = withdrawal_for(self.stores, self.connection.name, number, self.payload)
        if withdrawn is not None:
            self.finish("suppressed", "suppressed", to=mask_phone(number), **suppression(withdrawn))
            return
        channel = twilio_channel(self.connection)
        if status == "dispatching":
            self.wait_for_live_dispatch()
            if self.adopt_earlier_send(channel, number):
                return
        if self.payload.get("verify") and not self.job.fields.get("verified"):
            from shared.pipeline.verify import start_gate

            start_gate(self, channel, number)
            return
        if not self.paced:
            pace_sms(self.stores.pacing, self.connection, self.payload)  # a burst waits in our queue, not Twilio's
        self.claim_dispatch(number)
        self.send(channel, number)

    def adopt_earlier_send(self, channel: Any, number: str) -> bool:
        """A job left dispatching (a crash, or an ambiguous error): did Twilio create it after all?"""
        started = datetime.fromisoformat(self.job.fields.get("dispatch_started") or now_iso())
        since = started - timedelta(seconds=CLOCK_SKEW_SECONDS)
        if self.payload.get("channel") == "voice":
            found = channel.find_placed_call(number, since, skip=self.belongs_to_another_job)
        else:
            found = channel.find_sent_message(number, self.payload.get("text", ""), since,
                                              skip=self.belongs_to_another_job)
        if found is None:
            return False
        self.record_sent(number, found.sid, found.status, adopted=True)
        return True

    def belongs_to_another_job(self, provider_id: str) -> bool:
        """A message or call already linked to another job is never adopted by this one."""
        link = self.stores.contacts.job_of_sid(self.connection.name, provider_id)
        return link is not None and link.job_id != self.job_id

    def send(self, channel: Any, number: str) -> None:
        from shared.channels.twilio.client import AmbiguousSendError, PermanentSendError

        # The job id in the URL lets a callback find its job even before the provider id is linked.
        callback = public_url(f"api/twilio/status/{self.connection.name}?job={self.job_id}")
        try:
            if self.payload.get("channel") == "voice":
                gather = public_url(f"api/twilio/gather/{self.connection.name}?job={self.job_id}") \
                    if self.payload.get("gather") else None
                result = channel.place_call(number, voice_twiml(self.payload.get("say", ""), gather), callback)
            else:
                # Twilio drops the SMS rather than send it past its rule's deadline (deliver checks ours).
                result = channel.send_sms(number, self.payload.get("text", ""), callback,
                                          valid_until=deadline_of(self.payload))
        except PermanentSendError as exc:
            if exc.opted_out:
                self.stores.opt_outs.record(self.connection.name, number, True, "21610")
                self.finish("suppressed", "suppressed", reason=str(exc), error_code=exc.code, to=mask_phone(number),
                            withdrawn_by="21610", withdrawn_at=now_iso())
            else:
                self.finish("failed", "failed", reason=str(exc), error_code=exc.code, to=mask_phone(number))
            return
        except AmbiguousSendError as exc:
            # Leave the job dispatching: the next attempt asks Twilio before sending again.
            self.update(ambiguous=True)
            raise RetryLater(AMBIGUOUS_RECHECK_SECONDS, f"outcome unknown: {exc}") from None
        except RetryLater:
            self.update(status="pending")  # nothing was sent; the next attempt starts clean
            raise
        self.record_sent(number, result.sid, result.status)

    def record_sent(self, number: str, sid: str, status: str, adopted: bool = False) -> None:
        # The link and the last contact first (one transaction), the job second: a stop in between leaves a job
        # still dispatching that callbacks (and the next attempt's lookup) can find and move on.
        self.stores.contacts.remember(self.connection.name, number, LastContact(
            self.job_id, self.payload.get("record", ""), self.envelope.correlation_id), sid=sid)
        # Scheduled before the job records the send, so that its handle goes in that same write; a stop in
        # between leaves a follow-up that finds the job still dispatching and does nothing.
        handle = schedule_reconciliation(self.connection, self.envelope, sid)
        detail = {"provider_id": sid, "status": status, "channel": self.payload.get("channel"),
                  "to": mask_phone(number)}
        self.mark_sent(sid, status, self.step("sent", **({**detail, "adopted": True} if adopted else detail)), handle)

    def mark_sent(self, sid: str, status: str, step: Step, reconcile_handle: str | None = None) -> None:
        """Put the provider id on the job, with its ``sent`` step (and its reconciliation follow-up's handle); a
        status callback may have moved it meanwhile, and the furthest status is kept."""
        followup = {RECONCILE_HANDLE: reconcile_handle} if reconcile_handle else {}
        self.job = record_send(self.stores, self.job, status, step, provider_id=sid, sent_at=now_iso(), **followup)


def render(rule: Rule, template: Template, fields: Mapping[str, Any], event_type: str) -> dict[str, Any]:
    """What an SMS or call says, rendered while the record is at hand."""
    if rule.channel == "sms":
        return {"text": fit_sms(render_template(template.sms, fields))}
    return {"say": render_template(template.voice, fields), "gather": template.gather}


def deliver(stores: Stores, connection: TwilioConnection, envelope: Envelope, job: JobRow) -> None:
    Delivery(stores, connection, envelope, job).run()


def deliver_fresh(stores: Stores, connection: TwilioConnection, envelope: Envelope,
                  expired: Callable[[JobRow], bool]) -> bool:
    """A notification's first delivery, before its job exists: the consent check and the wait for a send
    slot come first, with nothing written, so a pacing wait holds no claim; then the job is created
    already claimed (one write, not a create and a claim) and sent. A stop after the create leaves it
    ``dispatching``, and the next delivery asks Twilio before any resend, as for any claimed job.

    False, with nothing written, when the job needs its row first (a Verify gate, a number that is not
    one, a recipient who withdrew consent): the usual path then records why. A job that exists after all (a
    redelivery after a stop, a duplicate) goes on from its row unless ``expired``, its slot waited for."""
    from shared.channels.twilio.client import twilio_channel
    from shared.phones import InvalidNumber, normalize_number

    payload = envelope.payload
    if payload.get("verify"):
        return False
    try:
        number = normalize_number(str(payload.get("to", "")), connection.default_region)
    except InvalidNumber:
        return False
    if withdrawal_for(stores, connection.name, number, payload) is not None:
        return False
    pace_sms(stores.pacing, connection, payload)
    claimed = open_claimed_job(stores, envelope, number)
    if claimed is not None:
        Delivery(stores, connection, envelope, claimed).send(twilio_channel(connection), number)
        return True
    job = open_job(stores, envelope)
    if not expired(job):
        delivery = Delivery(stores, connection, envelope, job)
        delivery.paced = True
        delivery.run()
    return True
