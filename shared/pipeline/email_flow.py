"""Email through SendGrid: one mail per job out, Event Webhook events back onto the job.

Out: the same job states as an SMS (``pending -> dispatching -> accepted -> queued ->
delivered``; ``failed`` on a refusal), the same ETag-conditional claim, so of two deliveries
of one job only one sends, and a job that reached SendGrid is never sent again.

One difference: Twilio can be asked whether a message exists, SendGrid cannot be asked
for a mail by our id. A send whose answer was lost (read timeout, dropped connection,
500/502/504) therefore ends ``unknown`` and is not sent again: never two mails for one
alert. If SendGrid did accept it, its events carry the job id in ``custom_args`` and the
first one adopts the job (its message id, its status). Otherwise an operator replays the
job, accepting that the recipient might get it twice.

Back: each event of a signed Event Webhook post is queued on its own, deduplicated by
``sg_event_id``, and moves the job's status forward only:
processed -> queued, delivered -> delivered, bounce -> undelivered, dropped -> failed,
open and click -> read. Deferrals, spam reports and unsubscribes are audited without a
status change. Email recipients do not take part in SMS opt-outs (STOP).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.channels.sendgrid.connection import SendGridConnection
from shared.config.model import AppConfig, Rule
from shared.inputs import loads_json
from shared.model import CALLBACKS, SENDGRID_EVENT, Envelope, moves_forward, now_iso
from shared.outcomes import RetryLater
from shared.pipeline.jobs import JobAttempt, change, reached_provider
from shared.pipeline.registry import handles
from shared.pipeline.webhooks import Refused, connection_of, within
from shared.storage.bus import MessageBus
from shared.storage.tables import JobRow, Stores, get_stores
from shared.templates import Template, email_message

log = logging.getLogger(__name__)

EVENT_SCOPE = "sendgrid-event"
MAX_EVENT_BYTES = 1024 * 1024
UNLINKED_RETRY_SECONDS = 2.0
_DETAIL_CHARS = 500
# SendGrid event -> job status.
EVENT_STATUS: Mapping[str, str] = {
    "processed": "queued", "delivered": "delivered", "bounce": "undelivered", "dropped": "failed",
    "open": "read", "click": "read",
}
# Events worth an audit line of their own that leave the status as it is.
NOTED_EVENTS: Mapping[str, str] = {
    "deferred": "deferred", "spamreport": "spam-report", "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed", "group_resubscribe": "resubscribed",
}


# --- out -----------------------------------------------------------------------------------------


class EmailDelivery(JobAttempt):
    """One attempt at one email job."""

    connection: SendGridConnection

    def run(self) -> None:
        from shared.channels.sendgrid.client import InvalidAddress, normalize_email

        if reached_provider(self.job):
            self.audit("duplicate", reason=f"job already {self.job.status}; not sent again")
            return
        raw = str(self.payload.get("to", ""))
        try:
            address = normalize_email(raw)
        except InvalidAddress as exc:
            self.finish("failed", "failed", reason=str(exc), channel="email", to=raw)
            return
        if self.job.status == "dispatching":
            self.wait_for_live_dispatch()  # RetryLater while another delivery may still be sending
            self.outcome_unknown(address, "an earlier delivery claimed this job and stopped without an answer")
            return
        self.claim_dispatch(address)
        self.send_mail(address)

    def send_mail(self, address: str) -> None:
        from shared.channels.sendgrid.client import MailOutcomeUnknown, MailRejected, sendgrid_channel

        channel = sendgrid_channel(self.connection)
        try:
            result = channel.send_mail(address, str(self.payload.get("subject", "")),
                                       str(self.payload.get("text", "")), self.job_id)
        except MailRejected as exc:
            self.finish("failed", "failed", reason=str(exc), error_code=exc.status, channel="email", to=address)
            return
        except MailOutcomeUnknown as exc:
            self.outcome_unknown(address, exc.reason)
            return
        except RetryLater:
            self.update(status="pending")  # SendGrid did not take it; the next attempt starts clean
            raise
        self.record_mail(address, result.message_id, result.status)

    def outcome_unknown(self, address: str, reason: str) -> None:
        # Not sent again: SendGrid cannot be asked. Its events (job id in custom_args) adopt
        # the job if it has the mail; otherwise a replay sends it, maybe a second time.
        why = f"SendGrid may have accepted the mail ({reason}); not sent again, replay the job to send it"
        self.update(self.step("unknown", status="unknown", channel="email", to=address, reason=why),
                    status="unknown", ambiguous=True, reason=why)
        log.warning("email job %s: outcome unknown (%s); not sent again", self.job_id, reason)

    def record_mail(self, address: str, message_id: str, status: str) -> None:
        # The job (with its step) first, the link second, as for SMS: events wait until the job is recorded.
        self.update(self.step("sent", provider_id=message_id, status=status, channel="email", to=address),
                    status=status, provider_id=message_id, sent_at=now_iso())
        if message_id:
            self.stores.providers.link(message_id, self.job_id, self.connection.name)


def render(rule: Rule, template: Template, fields: Mapping[str, Any], event_type: str) -> dict[str, Any]:
    """The mail's subject and text, rendered while the record is at hand."""
    subject, text = email_message(template, fields, event_type)
    return {"subject": subject, "text": text}


