"""notifications: one job, one send, never two.

A job row (id = the stable job id) carries the send through its states:
pending -> dispatching -> the provider's statuses; or suppressed (opted out), failed
(a permanent error), verifying (waiting for a one-time passcode). The move to
``dispatching`` is an ETag-conditional update, so of two deliveries of one job only
one sends. A job that already reached the provider is never sent again. After an
ambiguous failure (Twilio may have created the message or call before the connection
broke) or a delivery that went silent, the next attempt first asks Twilio whether the
message or call exists, and adopts it when it does.

Status callbacks carry the job id in their URL, and a send is linked to its job (provider
id, last contact) before the job row records it: a stop between the two steps never
leaves a callback without its job.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from shared.config import SendGridConnection, SlackConnection, TwilioConnection, get_config
from shared.logs import mask_phone
from shared.model import NOTIFICATION, NOTIFICATIONS, Envelope, now_iso
from shared.outcomes import PermanentFailure, RetryLater
from shared.pipeline.jobs import (
    AMBIGUOUS_RECHECK_SECONDS,
    DISPATCH_LEASE_SECONDS,
    mark_not_sent,
    open_job,
    reached_provider,
    record_send,
    wait_for_live_dispatch,
)
from shared.pipeline.registry import handles
from shared.settings import public_url
from shared.storage.tables import ConcurrencyError, JobRow, LastContact, Stores, get_stores
from shared.templates import voice_twiml

log = logging.getLogger(__name__)
# Stage helpers that other channels' flows and the tests take from here; the job lifecycle is in jobs.py.
__all__ = ["DISPATCH_LEASE_SECONDS", "Delivery", "deliver_notification", "open_job", "reached_provider",
           "wait_for_live_dispatch"]

# Twilio stamps date_created with its own clock: look back this much further than our dispatch start.
CLOCK_SKEW_SECONDS = 60.0


@handles(NOTIFICATIONS, NOTIFICATION, on_dead_letter=mark_not_sent)
def deliver_notification(envelope: Envelope) -> None:
    payload = envelope.payload
    config, stores = get_config(), get_stores()
    connection = config.connections.get(payload.get("via", ""))
    if isinstance(connection, SlackConnection):
        from shared.pipeline.slack_flow import deliver_card

        deliver_card(stores, connection, envelope, open_job(stores, envelope))
        return
    if isinstance(connection, SendGridConnection):
        from shared.pipeline.email_flow import deliver_email

        deliver_email(stores, connection, envelope, open_job(stores, envelope))
        return
    if not isinstance(connection, TwilioConnection):
        raise PermanentFailure(f"no Twilio, Slack or SendGrid connection named {payload.get('via')!r} "
                               "in the configuration")
    job = open_job(stores, envelope)
    Delivery(stores, connection, envelope, job).run()


class Delivery:
    """One attempt at one job."""

    def __init__(self, stores: Stores, connection: TwilioConnection, envelope: Envelope, job: JobRow) -> None:
        self.stores, self.connection, self.envelope, self.job = stores, connection, envelope, job
        self.payload: dict[str, Any] = envelope.payload
        self.job_id: str = self.payload["job_id"]

    # --- audit and state ---------------------------------------------------------------------

    def audit(self, step: str, **detail: Any) -> None:
        self.stores.audit.append(self.envelope.correlation_id, step, connection=self.connection.name,
                                 record=self.payload.get("record", ""), job_id=self.job_id, **detail)

    def update(self, **changes: Any) -> None:
        self.job = self.stores.jobs.update(self.job, {**changes, "updated_at": now_iso()})

    def finish(self, status: str, step: str, **detail: Any) -> None:
        self.update(status=status, **{k: v for k, v in detail.items() if k in ("reason", "error_code")})
        self.audit(step, status=status, **detail)

    # --- the attempt -------------------------------------------------------------------------

    def run(self) -> None:
        from shared.channels.twilio import twilio_channel
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
        if self.stores.opt_outs.is_opted_out(self.connection.name, number):
            self.finish("suppressed", "suppressed", reason="the recipient replied STOP", to=mask_phone(number))
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
        self.claim_dispatch(number)
        self.send(channel, number)

    def wait_for_live_dispatch(self) -> None:
        """Another delivery may be sending this job right now: leave it be unless it is known
        to have ended ambiguously or has been silent longer than the lease."""
        wait_for_live_dispatch(self.job)

    def claim_dispatch(self, number: str) -> None:
        """Move the job to dispatching; RetryLater when another delivery changed it first."""
        try:
            self.update(status="dispatching", to=number, dispatch_id=uuid.uuid4().hex, dispatch_at=now_iso(),
                        ambiguous=False, dispatch_started=self.job.fields.get("dispatch_started") or now_iso())
        except ConcurrencyError:
            raise RetryLater(AMBIGUOUS_RECHECK_SECONDS, "another delivery of this job is under way") from None

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
        link = self.stores.providers.lookup(provider_id)
        return link is not None and link.job_id != self.job_id

    def send(self, channel: Any, number: str) -> None:
        from shared.channels.twilio import AmbiguousSendError, PermanentSendError

        # The job id in the URL lets a callback find its job even before the provider id is linked.
        callback = public_url(f"api/twilio/status/{self.connection.name}?job={self.job_id}")
        try:
            if self.payload.get("channel") == "voice":
                gather = public_url(f"api/twilio/gather/{self.connection.name}?job={self.job_id}") \
                    if self.payload.get("gather") else None
                result = channel.place_call(number, voice_twiml(self.payload.get("say", ""), gather), callback)
            else:
                result = channel.send_sms(number, self.payload.get("text", ""), callback)
        except PermanentSendError as exc:
            if exc.opted_out:
                self.stores.opt_outs.record(self.connection.name, number, True, "21610")
                self.finish("suppressed", "suppressed", reason=str(exc), error_code=exc.code, to=mask_phone(number))
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
        # The link and the last contact first, the job second: a stop in between leaves a job
        # still dispatching that callbacks (and the next attempt's lookup) can find and move on.
        self.stores.providers.link(sid, self.job_id, self.connection.name)
        self.stores.contacts.remember(self.connection.name, number, LastContact(
            self.job_id, self.payload.get("record", ""), self.envelope.correlation_id))
        self.mark_sent(sid, status)
        detail = {"provider_id": sid, "status": status, "channel": self.payload.get("channel"),
                  "to": mask_phone(number)}
        self.audit("sent", **({**detail, "adopted": True} if adopted else detail))

    def mark_sent(self, sid: str, status: str) -> None:
        """Put the provider id on the job; a status callback may have moved it meanwhile, and the
        furthest status is kept."""
        self.job = record_send(self.stores, self.job, status, provider_id=sid, sent_at=now_iso())