def deliver(stores: Stores, connection: SendGridConnection, envelope: Envelope, job: JobRow) -> None:
    EmailDelivery(stores, connection, envelope, job).run()


# --- the Event Webhook ----------------------------------------------------------------------------


def accept_events(config: AppConfig, connection_name: str, body: bytes, headers: Mapping[str, str],
                  bus: MessageBus) -> int:
    """Verify one Event Webhook post and queue each of its events; how many were queued. Refused otherwise."""
    from shared.channels.sendgrid import signature
    from shared.channels.signed import SignatureRefused

    connection = connection_of(config, connection_name, SendGridConnection, "SendGrid")
    within(body, MAX_EVENT_BYTES)
    if not connection.event_webhook_public_key:
        raise Refused(401, "no_verification_key",
                      "the connection has no event_webhook_public_key, so no event can be verified")
    try:
        signature.verify(connection.event_webhook_public_key, body, headers)
    except SignatureRefused as exc:
        reason = f"the event signature is missing, forged or too old: {exc.reason}"
        raise Refused(401, "bad_signature", reason) from None
    events = _parse_events(body)
    for event in events:
        envelope = Envelope(SENDGRID_EVENT, connection.name, _event_key(event), {"event": event})
        try:
            bus.send(CALLBACKS, envelope)
        except Exception as exc:  # noqa: BLE001 - any queue failure: SendGrid posts the batch again
            log.error("could not enqueue a SendGrid event: %s", exc.__class__.__name__)
            raise Refused(503, "queue_unavailable", "the events could not be queued; post them again") from None
    return len(events)


def _parse_events(body: bytes) -> list[dict[str, Any]]:
    try:
        events = loads_json(body.decode("utf-8"))
    except ValueError:  # not UTF-8, not JSON, nested too deep
        raise Refused(400, "malformed_json", "the body is not JSON") from None
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        raise Refused(400, "malformed_json", "the body is not a JSON array of event objects")
    return events


def _event_key(event: Mapping[str, Any]) -> str:
    sg_event_id = event.get("sg_event_id")
    if isinstance(sg_event_id, str) and sg_event_id:
        return sg_event_id
    return "h:" + hashlib.sha256(json.dumps(event, sort_keys=True).encode("utf-8")).hexdigest()


@handles(CALLBACKS, SENDGRID_EVENT)
def record_email_event(envelope: Envelope) -> None:
    from shared.channels.sendgrid.client import message_id_of

    event: dict[str, Any] = envelope.payload.get("event") or {}
    stores = get_stores()
    message_id = message_id_of(str(event.get("sg_message_id") or ""))
    job = _job_for(stores, event, message_id)
    if job is None:
        log.info("a SendGrid %s event for mail %s, which no job of ours sent", event.get("event"), message_id)
        return
    if message_id and message_id in (job.fields.get("previous_provider_ids") or []):
        return  # about a mail sent before the job was replayed
    provider_id = job.fields.get("provider_id")
    if provider_id and message_id and provider_id != message_id:
        log.info("a SendGrid event for mail %s names job %s, which sent %s", message_id, job.job_id, provider_id)
        return
    if not provider_id and job.status in ("pending", "dispatching"):
        # The send is under way and not recorded yet: once it is, the event applies.
        raise RetryLater(UNLINKED_RETRY_SECONDS, f"job {job.job_id} is not recorded as sent (yet)")
    if not stores.dedup.claim(EVENT_SCOPE, envelope.key, owner=envelope.correlation_id):
        return
    _apply(stores, envelope, job, event, message_id)


def _job_for(stores: Stores, event: Mapping[str, Any], message_id: str) -> JobRow | None:
    """The job by the id our send put in custom_args, else by SendGrid's message id."""
    from shared.channels.sendgrid.client import CUSTOM_ARG

    job_id = event.get(CUSTOM_ARG)
    if isinstance(job_id, str) and job_id:
        return stores.jobs.get(job_id)
    link = stores.providers.lookup(message_id) if message_id else None
    return stores.jobs.get(link.job_id) if link is not None else None


def _apply(stores: Stores, envelope: Envelope, job: JobRow, event: Mapping[str, Any], message_id: str) -> None:
    status = EVENT_STATUS.get(str(event.get("event") or ""))
    decided: dict[str, Any] = {}

    def decide(row: JobRow) -> dict[str, Any]:
        adopted_id = message_id if message_id and not row.fields.get("provider_id") else ""
        decided.clear()
        decided.update(_changes(row, event, status, adopted_id))
        return decided

    written = change(stores, job, decide)
    if written is None:
        _audit_event(stores, envelope, job, event, message_id, moved=False, adopted=False)
        return
    adopted = bool(decided.get("provider_id"))
    if adopted:
        stores.providers.link(message_id, written.job_id, envelope.connection)
    _audit_event(stores, envelope, written, event, message_id, moved="status" in decided, adopted=adopted)


def _changes(job: JobRow, event: Mapping[str, Any], status: str | None, adopted_id: str) -> dict[str, Any]:
    changes: dict[str, Any] = {"provider_id": adopted_id} if adopted_id else {}
    if status is not None and moves_forward(job.status, status):
        changes["status"] = status
        if status in ("failed", "undelivered"):
            changes["reason"] = _reason(event)
            changes["error_code"] = event.get("status") or job.fields.get("error_code")
    return changes


def _audit_event(stores: Stores, envelope: Envelope, job: JobRow, event: Mapping[str, Any], message_id: str,
                 *, moved: bool, adopted: bool) -> None:
    name = str(event.get("event") or "")
    step = "status" if moved else NOTED_EVENTS.get(name, "adopted" if adopted else None)
    if step is None:
        return  # a repeat (another open) or a late event: nothing new to record
    detail: dict[str, Any] = {"event": name, "provider_id": message_id, "channel": "email"}
    if moved:
        detail["status"] = job.status
    if adopted:
        detail["adopted"] = True
    if _reason(event):
        detail["reason"] = _reason(event)
    for key in ("attempt", "type"):
        if event.get(key) not in (None, ""):
            detail[key] = str(event[key])[:_DETAIL_CHARS]
    if event.get("status"):
        detail["error_code"] = str(event["status"])[:_DETAIL_CHARS]
    if isinstance(event.get("timestamp"), int):
        # A time SendGrid would not send is left out; the event is recorded without it.
        with contextlib.suppress(OverflowError, OSError, ValueError):
            detail["event_at"] = datetime.fromtimestamp(event["timestamp"], UTC).isoformat()
    stores.audit.append(job.fields.get("correlation_id") or envelope.correlation_id, step,
                        connection=envelope.connection, record=job.fields.get("record", ""), job_id=job.job_id,
                        **detail)


def _reason(event: Mapping[str, Any]) -> str:
    """SendGrid's words for a bounce, drop or deferral: ``reason``, else the server's ``response``."""
    return str(event.get("reason") or event.get("response") or "")[:_DETAIL_CHARS]
